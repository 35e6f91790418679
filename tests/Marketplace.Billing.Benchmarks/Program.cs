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
Console.WriteLine($"// data loaded (process {Environment.ProcessId})");
if (Environment.GetEnvironmentVariable("MP_BENCH_WAIT") is { } wait) await Task.Delay(TimeSpan.FromSeconds(double.Parse(wait, System.Globalization.CultureInfo.InvariantCulture))); // time to attach a profiler
try
{
    // Twice in one process: the first pair includes compiling the code (the JIT ran for about a third of the first run's
    // CPU); the second is the steady state of a long-lived Billing service, which runs a period a day with its code
    // compiled already. Both are reported.
    foreach (var pass in new[] { "first run in a fresh process", "second run (steady state)" })
    {
        bench.Reset();
        var cpu = await Cpu.NowAsync(bench.Database);
        var t = Stopwatch.GetTimestamp();
        await bench.SqlAggregation();
        var sql = Stopwatch.GetElapsedTime(t);
        var sqlCpu = (await Cpu.NowAsync(bench.Database)).Since(cpu);
        bench.Reset();
        cpu = await Cpu.NowAsync(bench.Database);
        var wal = await Wal.NowAsync();
        var gc = (G0: GC.CollectionCount(0), G1: GC.CollectionCount(1), G2: GC.CollectionCount(2), Pause: GC.GetTotalPauseDuration(), Alloc: GC.GetTotalAllocatedBytes());
        using var allocations = Environment.GetEnvironmentVariable("MP_BENCH_ALLOCATIONS") == "1" ? new Allocations() : null;
        var (jit, jitted) = (System.Runtime.JitInfo.GetCompilationTime(), System.Runtime.JitInfo.GetCompiledMethodCount());
        t = Stopwatch.GetTimestamp();
        var closed = await bench.BillingRun();
        var run = Stopwatch.GetElapsedTime(t);
        var runCpu = (await Cpu.NowAsync(bench.Database)).Since(cpu);
        var runWal = (await Wal.NowAsync()).Since(wal);
        (jit, jitted) = (System.Runtime.JitInfo.GetCompilationTime() - jit, System.Runtime.JitInfo.GetCompiledMethodCount() - jitted);
        Console.WriteLine($"{pass}: {BillingRunBenchmark.Leases} leases: SQL aggregation {sql.TotalSeconds:0.00} s, " +
            $"billing run {run.TotalSeconds:0.00} s ({closed} closed), ratio {run / sql:0.0}×");
        // CPU time changes less than wall time when other work shares the machine: a fairer A/B on a busy machine.
        Console.WriteLine($"  CPU: SQL aggregation {sqlCpu}; billing run {runCpu}");
        Console.WriteLine($"  GC during the billing run: gen0 {GC.CollectionCount(0) - gc.G0}, gen1 {GC.CollectionCount(1) - gc.G1}, gen2 {GC.CollectionCount(2) - gc.G2}, paused {(GC.GetTotalPauseDuration() - gc.Pause).TotalSeconds:0.00} s, allocated {(GC.GetTotalAllocatedBytes() - gc.Alloc) / 1_000_000} MB");
        // A checkpoint that begins between the reset and the run's writes makes the first change of every page after it
        // log the whole page (a full-page image): the same run then writes several times the WAL, with the CPU that costs.
        Console.WriteLine($"  WAL during the billing run (the whole server): {runWal}");
        Console.WriteLine($"  JIT during the billing run: {jitted} methods compiled in {jit.TotalSeconds:0.00} s");
        if (allocations is not null) Console.WriteLine($"  Allocated during the billing run, by type (sampled, MB):{Environment.NewLine}{allocations.Top(15)}");
        foreach (var (phase, time) in bench.LastProfile!.Phases)
            Console.WriteLine($"  {phase,-55} {time.TotalSeconds,7:0.00} s  {time / run,6:P0}");
    }
}
finally
{
    if (keep) Console.WriteLine($"kept database {bench.Database}");
    else await bench.CleanupAsync();
}

/// <summary>The server's WAL counters (pg_stat_wal) and its checkpoints so far (pg_stat_bgwriter).</summary>
internal sealed record Wal(long Records, long FullPageImages, decimal Bytes, long Checkpoints, string Lsn)
{
    public static async Task<Wal> NowAsync()
    {
        await using var c = new Npgsql.NpgsqlConnection(BillingRunBenchmark.Admin("postgres") + ";Pooling=false");
        await c.OpenAsync();
        await using var cmd = new Npgsql.NpgsqlCommand(
            "SELECT w.wal_records, w.wal_fpi, w.wal_bytes, b.checkpoints_timed + b.checkpoints_req, pg_current_wal_lsn()::text FROM pg_stat_wal w, pg_stat_bgwriter b", c);
        await using var r = await cmd.ExecuteReaderAsync();
        await r.ReadAsync();
        return new Wal(r.GetInt64(0), r.GetInt64(1), r.GetDecimal(2), r.GetInt64(3), r.GetString(4));
    }

    public string Since(Wal before) =>
        $"{Records - before.Records} records, {FullPageImages - before.FullPageImages} full-page images, " +
        $"{(Bytes - before.Bytes) / 1_000_000m:0} MB, {Checkpoints - before.Checkpoints} checkpoints begun (LSN {before.Lsn} to {Lsn})";
}

/// <summary>CPU time used so far by this process and by the PostgreSQL backends serving the benchmark's database (same machine).</summary>
internal sealed record Cpu(TimeSpan Process, IReadOnlyDictionary<int, TimeSpan> Backends)
{
    public static async Task<Cpu> NowAsync(string database)
    {
        await using var c = new Npgsql.NpgsqlConnection(BillingRunBenchmark.Admin("postgres") + ";Pooling=false");
        await c.OpenAsync();
        await using var cmd = new Npgsql.NpgsqlCommand("SELECT pid FROM pg_stat_activity WHERE datname = @db", c);
        cmd.Parameters.AddWithValue("db", database);
        var pids = new List<int>();
        await using (var r = await cmd.ExecuteReaderAsync())
            while (await r.ReadAsync()) pids.Add(r.GetInt32(0));
        var backends = new Dictionary<int, TimeSpan>();
        foreach (var pid in pids)
        {
            try
            {
                // /proc/PID/stat: fields 14 and 15 (utime, stime) in clock ticks of 1/100 s, after the ")" closing the name.
                var stat = File.ReadAllText($"/proc/{pid}/stat");
                var f = stat[(stat.LastIndexOf(')') + 2)..].Split(' ');
                backends[pid] = TimeSpan.FromMilliseconds((long.Parse(f[11], System.Globalization.CultureInfo.InvariantCulture)
                    + long.Parse(f[12], System.Globalization.CultureInfo.InvariantCulture)) * 10);
            }
            catch (IOException) { } // the backend ended meanwhile
        }
        return new Cpu(System.Diagnostics.Process.GetCurrentProcess().TotalProcessorTime, backends);
    }

    public string Since(Cpu before)
    {
        var dotnet = Process - before.Process;
        var pg = Backends.Sum(b => (b.Value - before.Backends.GetValueOrDefault(b.Key)).TotalSeconds);
        return $".NET {dotnet.TotalSeconds:0.00} s + PostgreSQL {pg:0.00} s = {dotnet.TotalSeconds + pg:0.00} s";
    }
}

/// <summary>
/// What the process allocates, by type, from the runtime's own sampling (an AllocationTick event about every 100 KB
/// allocated, naming the type that crossed the mark): MP_BENCH_ALLOCATIONS=1. The sampling itself costs a little CPU.
/// </summary>
internal sealed class Allocations : System.Diagnostics.Tracing.EventListener
{
    private readonly System.Collections.Concurrent.ConcurrentDictionary<string, long> _bytes = new();

    protected override void OnEventSourceCreated(System.Diagnostics.Tracing.EventSource source)
    {
        // The GC keyword (0x1) at the verbose level is what turns AllocationTick on.
        if (source.Name == "Microsoft-Windows-DotNETRuntime")
            EnableEvents(source, System.Diagnostics.Tracing.EventLevel.Verbose, (System.Diagnostics.Tracing.EventKeywords)0x1);
    }

    protected override void OnEventWritten(System.Diagnostics.Tracing.EventWrittenEventArgs e)
    {
        if (!(e.EventName?.StartsWith("GCAllocationTick", StringComparison.Ordinal) ?? false) || e.PayloadNames is null) return;
        var type = e.Payload![e.PayloadNames.IndexOf("TypeName")] as string ?? "?";
        var amount = Convert.ToInt64(e.Payload[e.PayloadNames.IndexOf("AllocationAmount")], System.Globalization.CultureInfo.InvariantCulture);
        _bytes.AddOrUpdate(type, amount, (_, sum) => sum + amount);
    }

    public string Top(int n) => string.Join(Environment.NewLine, _bytes.OrderByDescending(b => b.Value).Take(n)
        .Select(b => $"    {b.Value / 1_000_000.0,7:0.0}  {b.Key}"));
}
