using BenchmarkDotNet.Running;

// dotnet run -c Release --project tests/Marketplace.Scheduling.Benchmarks -- --filter '*'
BenchmarkSwitcher.FromAssembly(typeof(Marketplace.Scheduling.Benchmarks.PlacementBenchmarks).Assembly).Run(args);
