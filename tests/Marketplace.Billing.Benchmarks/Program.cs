using System.Diagnostics;
using BenchmarkDotNet.Running;
using Marketplace.Billing.Benchmarks;

// Our own options first: --leases N (default 100 000) sizes the data; "profile" runs the aggregation and the billing run
// once each without BenchmarkDotNet and prints the run's time per phase. Everything else goes to BenchmarkDotNet.
var rest = new List<string>();
var profile = false;
var keep = false;
var batch = new Marketplace.Billing.BillingOptions().RunBatchSize; // the service's default
for (var i = 0; i < args.Length; i++)
{
    if (args[i] == "--leases" && i + 1 < args.Length) BillingRunBenchmark.Leases = int.Parse(args[++i], System.Globalization.CultureInfo.InvariantCulture);
    else if (args[i] == "profile") profile = true;
    else if (args[i] == "--keep") keep = true; // profile: leave the database behind, to look at plans
    else if (args[i] == "--batch" && i + 1 < args.Length) batch = int.Parse(args[++i], System.Globalization.CultureInfo.InvariantCulture);

    else rest.Add(args[i]);
}

if (!profile)
{
    BenchmarkSwitcher.FromAssembly(typeof(BillingRunBenchmark).Assembly).Run([.. rest]);
    return;
}

var bench = new BillingRunBenchmark { BatchSize = batch };
await bench.SetupAsync();
try
{
    bench.Reset();
    var t = Stopwatch.GetTimestamp();
    await bench.SqlAggregation();
    var sql = Stopwatch.GetElapsedTime(t);
    bench.Reset();
    t = Stopwatch.GetTimestamp();
    var closed = await bench.BillingRun();
    var run = Stopwatch.GetElapsedTime(t);
    Console.WriteLine($"{BillingRunBenchmark.Leases} leases: SQL aggregation {sql.TotalSeconds:0.00} s, billing run {run.TotalSeconds:0.00} s " +
        $"({closed} closed), ratio {run / sql:0.0}×");
    foreach (var (phase, time) in bench.LastProfile!.Phases)
        Console.WriteLine($"  {phase,-55} {time.TotalSeconds,7:0.00} s  {time / run,6:P0}");
}
finally
{
    if (keep) Console.WriteLine($"kept database {bench.Database}");
    else await bench.CleanupAsync();
}
