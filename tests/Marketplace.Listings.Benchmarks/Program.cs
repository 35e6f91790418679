using System.Diagnostics;
using System.Globalization;
using System.Net;
using System.Text.Json;
using Marketplace.Testing;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;

namespace Marketplace.Listings.Benchmarks;

// Search under load: a fresh database with a large synthetic market, the Listings service in-process (its real endpoint,
// SQL and JSON; no network hop), and several hundred timed searches per scenario. Usage:
//   dotnet run -c Release --project tests/Marketplace.Listings.Benchmarks -- [clusters=10000] [nodes-per-cluster=10] [queries=400]
// With --reliability it times the reliability recompute over the same fleet (with 30 days of health periods) instead of
// the searches: [queries] is then the number of recompute runs (default 5).
internal static class SearchBenchmark
{
    public static async Task<int> Main(string[] args)
    {
        // WebApplicationFactory finds the service's content root through the manifest next to this program.
        Directory.SetCurrentDirectory(AppContext.BaseDirectory);
        var numbers = args.Where(a => !a.StartsWith("--", StringComparison.Ordinal)).ToArray();
        var reliability = args.Contains("--reliability");
        var clusters = numbers.Length > 0 ? int.Parse(numbers[0], CultureInfo.InvariantCulture) : 10_000;
        var nodesPerCluster = numbers.Length > 1 ? int.Parse(numbers[1], CultureInfo.InvariantCulture) : 10;
        var queries = numbers.Length > 2 ? int.Parse(numbers[2], CultureInfo.InvariantCulture) : reliability ? 5 : 400;

        await using var db = await TestDatabase.CreateAsync();
        await using var vhost = await TestVirtualHost.CreateAsync();
        // Without the health monitor: the loaded heartbeats and reliability scores stay as loaded while searches run.
        await using var factory = new ServiceFactory<Program>("listings", db, vhost, services =>
            services.Remove(services.Single(d => d.ServiceType == typeof(IHostedService) && d.ImplementationType == typeof(Health.NodeHealthMonitorLoop))));
        using var client = factory.ClientFor(Guid.NewGuid(), "renter"); // starts the service: migrations
        var now = DateTimeOffset.UtcNow;

        var load = Stopwatch.StartNew();
        FleetLoader.Loaded loaded;
        await using (var admin = db.OpenAdmin()) loaded = await FleetLoader.LoadAsync(admin, clusters, nodesPerCluster, now, seed: 42);
        Console.WriteLine($"loaded {loaded.Clusters} clusters, {loaded.Nodes} nodes, {loaded.Offers} offers ({loaded.ActiveOffers} active) in {load.Elapsed.TotalSeconds:F1} s");
        if (reliability)
        {
            await using var admin = db.OpenAdmin();
            await ReliabilityBenchmark.RunAsync(factory.Services, admin, now, queries);
            return 0;
        }

        var random = new Random(7);
        string Model() => FleetLoader.Models[random.Next(FleetLoader.Models.Length)];
        (string Region, string Jurisdiction) Place() => FleetLoader.Places[random.Next(FleetLoader.Places.Length)];
        string At(double hours) => Uri.EscapeDataString(now.AddHours(hours).ToString("yyyy-MM-dd'T'HH:00:00'Z'", CultureInfo.InvariantCulture));

        var scenarios = new (string Name, Func<string> Query)[]
        {
            ("newest, no filter", () => "limit=20"),
            ("model, cheapest first", () => $"accelerator_model={Model()}&currency=CNY&sort=price&limit=20"),
            ("model+region+jurisdiction+min_count+max_price", () =>
            {
                var p = Place();
                return $"accelerator_model={Model()}&region={p.Region}&jurisdiction={p.Jurisdiction}&min_count=16&currency=CNY&max_price=2500&sort=price&limit=20";
            }),
            ("gang: 8 per node, 2+ nodes, infiniband 400G", () => $"accelerator_model={Model()}&per_node=8&min_nodes=2&fabric=infiniband&min_fabric_gbps=400&limit=20"),
            ("CN + mlps-3 + data-residency, reliability >= 0.99, best first", () =>
                "jurisdiction=CN&compliance=mlps-3,data-residency&min_reliability=0.99&sort=reliability&limit=20"),
            ("model available tomorrow 10:00-18:00, cheapest", () =>
                $"accelerator_model={Model()}&available_from={At(24 + 10)}&available_to={At(24 + 18)}&currency=CNY&sort=price&limit=20"),
            ("nvlink + verified + interruptible + premium SLA", () => "interconnect=nvlink&verified=true&interruptible=true&sla_level=premium&limit=20"),
        };

        // Warm up the JIT, the connection pool and PostgreSQL's caches.
        for (var i = 0; i < 100; i++) await SearchAsync(client, scenarios[i % scenarios.Length].Query());

        Console.WriteLine($"\n{"scenario",-62} {"p50 ms",7} {"p95 ms",7} {"p99 ms",7} {"max ms",7} {"hits",5}");
        var all = new List<double>();
        foreach (var (name, query) in scenarios)
        {
            var times = new List<double>();
            var hits = 0;
            for (var i = 0; i < queries; i++)
            {
                var q = query();
                var watch = Stopwatch.StartNew();
                hits += await SearchAsync(client, q);
                times.Add(watch.Elapsed.TotalMilliseconds);
            }
            all.AddRange(times);
            Console.WriteLine($"{name,-62} {P(times, 50),7:F1} {P(times, 95),7:F1} {P(times, 99),7:F1} {times.Max(),7:F1} {hits / queries,5}");
        }

        // Paging: the fifth page of a cheapest-first listing, following next_cursor.
        var paging = new List<double>();
        for (var i = 0; i < queries / 4; i++)
        {
            var q = $"accelerator_model={Model()}&currency=CNY&sort=price&limit=20";
            string? cursor = null;
            for (var page = 0; page < 5; page++)
            {
                var watch = Stopwatch.StartNew();
                var body = await GetAsync(client, q + (cursor is null ? "" : "&cursor=" + cursor));
                paging.Add(watch.Elapsed.TotalMilliseconds);
                cursor = body.RootElement.GetProperty("next_cursor").GetString();
                if (cursor is null) break;
            }
        }
        all.AddRange(paging);
        Console.WriteLine($"{"pages 1-5 of a cheapest-first listing (cursor)",-62} {P(paging, 50),7:F1} {P(paging, 95),7:F1} {P(paging, 99),7:F1} {paging.Max(),7:F1}");
        Console.WriteLine($"{"all searches",-62} {P(all, 50),7:F1} {P(all, 95),7:F1} {P(all, 99),7:F1} {all.Max(),7:F1}");

        if (args.Contains("--explain"))
            await using (var admin = db.OpenAdmin())
                foreach (var (name, where, order) in Explained)
                {
                    await using var cmd = new Npgsql.NpgsqlCommand($"""
                        SET search_path = listings;
                        EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF, SUMMARY ON)
                        SELECT * FROM offers WHERE status = 'active' AND window_end > now() AND {where} ORDER BY {order} LIMIT 21
                        """, admin);
                    Console.WriteLine($"\n-- {name}");
                    await using var reader = await cmd.ExecuteReaderAsync();
                    while (await reader.ReadAsync()) Console.WriteLine(reader.GetString(0));
                }
        return 0;
    }

    /// <summary>The SQL the search endpoint builds for some of the scenarios, with literal values.</summary>
    private static readonly (string Name, string Where, string Order)[] Explained =
    [
        ("model, cheapest first", "accelerator_model = 'h100-sxm' AND ask_currency = 'CNY'", "ask_amount, id"),
        ("model+region+jurisdiction+min_count+max_price",
            "accelerator_model = 'h100-sxm' AND region = 'cn-east' AND jurisdiction = 'CN' AND accelerator_count >= 16 AND ask_currency = 'CNY' AND ask_amount <= 2500",
            "ask_amount, id"),
        ("gang", "accelerator_model = 'h100-sxm' AND per_node >= 8 AND node_count >= 2 AND fabric = 'infiniband' AND fabric_gbps >= 400",
            "created_at DESC, id DESC"),
        ("compliance + reliability", """
            jurisdiction = 'CN' AND reliability_ppm >= 990000
            AND cluster_id IN (SELECT cluster_id FROM cluster_attestations WHERE kind = 'mlps' AND expires_at > now() AND (level IS NULL OR level >= 3))
            AND cluster_id IN (SELECT cluster_id FROM cluster_attestations WHERE kind = 'data-residency' AND expires_at > now() AND (level IS NULL OR level >= 0))
            """, "coalesce(reliability_ppm, -1) DESC, id DESC"),
        ("available tomorrow 10-18", """
            accelerator_model = 'h100-sxm' AND ask_currency = 'CNY'
            AND windows @> tstzrange(date_trunc('day', now()) + interval '34 hours', date_trunc('day', now()) + interval '42 hours')
            AND NOT EXISTS (SELECT 1 FROM node_maintenance m WHERE m.node_id = ANY(node_ids) AND m.cancelled_at IS NULL
                            AND m.during && tstzrange(date_trunc('day', now()) + interval '34 hours', date_trunc('day', now()) + interval '42 hours'))
            """, "ask_amount, id"),
    ];

    private static double P(List<double> xs, int p)
    {
        var sorted = xs.Order().ToList();
        return sorted[Math.Min(sorted.Count - 1, (int)Math.Ceiling(p / 100.0 * sorted.Count) - 1)];
    }

    private static async Task<int> SearchAsync(HttpClient client, string query) =>
        (await GetAsync(client, query)).RootElement.GetProperty("data").GetArrayLength();

    private static async Task<JsonDocument> GetAsync(HttpClient client, string query)
    {
        using var response = await client.GetAsync("/v1/offers?" + query);
        var text = await response.Content.ReadAsStringAsync();
        if (response.StatusCode != HttpStatusCode.OK) throw new InvalidOperationException($"{query} → {(int)response.StatusCode}: {text}");
        return JsonDocument.Parse(text);
    }
}
