using System.Collections.Concurrent;
using System.Diagnostics;
using System.Globalization;
using System.Net.Http.Headers;
using System.Net.Http.Json;
using System.Text.Json;
using System.Text.Json.Nodes;
using CsvHelper;
using Dapper;
using Marketplace.AgentSim;
using Marketplace.Demo;
using Npgsql;

namespace Marketplace.Load;

internal sealed record LoadOptions(Uri Gateway, string AdminKey, string Postgres, int Providers, int Renters, double Rate, int Duration,
    int LeaseSeconds, int PgBenchSeconds, string RunDir, string? JsonPath, string Mix, double HeartbeatSeconds, int[] RabbitPorts, int Warmup = 0,
    bool HeartbeatsInLockstep = false, string? OrdersCsvPath = null);

internal sealed record Percentiles(int Count, double P50, double P95, double P99, double Max);

/// <summary>One order kind's outcome and latencies (ms) from the services' own timestamps.</summary>
internal sealed record KindReport(string Kind, int Placed, int Filled, int Cancelled, int Unfinished,
    Percentiles AcceptedToLease, Percentiles AcceptedToMatched, Percentiles MatchedToLease, Percentiles LeaseToHold, Percentiles Post);

internal sealed record LoadReport(
    LoadOptions Options, int Providers, int Nodes, int Gpus, long Heartbeats, long HeartbeatsFailed,
    int Placed, int Filled, int Cancelled, int Unfinished, double PlacedPerSecond, double BookingsPerSecond,
    Dictionary<string, Percentiles> Stages, Percentiles AcceptLatency, List<KindReport> Kinds, Dictionary<string, int> Errors,
    Dictionary<string, int> UnfinishedReasons,
    double? PgBenchTps, string? PgBenchCommand, List<Memory.Sample> IdleMemory, List<Memory.Sample> LoadMemory, Cpu.Report Cpu);

/// <summary>
/// One load run against a running marketplace. Providers bring their fleets through the agent simulator (clusters, nodes,
/// one key per node, heartbeats all through the run) and offer them; renters fund their wallets through the Stripe
/// stand-in, then place a mix of order types at the target rate; every order is followed to its end, and the times each
/// service wrote down (order created → matched → lease scheduled → hold placed) give the per-stage latencies.
/// </summary>
internal sealed class LoadRun(LoadOptions o, TextWriter log)
{
    /// <summary>On-demand and reserved orders buy this model; interruptible ones bid for the other, so neither starves the other.</summary>
    private const string Model = "h100-sxm";
    private const string InterruptibleModel = "ascend-910b";
    private const string Currency = "CNY";
    private const int GpusPerNode = 16;
    /// <summary>Registering a node takes two requests on the provider's key: stay within one key's burst (100).</summary>
    private const int MaxNodesPerProvider = 40;
    /// <summary>Reserved orders start this long after they are placed.</summary>
    private const int ReservedLeadSeconds = 30;

    private sealed record Placed(Guid Id, OrderKind Kind, double AcceptMs);

    public async Task<LoadReport> RunAsync(CancellationToken ct)
    {
        var mix = OrderMix.Parse(o.Mix);
        var pgPort = new NpgsqlConnectionStringBuilder(o.Postgres).Port;
        log.WriteLine($"Load: {o.Renters} renters, {o.Rate} orders/s for {o.Duration} s (leases of {o.LeaseSeconds} s" +
                      (o.Warmup > 0 ? $"; after {o.Warmup} s of the same load not measured, while the services compile their code" : "") + $") against {o.Gateway}; mix " +
                      string.Join(", ", mix.Kinds.Select(k => $"{OrderMix.Name(k)} {mix.Share(k):P0}")));

        double? tps = null; string? pgbenchCommand = null;
        if (o.PgBenchSeconds > 0)
        {
            log.WriteLine("pgbench (simple-update, same PostgreSQL, before the load so each has the machine alone):");
            (tps, pgbenchCommand) = await PgBench.RunAsync(o.Postgres, o.PgBenchSeconds, log, ct);
            log.WriteLine($"  {tps:0} tps");
        }

        using var admin = new Api(o.Gateway, o.AdminKey);
        var run = DateTime.UtcNow.ToString("HHmmss", CultureInfo.InvariantCulture);
        // Every order holds one GPU for a whole lease: enough GPUs of each model for every order placed within one lease
        // length, +25 % (reserved leases start a little later, but no more of them overlap at any instant).
        var window = Math.Min(o.Warmup + o.Duration, o.LeaseSeconds);
        int GpusFor(double share) => (int)Math.Ceiling(o.Rate * share * window * 1.25);
        var mainGpus = GpusFor(mix.Share(OrderKind.OnDemand) + mix.Share(OrderKind.ReservedFixed) + mix.Share(OrderKind.ReservedFlexible));
        var spotGpus = GpusFor(mix.Share(OrderKind.Interruptible));
        var mainNodes = (mainGpus + GpusPerNode - 1) / GpusPerNode;
        var spotNodes = (spotGpus + GpusPerNode - 1) / GpusPerNode;
        var providers = Math.Max(o.Providers, (mainNodes + spotNodes + MaxNodesPerProvider - 1) / MaxNodesPerProvider);
        int Split(int total, int i) => total / providers + (i < total % providers ? 1 : 0);
        log.WriteLine($"setup: {providers} providers with {mainNodes} nodes of {GpusPerNode} × {Model} and {spotNodes} of {GpusPerNode} × {InterruptibleModel} " +
                      $"in all, registered and heartbeating every {o.HeartbeatSeconds.ToString(CultureInfo.InvariantCulture)} s through the agent simulator" +
                      (o.HeartbeatsInLockstep ? ", all nodes at once" : ", each node at its own phase"));

        var setup = Stopwatch.StartNew();
        using var heartbeats = CancellationTokenSource.CreateLinkedTokenSource(ct);
        var fleets = await Task.WhenAll(Enumerable.Range(0, providers).Select(i => ProviderAsync(admin, run, i, Split(mainNodes, i), Split(spotNodes, i), heartbeats.Token)));
        var renters = await Task.WhenAll(Enumerable.Range(0, o.Renters).Select(i => RenterAsync(admin, run, i, ct)));
        log.WriteLine($"setup done in {setup.Elapsed.TotalSeconds:0.0} s");
        await Task.Delay(TimeSpan.FromSeconds(3), ct); // offers reach Bidding; processes settle before the idle sample

        var idle = Memory.Take(o.RunDir, pgPort, o.RabbitPorts);
        // The samples taken while orders are placed run beside the placing loop: reading /proc (PSS walks every
        // process's page tables, about 80 PostgreSQL backends under load) took the loop off its schedule for tens of
        // milliseconds, and the orders due meanwhile then went out in one burst.
        Task<List<Memory.Sample>> underLoad = Task.FromResult<List<Memory.Sample>>([]);
        var placed = new ConcurrentBag<Placed>();
        var errors = new ConcurrentDictionary<string, int>();
        var inflight = new List<Task>();
        // Warm-up orders (the first Warmup seconds, same rate and mix) run the same paths but are left out of every figure:
        // freshly started services compile each method first (and again, optimized, once it is hot), which is not the
        // marketplace's steady state. They must still end like every order.
        var warm = new ConcurrentBag<Placed>();
        var warmErrors = new ConcurrentDictionary<string, int>();
        var warmCount = (int)(o.Rate * o.Warmup);
        var total = warmCount + (int)(o.Rate * o.Duration);
        var clock = Stopwatch.StartNew();
        var measuredFrom = TimeSpan.Zero;
        Task<Cpu.Snapshot>? cpuFrom = null;
        var sampleMs = 0.0;
        for (var n = 0; n < total; n++)
        {
            var due = TimeSpan.FromSeconds(n / o.Rate);
            if (due > clock.Elapsed) await Task.Delay(due - clock.Elapsed, ct);
            if (n == warmCount) (measuredFrom, cpuFrom) = (clock.Elapsed, Task.Run(() => Cpu.Take(o.RunDir, pgPort, o.RabbitPorts), ct));
            // Under load: three quarters into the warm-up (same rate and mix), so that reading /proc of about 80 processes
            // (0.7 s at 18/s) does not take CPU from the measured orders; half-way through them when there is no warm-up.
            if (n == (warmCount > 0 ? warmCount * 3 / 4 : total / 2))
                underLoad = Task.Run(() =>
                {
                    var sampling = Stopwatch.StartNew();
                    var sample = Memory.Take(o.RunDir, pgPort, o.RabbitPorts);
                    sampleMs = sampling.Elapsed.TotalMilliseconds;
                    return sample;
                }, ct);
            inflight.Add(n < warmCount
                ? PlaceAsync(renters[n % renters.Length], mix.Next(), n, warm, warmErrors, ct)
                : PlaceAsync(renters[n % renters.Length], mix.Next(), n, placed, errors, ct));
        }
        // The CPU of the window in which the measured orders were placed (their last ones still finish after it).
        var cpu = Cpu.Between(cpuFrom is null ? Cpu.Take(o.RunDir, pgPort, o.RabbitPorts) : await cpuFrom, Cpu.Take(o.RunDir, pgPort, o.RabbitPorts));
        await Task.WhenAll(inflight);
        var placingSeconds = (clock.Elapsed - measuredFrom).TotalSeconds;
        if (warmCount > 0)
            log.WriteLine($"warm-up: {warm.Count} orders placed" + (warmErrors.IsEmpty ? "" : ", errors: " + string.Join(", ", warmErrors.Select(e => $"{e.Key} ×{e.Value}"))));
        log.WriteLine($"placed {placed.Count} orders in {placingSeconds:0.0} s; waiting for each to end (filled or cancelled)");
        var loadMemory = await underLoad;
        log.WriteLine($"the memory sample under load (/proc of every process below) took {sampleMs:0} ms, beside the placing" +
                      (warmCount > 0 ? ", in the warm-up" : ""));

        var ids = placed.Select(p => p.Id).ToArray();
        var warmIds = warm.Select(p => p.Id).ToArray();
        await using var db = new NpgsqlConnection(o.Postgres);
        var unfinished = ids.Length;
        var deadline = DateTime.UtcNow.AddSeconds(60);
        while (unfinished > 0 && DateTime.UtcNow < deadline)
        {
            unfinished = await db.ExecuteScalarAsync<int>("SELECT count(*) FROM bidding.orders WHERE id = ANY(@ids) AND status NOT IN ('filled','cancelled')",
                new { ids = ids.Concat(warmIds).ToArray() });
            if (unfinished > 0) await Task.Delay(500, ct);
        }
        await heartbeats.CancelAsync();
        await Task.WhenAll(fleets.Select(f => f.Heartbeats));
        foreach (var f in fleets) f.Simulator.Dispose();

        var rows = (await db.QueryAsync<Row>("""
            SELECT o.id, o.status, o.created_at AS created,
                   (SELECT min(m.created_at) FROM bidding.matches m WHERE m.order_id = o.id) AS matched,
                   l.created_at AS leased, h.created_at AS held
            FROM bidding.orders o
            LEFT JOIN scheduling.leases l ON l.order_id = o.id
            LEFT JOIN billing.holds h ON h.lease_id = l.id
            WHERE o.id = ANY(@ids)
            """, new { ids })).ToList();
        // The report counts the measured orders; a warm-up order that did not end is an error like any other.
        unfinished = rows.Count(r => r.Status is not ("filled" or "cancelled"));
        if (warmIds.Length > 0)
        {
            var warmOpen = await db.ExecuteScalarAsync<int>("SELECT count(*) FROM bidding.orders WHERE id = ANY(@warmIds) AND status NOT IN ('filled','cancelled')",
                new { warmIds });
            if (warmOpen > 0) errors["warm-up orders not finished"] = warmOpen;
        }
        foreach (var (error, count) in warmErrors) errors.AddOrUpdate("warm-up: " + error, count, (_, c) => c + count);
        var kindOf = placed.ToDictionary(p => p.Id, p => p.Kind);
        if (o.OrdersCsvPath is not null) await WriteOrdersCsvAsync(o.OrdersCsvPath, rows, kindOf, ct);
        var stages = Stages(rows);
        var kinds = mix.Kinds.Select(k =>
        {
            var mine = rows.Where(r => kindOf[r.Id] == k).ToList();
            var s = Stages(mine);
            return new KindReport(OrderMix.Name(k), placed.Count(p => p.Kind == k), mine.Count(r => r.Status == "filled"),
                mine.Count(r => r.Status == "cancelled"), mine.Count(r => r.Status is not ("filled" or "cancelled")),
                s[AcceptedToLease], s[AcceptedToMatched], s[MatchedToLease], s[LeaseToHold], Stats(placed.Where(p => p.Kind == k).Select(p => p.AcceptMs)));
        }).ToList();
        // Why the orders that did not end are still open, as their renters would read it.
        var reasons = (await db.QueryAsync<(string Status, string? Reason, int Count)>("""
            SELECT status, status_reason, count(*)::int FROM bidding.orders
            WHERE id = ANY(@ids) AND status NOT IN ('filled','cancelled') GROUP BY 1, 2 ORDER BY 3 DESC
            """, new { ids })).ToDictionary(r => $"{r.Status}: {r.Reason ?? "no reason given"}", r => r.Count);
        var leased = rows.Where(r => r.Leased is not null).ToList();
        var bookingsPerSecond = leased.Count < 2 ? 0 : leased.Count / Math.Max(0.001, (leased.Max(r => r.Leased!.Value) - rows.Min(r => r.Created)).TotalSeconds);

        var report = new LoadReport(o, providers, fleets.Sum(f => f.Simulator.Nodes.Count), fleets.Sum(f => f.Simulator.Nodes.Sum(n => n.AcceleratorCount)),
            fleets.Sum(f => f.Simulator.HeartbeatsSent), fleets.Sum(f => f.Simulator.HeartbeatsFailed),
            placed.Count, rows.Count(r => r.Status == "filled"), rows.Count(r => r.Status == "cancelled"), unfinished, placed.Count / placingSeconds, bookingsPerSecond,
            stages, Stats(placed.Select(p => p.AcceptMs)), kinds, new Dictionary<string, int>(errors), reasons, tps, pgbenchCommand, idle, loadMemory, cpu);
        Print(report);
        if (o.JsonPath is not null)
            await File.WriteAllTextAsync(o.JsonPath, JsonSerializer.Serialize(report, new JsonSerializerOptions { WriteIndented = true }), ct);
        return report;
    }

    private const string AcceptedToLease = "order accepted → lease scheduled";
    private const string AcceptedToMatched = "  order accepted → matched (Bidding)";
    private const string MatchedToLease = "  matched → lease scheduled (bus + Scheduling)";
    private const string LeaseToHold = "lease scheduled → hold placed (bus + Billing)";

    // Npgsql reads timestamptz as UTC DateTime; Dapper maps records by exact constructor types.
    private sealed record Row(Guid Id, string Status, DateTime Created, DateTime? Matched, DateTime? Leased, DateTime? Held);

    /// <summary>Every measured order's times, in the order they were accepted (when did the slow ones happen?).</summary>
    private static async Task WriteOrdersCsvAsync(string path, List<Row> rows, Dictionary<Guid, OrderKind> kindOf, CancellationToken ct)
    {
        static string? Time(DateTime? t) => t?.ToString("yyyy-MM-ddTHH:mm:ss.ffffff'Z'", CultureInfo.InvariantCulture);
        await using var file = File.Create(path);
        await using var csv = CsvWriter.Create(file, new CsvWriterOptions());
        csv.WriteHeader(["order_id", "kind", "status", "accepted_at", "matched_at", "leased_at", "held_at", "accepted_to_lease_ms"]);
        foreach (var r in rows.OrderBy(r => r.Created))
            await csv.WriteRecordAsync([r.Id.ToString(), OrderMix.Name(kindOf[r.Id]), r.Status, Time(r.Created), Time(r.Matched), Time(r.Leased),
                Time(r.Held), r.Leased is { } l ? (l - r.Created).TotalMilliseconds.ToString("0.0", CultureInfo.InvariantCulture) : null]);
        await csv.FlushAsync();
    }

    private static Dictionary<string, Percentiles> Stages(List<Row> rows)
    {
        static double Ms(DateTime a, DateTime b) => (b - a).TotalMilliseconds;
        return new Dictionary<string, Percentiles>
        {
            [AcceptedToLease] = Stats(rows.Where(r => r.Leased is not null).Select(r => Ms(r.Created, r.Leased!.Value))),
            [AcceptedToMatched] = Stats(rows.Where(r => r.Matched is not null).Select(r => Ms(r.Created, r.Matched!.Value))),
            [MatchedToLease] = Stats(rows.Where(r => r.Matched is not null && r.Leased is not null).Select(r => Ms(r.Matched!.Value, r.Leased!.Value))),
            [LeaseToHold] = Stats(rows.Where(r => r.Leased is not null && r.Held is not null).Select(r => Ms(r.Leased!.Value, r.Held!.Value))),
        };
    }

    /// <summary>The order a renter places for <paramref name="kind"/>; every on-demand tenth is immediate-or-cancel.</summary>
    private object OrderBody(OrderKind kind, int n)
    {
        var start = DateTimeOffset.UtcNow.AddSeconds(ReservedLeadSeconds);
        var max = new { amount = 5000, currency = Currency };
        return kind switch
        {
            OrderKind.OnDemand => new
            {
                type = "on_demand", accelerator_model = Model, accelerator_count = 1, duration_seconds = o.LeaseSeconds,
                max_price_per_hour = max, time_in_force = n % 10 == 9 ? "ioc" : "gtc",
            },
            OrderKind.ReservedFixed => new
            {
                type = "reserved", accelerator_model = Model, accelerator_count = 1, duration_seconds = o.LeaseSeconds,
                max_price_per_hour = max, earliest_start = start, latest_end = start.AddSeconds(o.LeaseSeconds),
            },
            OrderKind.ReservedFlexible => new
            {
                type = "reserved", accelerator_model = Model, accelerator_count = 1, duration_seconds = o.LeaseSeconds,
                max_price_per_hour = max, earliest_start = start, latest_end = start.AddSeconds(o.LeaseSeconds + 600),
            },
            OrderKind.Interruptible => (object)new
            {
                type = "interruptible", accelerator_model = InterruptibleModel, accelerator_count = 1, duration_seconds = o.LeaseSeconds,
                bid_per_hour = new { amount = 700, currency = Currency },
            },
            _ => throw new ArgumentOutOfRangeException(nameof(kind)),
        };
    }

    private async Task PlaceAsync(HttpClient renter, OrderKind kind, int n, ConcurrentBag<Placed> placed, ConcurrentDictionary<string, int> errors, CancellationToken ct)
    {
        var started = Stopwatch.GetTimestamp();
        try
        {
            using var request = new HttpRequestMessage(HttpMethod.Post, "/v1/orders") { Content = JsonContent.Create(OrderBody(kind, n)) };
            request.Headers.Add("Idempotency-Key", Guid.NewGuid().ToString());
            using var response = await renter.SendAsync(request, ct);
            var text = await response.Content.ReadAsStringAsync(ct);
            if (!response.IsSuccessStatusCode) { errors.AddOrUpdate($"POST /v1/orders ({OrderMix.Name(kind)}) → {(int)response.StatusCode}", 1, (_, c) => c + 1); return; }
            var id = Guid.Parse((string)JsonNode.Parse(text)!["id"]!);
            placed.Add(new Placed(id, kind, Stopwatch.GetElapsedTime(started).TotalMilliseconds));
        }
        catch (Exception ex) when (ex is HttpRequestException or TaskCanceledException && !ct.IsCancellationRequested)
        {
            errors.AddOrUpdate($"POST /v1/orders ({OrderMix.Name(kind)}) → {ex.GetType().Name}", 1, (_, c) => c + 1);
        }
    }

    private sealed record Fleet(AgentSimulator Simulator, Task Heartbeats);

    /// <summary>
    /// A provider org whose agents register its nodes (each with its own node key) and heartbeat them until the run ends;
    /// once every node is healthy, one offer over its on-demand nodes and one interruptible offer over the others.
    /// </summary>
    private async Task<Fleet> ProviderAsync(Api admin, string run, int i, int mainNodes, int spotNodes, CancellationToken heartbeatCt)
    {
        var (provider, key) = await OrgAsync(admin, $"load provider {run}-{i}", "provider", heartbeatCt);
        using var _ = provider;
        var sim = new AgentSimulator(new AgentSimOptions
        {
            Gateway = o.Gateway, ProviderKey = key, ClusterName = $"load-{run}-{i}", Region = "cn-east", Jurisdiction = "CN",
            Fleet = [.. new[] { new FleetEntry(Model, mainNodes, GpusPerNode), new FleetEntry(InterruptibleModel, spotNodes, GpusPerNode) }.Where(e => e.Nodes > 0)],
            HeartbeatInterval = TimeSpan.FromSeconds(o.HeartbeatSeconds), Lockstep = o.HeartbeatsInLockstep, Concurrency = 4,
        });
        var nodes = await sim.RegisterAsync(heartbeatCt);
        var heartbeats = sim.RunAsync(heartbeatCt);
        var clusterId = sim.ClusterIds[0];
        await provider.WaitForAsync($"/v1/clusters/{clusterId}", c => c["nodes"]!.AsArray().All(n => (string?)n!["health"] == "healthy"),
            TimeSpan.FromSeconds(60), $"the first heartbeat of every node of provider {i}", heartbeatCt);
        var now = DateTimeOffset.UtcNow;
        if (mainNodes > 0)
            await provider.PostAsync("/v1/offers", new
            {
                cluster_id = clusterId, node_ids = nodes.Where(n => n.Model == Model).Select(n => n.NodeId), window_start = now.AddMinutes(-1),
                window_end = now.AddHours(3), ask_per_hour = new { amount = 1000 + 10 * i, currency = Currency }, min_lease_seconds = o.LeaseSeconds,
                interruptible_allowed = false,
            }, null, heartbeatCt);
        if (spotNodes > 0)
            await provider.PostAsync("/v1/offers", new
            {
                cluster_id = clusterId, node_ids = nodes.Where(n => n.Model == InterruptibleModel).Select(n => n.NodeId), window_start = now.AddMinutes(-1),
                window_end = now.AddHours(3), ask_per_hour = new { amount = 900, currency = Currency }, min_lease_seconds = o.LeaseSeconds,
                interruptible_allowed = true, interruptible_floor_per_hour = new { amount = 500, currency = Currency }, preemption_notice_seconds = 20,
            }, null, heartbeatCt);
        return new Fleet(sim, heartbeats);
    }

    private async Task<HttpClient> RenterAsync(Api admin, string run, int i, CancellationToken ct)
    {
        var (renter, key) = await OrgAsync(admin, $"load renter {run}-{i}", "renter", ct);
        using var _ = renter;
        await renter.PostAsync("/v1/wallet/top-ups", new { amount = new { amount = 100_000_000, currency = Currency } }, Guid.NewGuid().ToString(), ct);
        await renter.WaitForAsync("/v1/wallet", w => w["balances"]!.AsArray().Any(b => (long)b!["available"]!["amount"]! >= 100_000_000),
            TimeSpan.FromSeconds(60), "the top-up webhook", ct);
        var http = new HttpClient { BaseAddress = o.Gateway, Timeout = TimeSpan.FromSeconds(30) };
        http.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue("Bearer", key);
        return http;
    }

    private async Task<(Api Client, string Key)> OrgAsync(Api admin, string name, string role, CancellationToken ct)
    {
        var org = await admin.PostAsync("/v1/orgs", new { name, roles = new[] { role } }, null, ct);
        var created = await admin.PostAsync($"/v1/orgs/{org["id"]}/api-keys", new { name = "load" }, null, ct);
        var key = (string)created["key"]!;
        return (new Api(o.Gateway, key), key);
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
        log.WriteLine($"fleet: {r.Providers} providers, {r.Nodes} nodes, {r.Gpus} GPUs; {r.Heartbeats} heartbeats sent, {r.HeartbeatsFailed} failed");
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
        log.WriteLine("| order type | placed | filled | cancelled | not finished | accepted → lease p50 / p95 / p99 | accepted → matched p50 / p99 | matched → lease p50 / p99 | lease → hold p50 / p99 | POST p50 / p99 |");
        log.WriteLine("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
        foreach (var k in r.Kinds)
            log.WriteLine($"| {k.Kind} | {k.Placed} | {k.Filled} | {k.Cancelled} | {k.Unfinished} | {k.AcceptedToLease.P50:0} / {k.AcceptedToLease.P95:0} / {k.AcceptedToLease.P99:0} | " +
                          $"{k.AcceptedToMatched.P50:0} / {k.AcceptedToMatched.P99:0} | {k.MatchedToLease.P50:0} / {k.MatchedToLease.P99:0} | " +
                          $"{k.LeaseToHold.P50:0} / {k.LeaseToHold.P99:0} | {k.Post.P50:0} / {k.Post.P99:0} |");
        log.WriteLine();
        log.WriteLine("errors: " + (r.Errors.Count == 0 ? "none" : string.Join(", ", r.Errors.Select(e => $"{e.Key} ×{e.Value}"))));
        foreach (var (reason, count) in r.UnfinishedReasons)
            log.WriteLine($"not finished: {count} × {reason}");
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
        log.WriteLine();
        var perOrder = r.Placed > 0 ? r.Cpu.Processes.Sum(u => u.Seconds) * 1000 / r.Placed : 0;
        log.WriteLine($"CPU while the measured orders were placed ({r.Cpu.WindowSeconds:0.0} s): the machine {r.Cpu.MachineBusyShare:P0} busy " +
                      $"(all {Environment.ProcessorCount} cores, every process on it); the processes below {perOrder:0.0} ms per order placed");
        log.WriteLine("| process | CPU s | cores |");
        log.WriteLine("|---|---:|---:|");
        foreach (var u in r.Cpu.Processes)
            log.WriteLine($"| {u.Name} | {u.Seconds:0.00} | {u.Cores:0.00} |");
        log.WriteLine($"| **total** | {r.Cpu.Processes.Sum(u => u.Seconds):0.00} | {r.Cpu.Processes.Sum(u => u.Cores):0.00} |");
    }
}
