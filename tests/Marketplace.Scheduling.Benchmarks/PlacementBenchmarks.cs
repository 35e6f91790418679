using BenchmarkDotNet.Attributes;
using Marketplace.Scheduling.Domain;

namespace Marketplace.Scheduling.Benchmarks;

/// <summary>
/// Placement decisions on a synthetic 100,000-GPU fleet (pure Domain code, no I/O): 12,500 nodes of 8 GPUs in 10 clusters
/// of 1,250 nodes on InfiniBand, NVLink domains of 9 nodes (NVL72), about 55% of the GPUs busy in the wanted window,
/// 1% of the nodes unhealthy and 1% in maintenance. One operation = one placement decision over the whole fleet.
/// </summary>
[MemoryDiagnoser]
[Config(typeof(ShortInProcess))]
public class PlacementBenchmarks
{
    private CandidateNode[] _fleet = [];

    [Params(1, 8, 64, 512)]
    public int Gpus { get; set; }

    [GlobalSetup]
    public void Setup() => _fleet = Fleet(100_000, seed: 42);

    [Benchmark]
    public PlacementResult Place() => Placement.Place(_fleet, new PlacementRequest(Gpus));

    public static CandidateNode[] Fleet(int gpus, int seed)
    {
        var random = new Random(seed);
        var nodes = new CandidateNode[gpus / 8];
        for (var n = 0; n < nodes.Length; n++)
        {
            var cluster = new Guid(n / 1250 + 1, 0, 0, new byte[8]);
            var node = Guid.NewGuid();
            // A third of the nodes whole and free, a third full, a third partly used: a lived-in fleet.
            var busy = (n % 3) switch { 0 => 0, 1 => 8, _ => random.Next(1, 8) };
            var slots = Enumerable.Range(0, 8).Select(i => new SlotState(Guid.NewGuid(), node, i, i < busy)).ToList();
            nodes[n] = new CandidateNode(node, cluster, $"nvl-{n % 1250 / 9}", "infiniband", slots,
                Healthy: random.Next(100) != 0, Verified: true, InMaintenance: random.Next(100) == 0);
        }
        return nodes;
    }
}
