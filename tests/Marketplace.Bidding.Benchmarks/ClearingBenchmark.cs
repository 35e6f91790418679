using BenchmarkDotNet.Attributes;
using BenchmarkDotNet.Running;
using Marketplace.Bidding.Domain;

if (args.Contains("--profile"))
{
    // A quick look without BenchmarkDotNet: one clearing per order kind mix, next to the sort.
    var b = new ClearingBenchmark { Orders = 100_000, Offers = 10_000 };
    b.Setup();
    foreach (var (name, kinds) in new (string, OrderKind[])[]
             {
                 ("on_demand", [OrderKind.OnDemand]), ("reserved", [OrderKind.Reserved]),
                 ("on_demand+reserved", [OrderKind.OnDemand, OrderKind.Reserved]),
                 ("all", [OrderKind.OnDemand, OrderKind.Reserved, OrderKind.Interruptible]),
             })
    {
        var subset = b.OrdersOf(kinds);
        // Best of 5, by the wall clock and by the process's CPU time: on a shared machine the CPU time is the steadier.
        var process = System.Diagnostics.Process.GetCurrentProcess();
        (long Wall, double Cpu) Time(Action run)
        {
            (long Wall, double Cpu) best = (long.MaxValue, double.MaxValue);
            for (var i = 0; i < 5; i++)
            {
                process.Refresh();
                var cpu = process.TotalProcessorTime;
                var watch = System.Diagnostics.Stopwatch.StartNew();
                run();
                var wall = watch.ElapsedMilliseconds;
                process.Refresh();
                best = (Math.Min(best.Wall, wall), Math.Min(best.Cpu, (process.TotalProcessorTime - cpu).TotalMilliseconds));
            }
            return best;
        }
        ClearingResult? result = null;
        var clear = Time(() => result = Clearing.Clear(subset, b.OfferBook, ClearingBenchmark.Now));
        var sort = Time(() => b.SortOrders());
        Console.WriteLine($"{name,-20} {subset.Length,7} orders: best of 5 {clear.Wall,5} ms (CPU {clear.Cpu,5:0} ms), "
                          + $"{result!.Fills.Count} filled; sort of all 100k: {sort.Wall,4} ms (CPU {sort.Cpu,4:0} ms)");
    }
    return;
}
BenchmarkRunner.Run<ClearingBenchmark>(args: args);

/// <summary>
/// Clearing one market's book of 100k orders against 10k offers, next to Array.Sort of the same 100k orders by the
/// book's priority (the floor any price-time engine pays). The ratio of the two means is the figure in docs/performance.md.
/// </summary>
[MemoryDiagnoser]
public class ClearingBenchmark
{
    internal static readonly DateTimeOffset Now = new(2026, 12, 1, 10, 0, 0, TimeSpan.Zero);
    private static readonly string[] Regions = ["cn-east", "cn-north", "cn-south"];

    private BookOrder[] _orders = [];
    private OfferCandidate[] _offers = [];
    private BookOrder[] _scratch = [];

    [Params(100_000)] public int Orders { get; set; }
    [Params(10_000)] public int Offers { get; set; }

    internal BookOrder[] OrdersOf(OrderKind[] kinds) => [.. _orders.Where(o => kinds.Contains(o.Kind))];

    internal OfferCandidate[] OfferBook => _offers;

    [GlobalSetup]
    public void Setup()
    {
        var random = new Random(42);
        // Ids from the seeded generator: the same book every run, so every run clears it the same way.
        Guid NextId()
        {
            var bytes = new byte[16];
            random.NextBytes(bytes);
            return new Guid(bytes);
        }
        _offers = [.. Enumerable.Range(0, Offers).Select(i => new OfferCandidate(
            NextId(), "h100-sxm", Regions[random.Next(Regions.Length)], "CN", random.Next(1, 17),
            Now.AddHours(-random.Next(0, 4)), Now.AddHours(random.Next(8, 72)), random.Next(150, 400), "CNY",
            3600, Now.AddMinutes(-random.Next(0, 10_000)), [])
        {
            InterruptibleAllowed = random.Next(2) == 0,
            InterruptibleFloorAmount = random.Next(50, 150),
            PreemptionNoticeSeconds = 300,
        })];
        // A realistic mix: mostly on-demand, a fifth reserved (half of them flexible), a tenth interruptible; a third pin a region.
        _orders = [.. Enumerable.Range(0, Orders).Select(i =>
        {
            var roll = random.Next(10);
            var kind = roll < 7 ? OrderKind.OnDemand : roll < 9 ? OrderKind.Reserved : OrderKind.Interruptible;
            var hours = random.Next(1, 9);
            var start = kind == OrderKind.Reserved ? Now.AddHours(random.Next(1, 24)) : Now;
            var slack = kind == OrderKind.Reserved && random.Next(2) == 0 ? random.Next(1, 12) : 0;
            return new BookOrder(NextId(), kind, "h100-sxm", random.Next(1, 9),
                kind == OrderKind.Interruptible ? random.Next(40, 200) : random.Next(150, 450), "CNY",
                random.Next(3) == 0 ? Regions[random.Next(Regions.Length)] : null, null,
                start, start.AddHours(hours + slack), hours * 3600L, Now.AddSeconds(-random.Next(0, 100_000)));
        })];
        _scratch = new BookOrder[_orders.Length];
        var result = Clearing.Clear(_orders, _offers, Now);
        Console.WriteLine($"// book: {Orders} orders, {Offers} offers → {result.Fills.Count} filled, {result.Unfilled.Count} unfilled");
    }

    [Benchmark(Baseline = true, Description = "Array.Sort 100k orders by priority")]
    public BookOrder[] SortOrders()
    {
        Array.Copy(_orders, _scratch, _orders.Length);
        Array.Sort(_scratch, Priority);
        return _scratch;
    }

    [Benchmark(Description = "Clear 100k orders against 10k offers")]
    public ClearingResult ClearBook() => Clearing.Clear(_orders, _offers, Now);

    private static readonly Comparison<BookOrder> Priority = (x, y) =>
    {
        var c = (x.Kind == OrderKind.Interruptible).CompareTo(y.Kind == OrderKind.Interruptible);
        if (c != 0) return c;
        c = y.LimitAmount.CompareTo(x.LimitAmount);
        if (c != 0) return c;
        c = x.PlacedAt.CompareTo(y.PlacedAt);
        return c != 0 ? c : x.Id.CompareTo(y.Id);
    };
}
