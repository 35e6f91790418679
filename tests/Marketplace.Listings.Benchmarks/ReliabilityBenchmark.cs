using System.Diagnostics;
using Marketplace.Listings.Health;
using Microsoft.Extensions.DependencyInjection;
using Npgsql;
using NpgsqlTypes;

namespace Marketplace.Listings.Benchmarks;

/// <summary>
/// The reliability recompute (NodeHealthMonitor.RefreshReliabilityAsync) over the loaded fleet: every node gets 30+ days
/// of health periods (mostly healthy, a few outages of minutes to hours, the open period matching its health), then the
/// recompute runs several times against the real service's database, as the monitor runs it every
/// Listings:ReliabilityRefreshSeconds.
/// </summary>
internal static class ReliabilityBenchmark
{
    public static async Task RunAsync(IServiceProvider services, NpgsqlConnection admin, DateTimeOffset now, int runs)
    {
        var load = Stopwatch.StartNew();
        var periods = await LoadHealthPeriodsAsync(admin, now, seed: 11);
        Console.WriteLine($"loaded {periods} health periods in {load.Elapsed.TotalSeconds:F1} s");

        var monitor = services.GetRequiredService<NodeHealthMonitor>();
        string[] steps = ["uptime", "nodes", "clusters", "offers"];
        Console.WriteLine($"\n{"reliability recompute, ms",-36} {"total",8}" + string.Concat(steps.Select(x => $" {x,8}")));
        var totals = new List<double>();
        for (var i = 0; i < runs; i++)
        {
            var split = new Dictionary<string, (int Rows, double Ms)>();
            var watch = Stopwatch.StartNew();
            await monitor.RefreshReliabilityAsync(CancellationToken.None, (step, rows, took) => split[step] = (rows, took.TotalMilliseconds));
            totals.Add(watch.Elapsed.TotalMilliseconds);
            Console.WriteLine($"{(i == 0 ? "run 1 (every score written)" : $"run {i + 1} (scores barely move)"),-36} {totals[^1],8:F0}"
                + string.Concat(steps.Select(x => $" {split[x].Ms,8:F0}")) + "   rows written: " + string.Join(", ", steps.Select(x => split[x].Rows)));
        }
        Console.WriteLine($"{"median of the runs",-36} {totals.Order().ElementAt(totals.Count / 2),8:F0}");

        await using var check = new NpgsqlCommand("""
            SELECT (SELECT count(*) FROM listings.nodes WHERE reliability_ppm IS NOT NULL),
                   (SELECT count(*) FROM listings.clusters WHERE reliability_ppm IS NOT NULL),
                   (SELECT count(*) FROM listings.offers WHERE status = 'active' AND reliability_ppm IS NOT NULL),
                   (SELECT round(avg(reliability_ppm) / 10000.0, 3) FROM listings.nodes)
            """, admin);
        await using var reader = await check.ExecuteReaderAsync();
        await reader.ReadAsync();
        Console.WriteLine($"scored: {reader.GetInt64(0)} nodes, {reader.GetInt64(1)} clusters, {reader.GetInt64(2)} active offers; mean node reliability {reader.GetDecimal(3)} %");
    }

    /// <summary>Health periods for every loaded node, by binary COPY; the number of rows.</summary>
    private static async Task<int> LoadHealthPeriodsAsync(NpgsqlConnection c, DateTimeOffset now, int seed)
    {
        var nodes = new List<(Guid Id, bool Healthy)>();
        await using (var cmd = new NpgsqlCommand("SELECT id, health = 'healthy' FROM listings.nodes ORDER BY id", c))
        await using (var reader = await cmd.ExecuteReaderAsync())
            while (await reader.ReadAsync()) nodes.Add((reader.GetGuid(0), reader.GetBoolean(1)));

        var random = new Random(seed);
        var rows = 0;
        await using (var w = await c.BeginBinaryImportAsync(
            "COPY listings.node_health_periods (node_id, healthy, started_at, ended_at) FROM STDIN (FORMAT BINARY)"))
        {
            foreach (var (id, healthyNow) in nodes)
            {
                // First heartbeat 31-36 days ago (so the 30-day window starts inside observed time for most nodes).
                var t = now.AddDays(-36).AddMinutes(random.Next(5 * 24 * 60)).UtcDateTime;
                var outages = random.Next(4);
                var ends = Enumerable.Range(0, outages).Select(_ => now.AddDays(-random.Next(1, 30)).AddMinutes(-random.Next(1440)).UtcDateTime)
                    .Where(x => x > t).Order().ToList();
                foreach (var outageStart in ends)
                {
                    if (outageStart <= t) continue;
                    await Row(w, id, true, t, outageStart);
                    var back = outageStart.AddMinutes(1 + random.Next(240));
                    await Row(w, id, false, outageStart, back);
                    rows += 2;
                    t = back;
                }
                // The open period: healthy on; a node unhealthy now went down a little while ago.
                var since = now.AddMinutes(-random.Next(1, 600)).UtcDateTime;
                if (!healthyNow && since > t)
                {
                    await Row(w, id, true, t, since);
                    rows++;
                    t = since;
                }
                await Row(w, id, healthyNow, t, null);
                rows++;
            }
            await w.CompleteAsync();
        }
        await using (var analyze = new NpgsqlCommand("ANALYZE listings.node_health_periods", c)) await analyze.ExecuteNonQueryAsync();
        return rows;
    }

    private static async Task Row(NpgsqlBinaryImporter w, Guid node, bool healthy, DateTime from, DateTime? to)
    {
        await w.StartRowAsync();
        await w.WriteAsync(node);
        await w.WriteAsync(healthy);
        await w.WriteAsync(from, NpgsqlDbType.TimestampTz);
        if (to is { } e) await w.WriteAsync(e, NpgsqlDbType.TimestampTz); else await w.WriteNullAsync();
    }
}
