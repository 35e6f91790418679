using System.CommandLine;
using Marketplace.Load;

var gateway = new Option<string>("--gateway") { Description = "The gateway's base URL", DefaultValueFactory = _ => "http://127.0.0.1:8080" };
var adminKey = new Option<string>("--admin-key")
{
    Description = "The bootstrap admin API key",
    DefaultValueFactory = _ => Environment.GetEnvironmentVariable("MP_ADMIN_KEY") ?? "mk_admin_dev_bootstrap_key_change_me",
};
var postgres = new Option<string>("--postgres")
{
    Description = "Admin connection string of the marketplace's database (for the per-stage timings and pgbench)",
    DefaultValueFactory = _ => $"Host=127.0.0.1;Port={Environment.GetEnvironmentVariable("MP_PG_PORT") ?? "55432"};Username=mp_admin;Password=mp_admin;Database=marketplace",
};
var providers = new Option<int>("--providers") { Description = "Provider organisations (at least one per 40 nodes)", DefaultValueFactory = _ => 4 };
var renters = new Option<int>("--renters") { Description = "Renter organisations (each its own key: rate limits are per key)", DefaultValueFactory = _ => 8 };
var rate = new Option<double>("--rate") { Description = "Target orders per second", DefaultValueFactory = _ => 20 };
var duration = new Option<int>("--duration") { Description = "Seconds of ordering", DefaultValueFactory = _ => 30 };
var leaseSeconds = new Option<int>("--lease-seconds") { Description = "Order duration (the marketplace's minimum lease)", DefaultValueFactory = _ => 60 };
var pgbenchSeconds = new Option<int>("--pgbench-seconds") { Description = "Length of the pgbench simple-update run (0: skip)", DefaultValueFactory = _ => 10 };
var runDir = new Option<string>("--run-dir") { Description = "Where infra/up.sh keeps the services' pid files", DefaultValueFactory = _ => Path.Combine(FindRoot(), ".run") };
var shortMode = new Option<bool>("--short") { Description = "CI mode: 2 providers, 2 renters, 5 orders/s for 10 s, pgbench 5 s" };
var json = new Option<string?>("--json") { Description = "Also write the results as JSON to this file" };
var ordersCsv = new Option<string?>("--orders-csv") { Description = "Also write every measured order's times (accepted, matched, leased, held) as CSV to this file" };
var mix = new Option<string>("--mix")
{
    Description = "Relative weights of the order types (on_demand, reserved_fixed, reserved_flexible, interruptible)",
    DefaultValueFactory = _ => OrderMix.Default,
};
var rabbitPorts = new Option<string>("--rabbit-ports")
{
    Description = "AMQP ports of the marketplace's RabbitMQ node(s), comma-separated, for the memory report",
    DefaultValueFactory = _ => Environment.GetEnvironmentVariable("MP_RABBIT_PORT") ?? "55672",
};
var warmup = new Option<int>("--warmup") { Description = "Seconds of the same load before the measured window, left out of every figure (the services compile their code meanwhile)", DefaultValueFactory = _ => 0 };
var heartbeatSeconds = new Option<double>("--heartbeat-seconds") { Description = "Seconds between a node agent's heartbeats", DefaultValueFactory = _ => 5 };
var lockstep = new Option<bool>("--heartbeats-in-lockstep")
{
    Description = "Every node heartbeats at the same instant, as a fleet whose agents all restarted together (default: each node at its own phase, spread over the interval)",
};

var root = new RootCommand("Load driver: providers bring their fleets through the agent simulator (node keys, heartbeats) and offer " +
                           "them, renters place a mix of order types at a target rate through the gateway; reports throughput, order → lease " +
                           "latency per stage and per order type, errors, pgbench's tps on the same PostgreSQL and each process's memory.")
{
    gateway, adminKey, postgres, providers, renters, rate, duration, leaseSeconds, pgbenchSeconds, runDir, shortMode, json, mix, heartbeatSeconds, lockstep, rabbitPorts, warmup, ordersCsv,
};
root.SetAction(async (r, ct) =>
{
    var s = r.GetValue(shortMode);
    try { OrderMix.Parse(r.GetValue(mix)!); }
    catch (FormatException ex) { Console.Error.WriteLine(ex.Message); return 2; }
    // The result files are written after the whole run: a directory that is not there is said now, not minutes later.
    foreach (var (option, path) in new[] { ("--json", r.GetValue(json)), ("--orders-csv", r.GetValue(ordersCsv)) })
        if (path is not null && Path.GetDirectoryName(Path.GetFullPath(path)) is { } dir && !Directory.Exists(dir))
        {
            Console.Error.WriteLine($"{option} {path}: the directory {dir} does not exist; create it or give another path.");
            return 2;
        }
    var options = new LoadOptions(new Uri(r.GetValue(gateway)!), r.GetValue(adminKey)!, r.GetValue(postgres)!,
        s ? 2 : r.GetValue(providers), s ? 2 : r.GetValue(renters), s ? 5 : r.GetValue(rate), s ? 10 : r.GetValue(duration),
        r.GetValue(leaseSeconds), s ? 5 : r.GetValue(pgbenchSeconds), r.GetValue(runDir)!, r.GetValue(json), r.GetValue(mix)!, r.GetValue(heartbeatSeconds),
        r.GetValue(rabbitPorts)!.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries).Select(int.Parse).ToArray(),
        s ? 0 : r.GetValue(warmup), r.GetValue(lockstep), r.GetValue(ordersCsv));
    var report = await new LoadRun(options, Console.Out).RunAsync(ct);
    return report.Errors.Count == 0 && report.Unfinished == 0 ? 0 : 1;
});
return await root.Parse(args).InvokeAsync();

static string FindRoot()
{
    for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
        if (File.Exists(Path.Combine(dir.FullName, "Marketplace.sln"))) return dir.FullName;
    return Directory.GetCurrentDirectory();
}
