using System.Collections.Concurrent;
using System.Diagnostics;
using System.Globalization;
using System.Net.Http.Headers;
using System.Net.Http.Json;
using System.Text.Json;
using System.Text.Json.Nodes;
using Dapper;
using Marketplace.Demo;
using Npgsql;

namespace Marketplace.Load;

internal sealed record LoadOptions(Uri Gateway, string AdminKey, string Postgres, int Providers, int Renters, double Rate, int Duration,
    int LeaseSeconds, int PgBenchSeconds, string RunDir, string? JsonPath);

internal sealed record Percentiles(int Count, double P50, double P95, double P99, double Max);

internal sealed record LoadReport(
    LoadOptions Options, int Nodes, int Gpus, int Placed, int Filled, int Cancelled, int Unfinished, double PlacedPerSecond, double BookingsPerSecond,
    Dictionary<string, Percentiles> Stages, Percentiles AcceptLatency, Dictionary<string, int> Errors, double? PgBenchTps, string? PgBenchCommand,
    List<Memory.Sample> IdleMemory, List<Memory.Sample> LoadMemory);

/// <summary>
/// One load run against a running marketplace: providers list enough capacity for every order, renters fund their wallets
/// through the Stripe stand-in, then orders arrive at the target rate; every order is followed to its end, and the times
/// each service wrote down (order created → matched → lease scheduled → hold placed) give the per-stage latencies.
/// </summary>
internal sealed class LoadRun(LoadOptions o, TextWriter log)
{
    private const string Model = "h100-sxm";
    private const string Currency = "CNY";
    private const int GpusPerNode = 16;

    private sealed record Placed(Guid Id, double AcceptMs, bool Ioc);

    public async Task<LoadReport> RunAsync(CancellationToken ct)
    {
        var pgPort = new NpgsqlConnectionStringBuilder(o.Postgres).Port;
        log.WriteLine($"Load: {o.Providers} providers, {o.Renters} renters, {o.Rate} orders/s for {o.Duration} s (leases of {o.LeaseSeconds} s) against {o.Gateway}");

        double? tps = null; string? pgbenchCommand = null;
        if (o.PgBenchSeconds > 0)
        {
            log.WriteLine("pgbench (simple-update, same PostgreSQL, before the load so each has the machine alone):");
            (tps, pgbenchCommand) = await PgBench.RunAsync(o.Postgres, o.PgBenchSeconds, log, ct);
            log.WriteLine($"  {tps:0} tps");
        }

        using var admin = new Api(o.Gateway, o.AdminKey);
        var run = DateTime.UtcNow.ToString("HHmmss", CultureInfo.InvariantCulture);
        // Every order holds one GPU for a whole lease; enough GPUs for every order placed within one lease length, +25 %.
        var concurrent = (int)Math.Ceiling(o.Rate * Math.Min(o.Duration, o.LeaseSeconds) * 1.25);
        var nodesPerProvider = Math.Max(1, (int)Math.Ceiling(concurrent / (double)GpusPerNode / o.Providers));
        log.WriteLine($"setup: {o.Providers} × {nodesPerProvider} nodes of {GpusPerNode} × {Model}");
        var setup = Stopwatch.StartNew();
        await Task.WhenAll(Enumerable.Range(0, o.Providers).Select(i => ProviderAsync(admin, run, i, nodesPerProvider, ct)));
        var renters = await Task.WhenAll(Enumerable.Range(0, o.Renters).Select(i => RenterAsync(admin, run, i, ct)));
        log.WriteLine($"setup done in {setup.Elapsed.TotalSeconds:0.0} s");
        await Task.Delay(TimeSpan.FromSeconds(3), ct); // offers reach Bidding; processes settle before the idle sample

        var idle = Memory.Take(o.RunDir, pgPort);
        List<Memory.Sample> underLoad = [];
        var placed = new ConcurrentBag<Placed>();
        var errors = new ConcurrentDictionary<string, int>();
        var inflight = new List<Task>();
        var clock = Stopwatch.StartNew();
        var total = (int)(o.Rate * o.Duration);
        for (var n = 0; n < total; n++)
        {
            var due = TimeSpan.FromSeconds(n / o.Rate);
            if (due > clock.Elapsed) await Task.Delay(due - clock.Elapsed, ct);
            if (n == total / 2) underLoad = Memory.Take(o.RunDir, pgPort);
            var renter = renters[n % renters.Length];
            var ioc = n % 10 == 9; // the mix: nine in ten good-till-cancelled, one immediate-or-cancel
            inflight.Add(PlaceAsync(renter, ioc, placed, errors, ct));
        }
        await Task.WhenAll(inflight);
        var placingSeconds = clock.Elapsed.TotalSeconds;
        log.WriteLine($"placed {placed.Count} orders in {placingSeconds:0.0} s; waiting for each to end (filled or cancelled)");

        var ids = placed.Select(p => p.Id).ToArray();
        await using var db = new NpgsqlConnection(o.Postgres);
        var unfinished = ids.Length;
        var deadline = DateTime.UtcNow.AddSeconds(60);
        while (unfinished > 0 && DateTime.UtcNow < deadline)
        {
            unfinished = await db.ExecuteScalarAsync<int>("SELECT count(*) FROM bidding.orders WHERE id = ANY(@ids) AND status NOT IN ('filled','cancelled')", new { ids });
            if (unfinished > 0) await Task.Delay(500, ct);
        }

        var rows = (await db.QueryAsync<(Guid Id, string Status, DateTime Created, DateTime? Matched, DateTime? Leased, DateTime? Held)>("""
            SELECT o.id, o.status, o.created_at,
                   (SELECT min(m.created_at) FROM bidding.matches m WHERE m.order_id = o.id),
                   l.created_at, h.created_at
            FROM bidding.orders o
            LEFT JOIN scheduling.leases l ON l.order_id = o.id
            LEFT JOIN billing.holds h ON h.lease_id = l.id
            WHERE o.id = ANY(@ids)
            """, new { ids })).ToList();
        static double Ms(DateTime a, DateTime b) => (b - a).TotalMilliseconds;
        var stages = new Dictionary<string, Percentiles>
        {
            ["order accepted → lease scheduled"] = Stats(rows.Where(r => r.Leased is not null).Select(r => Ms(r.Created, r.Leased!.Value))),
            ["  order accepted → matched (Bidding)"] = Stats(rows.Where(r => r.Matched is not null).Select(r => Ms(r.Created, r.Matched!.Value))),
            ["  matched → lease scheduled (bus + Scheduling)"] = Stats(rows.Where(r => r.Matched is not null && r.Leased is not null).Select(r => Ms(r.Matched!.Value, r.Leased!.Value))),
            ["lease scheduled → hold placed (bus + Billing)"] = Stats(rows.Where(r => r.Leased is not null && r.Held is not null).Select(r => Ms(r.Leased!.Value, r.Held!.Value))),
        };
        var leased = rows.Where(r => r.Leased is not null).ToList();
        var bookingsPerSecond = leased.Count < 2 ? 0 : leased.Count / Math.Max(0.001, (leased.Max(r => r.Leased!.Value) - rows.Min(r => r.Created)).TotalSeconds);

        var report = new LoadReport(o, o.Providers * nodesPerProvider, o.Providers * nodesPerProvider * GpusPerNode, placed.Count,
            rows.Count(r => r.Status == "filled"), rows.Count(r => r.Status == "cancelled"), unfinished, placed.Count / placingSeconds, bookingsPerSecond,
            stages, Stats(placed.Select(p => p.AcceptMs)), new Dictionary<string, int>(errors), tps, pgbenchCommand, idle, underLoad);
        Print(report);
        if (o.JsonPath is not null)
            await File.WriteAllTextAsync(o.JsonPath, JsonSerializer.Serialize(report, new JsonSerializerOptions { WriteIndented = true }), ct);
        return report;
    }

    private async Task PlaceAsync(HttpClient renter, bool ioc, ConcurrentBag<Placed> placed, ConcurrentDictionary<string, int> errors, CancellationToken ct)
    {
        var started = Stopwatch.GetTimestamp();
        try
        {
            using var request = new HttpRequestMessage(HttpMethod.Post, "/v1/orders")
            {
                Content = JsonContent.Create(new
                {
                    type = "on_demand", accelerator_model = Model, accelerator_count = 1, duration_seconds = o.LeaseSeconds,
                    max_price_per_hour = new { amount = 5000, currency = Currency }, time_in_force = ioc ? "ioc" : "gtc",
                }),
            };
            request.Headers.Add("Idempotency-Key", Guid.NewGuid().ToString());
            using var response = await renter.SendAsync(request, ct);
            var text = await response.Content.ReadAsStringAsync(ct);
            if (!response.IsSuccessStatusCode) { errors.AddOrUpdate($"POST /v1/orders → {(int)response.StatusCode}", 1, (_, c) => c + 1); return; }
            var id = Guid.Parse((string)JsonNode.Parse(text)!["id"]!);
            placed.Add(new Placed(id, Stopwatch.GetElapsedTime(started).TotalMilliseconds, ioc));
        }
        catch (Exception ex) when (ex is HttpRequestException or TaskCanceledException && !ct.IsCancellationRequested)
        {
            errors.AddOrUpdate($"POST /v1/orders → {ex.GetType().Name}", 1, (_, c) => c + 1);
        }
    }

    private async Task ProviderAsync(Api admin, string run, int i, int nodes, CancellationToken ct)
    {
        using var provider = await OrgAsync(admin, $"load provider {run}-{i}", "provider", ct);
        var cluster = await provider.PostAsync("/v1/clusters", new { name = $"load-{i}", region = "cn-east", jurisdiction = "CN" }, null, ct);
        var nodeIds = new List<string>();
        for (var n = 0; n < nodes; n++)
            nodeIds.Add((string)(await provider.PostAsync($"/v1/clusters/{cluster["id"]}/nodes",
                new { hostname = $"load-{run}-{i}-{n}", accelerator_model = Model, accelerator_count = GpusPerNode }, null, ct))["id"]!);
        var now = DateTimeOffset.UtcNow;
        await provider.PostAsync("/v1/offers", new
        {
            cluster_id = cluster["id"], node_ids = nodeIds, window_start = now.AddMinutes(-1), window_end = now.AddHours(3),
            ask_per_hour = new { amount = 1000 + 10 * i, currency = Currency }, min_lease_seconds = o.LeaseSeconds, interruptible_allowed = false,
        }, null, ct);
    }

    private async Task<HttpClient> RenterAsync(Api admin, string run, int i, CancellationToken ct)
    {
        using var renter = await OrgAsync(admin, $"load renter {run}-{i}", "renter", ct, out var key);
        await renter.PostAsync("/v1/wallet/top-ups", new { amount = new { amount = 100_000_000, currency = Currency } }, Guid.NewGuid().ToString(), ct);
        await renter.WaitForAsync("/v1/wallet", w => w["balances"]!.AsArray().Any(b => (long)b!["available"]!["amount"]! >= 100_000_000),
            TimeSpan.FromSeconds(60), "the top-up webhook", ct);
        var http = new HttpClient { BaseAddress = o.Gateway, Timeout = TimeSpan.FromSeconds(30) };
        http.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue("Bearer", key.Value);
        return http;
    }

    private sealed class Box { public string Value = ""; }

    private Task<Api> OrgAsync(Api admin, string name, string role, CancellationToken ct) => OrgAsync(admin, name, role, ct, out _);

    private Task<Api> OrgAsync(Api admin, string name, string role, CancellationToken ct, out Box key)
    {
        var box = key = new Box();
        return Create();
        async Task<Api> Create()
        {
            var org = await admin.PostAsync("/v1/orgs", new { name, roles = new[] { role } }, null, ct);
            var created = await admin.PostAsync($"/v1/orgs/{org["id"]}/api-keys", new { name = "load" }, null, ct);
            box.Value = (string)created["key"]!;
            return new Api(o.Gateway, box.Value);
        }
    }

    private static Percentiles Stats(IEnumerable<double> values)
    {
        var sorted = values.Order().ToArray();
        if (sorted.Length == 0) return new Percentiles(0, 0, 0, 0, 0);
        double At(double q) => sorted[Math.Min(sorted.Length - 1, (int)Math.Ceiling(q * sorted.Length) - 1)];
        return new Percentiles(sorted.Length, At(0.50), At(0.95), At(0.99), sorted[^1]);
    }

    private void Print(LoadReport r)
    {
        log.WriteLine();
        log.WriteLine($"| orders placed | filled | cancelled | not finished | placed/s | bookings/s | pgbench tps | bookings/s ÷ tps |");
        log.WriteLine($"|---:|---:|---:|---:|---:|---:|---:|---:|");
        log.WriteLine($"| {r.Placed} | {r.Filled} | {r.Cancelled} | {r.Unfinished} | {r.PlacedPerSecond:0.0} | {r.BookingsPerSecond:0.0} | " +
                      $"{(r.PgBenchTps is { } t ? t.ToString("0") : "–")} | {(r.PgBenchTps is { } t2 ? (r.BookingsPerSecond / t2).ToString("0.000") : "–")} |");
        log.WriteLine();
        log.WriteLine("| stage (ms) | n | p50 | p95 | p99 | max |");
        log.WriteLine("|---|---:|---:|---:|---:|---:|");
        foreach (var (name, p) in r.Stages.Append(KeyValuePair.Create("POST /v1/orders answered (client)", r.AcceptLatency)))
            log.WriteLine($"| {name} | {p.Count} | {p.P50:0.0} | {p.P95:0.0} | {p.P99:0.0} | {p.Max:0.0} |");
        log.WriteLine();
        log.WriteLine("errors: " + (r.Errors.Count == 0 ? "none" : string.Join(", ", r.Errors.Select(e => $"{e.Key} ×{e.Value}"))));
        log.WriteLine();
        log.WriteLine("| process | idle RSS MiB | idle PSS MiB | under load RSS MiB | under load PSS MiB |");
        log.WriteLine("|---|---:|---:|---:|---:|");
        foreach (var idle in r.IdleMemory)
        {
            var load = r.LoadMemory.FirstOrDefault(m => m.Name == idle.Name || m.Pid == idle.Pid);
            log.WriteLine($"| {idle.Name} | {idle.RssKb / 1024.0:0} | {idle.PssKb / 1024.0:0} | {(load?.RssKb ?? 0) / 1024.0:0} | {(load?.PssKb ?? 0) / 1024.0:0} |");
        }
        log.WriteLine($"| **total** | {r.IdleMemory.Sum(m => m.RssKb) / 1024.0:0} | {r.IdleMemory.Sum(m => m.PssKb) / 1024.0:0} | " +
                      $"{r.LoadMemory.Sum(m => m.RssKb) / 1024.0:0} | {r.LoadMemory.Sum(m => m.PssKb) / 1024.0:0} |");
    }
}
