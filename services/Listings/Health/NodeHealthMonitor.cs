using System.Globalization;
using Dapper;
using Marketplace.Listings.Clusters;
using Marketplace.ServiceDefaults.Data;
using Microsoft.Extensions.Options;

namespace Marketplace.Listings.Health;

/// <summary>Runs the <see cref="NodeHealthMonitor"/> every Listings:HealthSweepSeconds.</summary>
public sealed class NodeHealthMonitorLoop(NodeHealthMonitor monitor, TimeProvider time, IOptions<ListingsOptions> options,
    ILogger<NodeHealthMonitorLoop> logger) : BackgroundService
{
    protected override async Task ExecuteAsync(CancellationToken stoppingToken)
    {
        using var timer = new PeriodicTimer(TimeSpan.FromSeconds(options.Value.HealthSweepSeconds), time);
        try
        {
            while (await timer.WaitForNextTickAsync(stoppingToken))
            {
                try
                {
                    await monitor.RunOnceAsync(stoppingToken);
                }
                catch (Exception ex) when (!stoppingToken.IsCancellationRequested)
                {
                    logger.LogWarning(ex, "Node health sweep failed; retrying on the next tick");
                }
            }
        }
        catch (OperationCanceledException) when (stoppingToken.IsCancellationRequested)
        {
        }
    }
}

/// <summary>
/// Marks healthy nodes whose agent went silent as unhealthy (telling Scheduling), and recomputes reliability scores.
/// Safe on any number of instances: nodes are claimed with FOR UPDATE SKIP LOCKED and re-checked under the lock.
/// </summary>
public sealed class NodeHealthMonitor(Db db, TimeProvider time, IOptions<ListingsOptions> options)
{
    public static readonly TimeSpan ReliabilityWindow = TimeSpan.FromDays(30);
    private const int Batch = 200;
    private DateTimeOffset _lastReliability = DateTimeOffset.MinValue;

    /// <summary>One sweep, plus a reliability refresh when one is due. Tests call this after moving the clock.</summary>
    public async Task RunOnceAsync(CancellationToken ct)
    {
        await MarkSilentNodesUnhealthyAsync(ct);
        var now = time.GetUtcNow();
        if (now - _lastReliability >= TimeSpan.FromSeconds(options.Value.ReliabilityRefreshSeconds))
        {
            await RefreshReliabilityAsync(ct);
            _lastReliability = now;
        }
    }

    /// <returns>How many nodes were marked unhealthy.</returns>
    public async Task<int> MarkSilentNodesUnhealthyAsync(CancellationToken ct)
    {
        var timeout = options.Value.HeartbeatTimeoutSeconds;
        var total = 0;
        while (true)
        {
            var now = time.GetUtcNow().ToMicroseconds();
            await using var tx = await db.BeginAsync(ct);
            var silent = (await tx.Connection.QueryAsync<NodeState>(new CommandDefinition(HealthTransitions.SelectForUpdate + """
                 WHERE n.health = 'healthy' AND n.last_heartbeat_at < @cutoff
                ORDER BY n.last_heartbeat_at LIMIT @Batch FOR UPDATE OF n SKIP LOCKED
                """, new { cutoff = now.AddSeconds(-timeout), Batch }, tx.Transaction, cancellationToken: ct))).AsList();
            foreach (var node in silent)
            {
                var since = node.LastHeartbeatAt!.Value.UtcDateTime.ToString("yyyy-MM-dd'T'HH:mm:ss'Z'", CultureInfo.InvariantCulture);
                // Only the health changes: whatever made the node unverified stays, with its reason.
                await HealthTransitions.ApplyAsync(tx, node, NodeHealth.Unhealthy, $"no heartbeat since {since} (the timeout is {timeout} s)",
                    node.Verified, node.VerificationReason, now, ct, outageSince: node.LastHeartbeatAt);
            }
            await tx.CommitAsync(ct);
            total += silent.Count;
            if (silent.Count < Batch) return total;
        }
    }

    /// <summary>
    /// Reliability = healthy time / observed time over the rolling 30 days, per node, per cluster (sum over its nodes) and per
    /// active offer (sum over its nodes). Time before a node's first heartbeat is not observed; maintenance windows are
    /// neither up nor down time (planned, and never billed).
    /// </summary>
    public async Task RefreshReliabilityAsync(CancellationToken ct)
    {
        var now = time.GetUtcNow();
        await using var tx = await db.BeginAsync(ct);
        await tx.Connection.ExecuteAsync(new CommandDefinition("""
            CREATE TEMP TABLE node_uptime (node_id uuid PRIMARY KEY, healthy_s numeric NOT NULL, observed_s numeric NOT NULL) ON COMMIT DROP;
            INSERT INTO node_uptime (node_id, healthy_s, observed_s)
            WITH spans AS (
                SELECT p.node_id, p.healthy, tstzmultirange(tstzrange(p.started_at, coalesce(p.ended_at, @now)) * tstzrange(@from, @now)) AS span
                FROM node_health_periods p
                WHERE p.started_at < @now AND (p.ended_at IS NULL OR p.ended_at > @from)
            ), planned AS (
                SELECT node_id, range_agg(during * tstzrange(@from, @now)) AS m FROM node_maintenance
                WHERE cancelled_at IS NULL AND during && tstzrange(@from, @now) GROUP BY node_id
            )
            SELECT s.node_id,
                   coalesce(sum(extract(epoch FROM upper(r) - lower(r))) FILTER (WHERE s.healthy), 0) AS healthy_s,
                   coalesce(sum(extract(epoch FROM upper(r) - lower(r))), 0) AS observed_s
            FROM spans s LEFT JOIN planned p USING (node_id)
            CROSS JOIN LATERAL unnest(s.span - coalesce(p.m, '{}'::tstzmultirange)) AS r
            GROUP BY s.node_id;

            UPDATE nodes n SET reliability_ppm = x.ppm FROM (
                SELECT n2.id, CASE WHEN u.observed_s > 0 THEN round(1000000 * u.healthy_s / u.observed_s)::int END AS ppm
                FROM nodes n2 LEFT JOIN node_uptime u ON u.node_id = n2.id) x
            WHERE x.id = n.id AND n.reliability_ppm IS DISTINCT FROM x.ppm;

            UPDATE clusters c SET reliability_ppm = x.ppm FROM (
                SELECT n.cluster_id AS id,
                       CASE WHEN sum(u.observed_s) > 0 THEN round(1000000 * sum(u.healthy_s) / sum(u.observed_s))::int END AS ppm
                FROM nodes n LEFT JOIN node_uptime u ON u.node_id = n.id GROUP BY n.cluster_id) x
            WHERE x.id = c.id AND c.reliability_ppm IS DISTINCT FROM x.ppm;

            UPDATE offers o SET reliability_ppm = x.ppm FROM (
                SELECT o2.id, CASE WHEN sum(u.observed_s) > 0 THEN round(1000000 * sum(u.healthy_s) / sum(u.observed_s))::int END AS ppm
                FROM offers o2 CROSS JOIN LATERAL unnest(o2.node_ids) AS nid LEFT JOIN node_uptime u ON u.node_id = nid
                WHERE o2.status = 'active' GROUP BY o2.id) x
            WHERE x.id = o.id AND o.reliability_ppm IS DISTINCT FROM x.ppm;
            """, new { now, from = now - ReliabilityWindow }, tx.Transaction, cancellationToken: ct));
        await tx.CommitAsync(ct);
    }
}
