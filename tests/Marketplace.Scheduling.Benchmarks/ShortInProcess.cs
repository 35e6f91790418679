using BenchmarkDotNet.Configs;
using BenchmarkDotNet.Jobs;
using BenchmarkDotNet.Toolchains.InProcess.Emit;

namespace Marketplace.Scheduling.Benchmarks;

/// <summary>
/// 3 warm-up and 10 measured iterations, in process: on the shared 2-core machine BenchmarkDotNet's separate build of the
/// boilerplate project times out, and in-process is accurate enough for figures measured in microseconds and milliseconds.
/// </summary>
public sealed class ShortInProcess : ManualConfig
{
    public ShortInProcess() =>
        AddJob(Job.Default.WithWarmupCount(3).WithIterationCount(10).WithToolchain(InProcessEmitToolchain.Instance));
}
