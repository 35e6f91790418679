using BenchmarkDotNet.Running;

BenchmarkSwitcher.FromAssembly(typeof(Marketplace.Billing.Benchmarks.BillingRunBenchmark).Assembly).Run(args);
