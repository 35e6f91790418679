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
    /// The recompute, step by step: health periods into per-node sums (a temporary table of the session), then nodes,
    /// clusters, offers. Each step commits on its own, so a heartbeat or an offer change that needs one of the rows a step
    /// updates waits for that step only, not for the whole recompute.
    /// </summary>
    private static readonly (string Name, string Sql)[] ReliabilitySteps =
    [
        ("uptime", """
        DROP TABLE IF EXISTS pg_temp.node_uptime;
        CREATE TEMP TABLE node_uptime (node_id uuid NOT NULL, healthy_s float8 NOT NULL, observed_s float8 NOT NULL);
        INSERT INTO node_uptime (node_id, healthy_s, observed_s)
        WITH periods AS (
            SELECT p.node_id, p.healthy, greatest(p.started_at, @from) AS s, least(coalesce(p.ended_at, @now), @now) AS e
            FROM node_health_periods p
            WHERE p.started_at < @now AND (p.ended_at IS NULL OR p.ended_at > @from)
        ), planned AS (
            SELECT node_id, range_agg(during * tstzrange(@from, @now)) AS m FROM node_maintenance
            WHERE cancelled_at IS NULL AND during && tstzrange(@from, @now) GROUP BY node_id
        ), pieces AS (
            -- Nearly every node has no maintenance in the window: a period counts its clipped length, plain arithmetic
            -- (date_part is float8; extract would be numeric, several times slower to sum).
            SELECT x.node_id, x.healthy, date_part('epoch', x.e - x.s) AS seconds
            FROM periods x WHERE NOT EXISTS (SELECT 1 FROM planned m WHERE m.node_id = x.node_id)
            UNION ALL
            -- The few that have: what is left of the period once the planned time is taken out, piece by piece.
            SELECT x.node_id, x.healthy, date_part('epoch', upper(r) - lower(r))
            FROM periods x JOIN planned m USING (node_id)
            CROSS JOIN LATERAL unnest(tstzmultirange(tstzrange(x.s, x.e)) - m.m) AS r
        )
        SELECT node_id, coalesce(sum(seconds) FILTER (WHERE healthy), 0), sum(seconds)
        FROM pieces GROUP BY node_id;
        ANALYZE node_uptime;
        """),
        ("nodes", """
        UPDATE nodes n SET reliability_ppm = x.ppm FROM (
            SELECT n2.id, CASE WHEN u.observed_s > 0 THEN round(1000000 * u.healthy_s / u.observed_s)::int END AS ppm
            FROM nodes n2 LEFT JOIN node_uptime u ON u.node_id = n2.id) x
        WHERE x.id = n.id AND n.reliability_ppm IS DISTINCT FROM x.ppm;
        """),
        ("clusters", """
        UPDATE clusters c SET reliability_ppm = x.ppm FROM (
            SELECT n.cluster_id AS id,
                   CASE WHEN sum(u.observed_s) > 0 THEN round(1000000 * sum(u.healthy_s) / sum(u.observed_s))::int END AS ppm
            FROM nodes n LEFT JOIN node_uptime u ON u.node_id = n.id GROUP BY n.cluster_id) x
        WHERE x.id = c.id AND c.reliability_ppm IS DISTINCT FROM x.ppm;
        """),
        ("offers", """
        UPDATE offers o SET reliability_ppm = x.ppm FROM (
            SELECT o2.id, CASE WHEN sum(u.observed_s) > 0 THEN round(1000000 * sum(u.healthy_s) / sum(u.observed_s))::int END AS ppm
            FROM offers o2 CROSS JOIN LATERAL unnest(o2.node_ids) AS nid LEFT JOIN node_uptime u ON u.node_id = nid
            WHERE o2.status = 'active' GROUP BY o2.id) x
        WHERE x.id = o.id AND o.reliability_ppm IS DISTINCT FROM x.ppm;
        """),
    ];

    /// <summary>
    /// Reliability = healthy time / observed time over the rolling 30 days, per node, per cluster (sum over its nodes) and per
    /// active offer (sum over its nodes). Time before a node's first heartbeat is not observed; maintenance windows are
    /// neither up nor down time (planned, and never billed). Set-based: one pass over the health periods into a temporary
    /// table, then one UPDATE each for nodes, clusters and offers that writes only the scores that moved
    /// (timed at 100k nodes in docs/listings.md).
    /// </summary>
    /// <param name="onStep">Told each step's rows and time (the benchmark's breakdown); null in the service.</param>
    public async Task RefreshReliabilityAsync(CancellationToken ct, Action<string, int, TimeSpan>? onStep = null)
    {
        var now = time.GetUtcNow();
        var args = new { now, from = now - ReliabilityWindow };
        await using var connection = await db.DataSource.OpenConnectionAsync(ct);
        foreach (var (name, sql) in ReliabilitySteps)
        {
            var started = time.GetTimestamp();
            var rows = await connection.ExecuteAsync(new CommandDefinition(sql, args, cancellationToken: ct));
            onStep?.Invoke(name, rows, time.GetElapsedTime(started));
        }
        // After a failed step the pool's reset (DISCARD ALL) or the next run's first statement drops it instead.
        await connection.ExecuteAsync(new CommandDefinition("DROP TABLE pg_temp.node_uptime", cancellationToken: ct));
    }
}
