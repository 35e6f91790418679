using Marketplace.Testing;
using Xunit;
using Xunit.Abstractions;

namespace Marketplace.Proof.Tests;

/// <summary>
/// Every service as two processes at once (gateway i routes to instance i of each service; the queues are shared, so
/// the instances compete for every message; both relay outboxes and run due work): the same load as the fault
/// scenarios leaves no duplicated effect anywhere. <c>infra/proof.sh scale</c> also runs it on one instance of each
/// and prints both throughputs.
/// </summary>
public sealed class ScaleOutTests(ITestOutputHelper output)
{
    [Fact]
    public async Task Every_service_as_two_instances_under_load_has_no_duplicated_effect()
    {
        var two = await RunAsync(instances: 2);
        if (!LoadProfile.CompareScale) return;
        var one = await RunAsync(instances: 1);
        var p = LoadProfile.Scale;
        output.WriteLine("");
        output.WriteLine($"| instances | offered | orders | filled/s | order → lease p50 | p95 | max |");
        output.WriteLine($"|---|---|---|---|---|---|---|");
        foreach (var (n, o) in new[] { (1, one), (2, two) })
            output.WriteLine($"| {n} | {p.OrdersPerSecond:0.#}/s × {p.LoadSeconds} s | {o.Orders} | {o.FilledPerSecond:0.0} | {o.P50Ms:0} ms | {o.P95Ms:0} ms | {o.MaxMs:0} ms |");
    }

    private async Task<Invariants.Outcome> RunAsync(int instances)
    {
        var profile = LoadProfile.Scale;
        await using var stack = await MarketplaceStack.StartAsync(new StackOptions { Instances = instances, Settings = LoadProfile.StackSettings() });
        var market = await FaultMarket.CreateAsync(stack, $"scale-{instances}", profile.Orders, profile.LoadSeconds / 2 + 2);
        var stream = market.StartLoad(profile.OrdersPerSecond);
        await Task.Delay(TimeSpan.FromSeconds(profile.LoadSeconds));
        var placements = await stream.StopAsync();
        var outcome = await Invariants.AssertAsync(market, stream, placements, output);
        output.WriteLine($"{instances} instance(s) of each service: {outcome}");

        // The instances really competed: every consumer queue had one consumer per instance of its service.
        var consumers = await ConsumerCountsAsync(stack);
        Assert.NotEmpty(consumers);
        Assert.All(consumers, q => Assert.True(q.Value == instances, $"{q.Key} has {q.Value} consumers"));
        if (instances > 1)
        {
            // And both did work: each instance of each service consumed messages.
            // (Listings and the gateway consume no messages; they serve the requests of their gateway.)
            foreach (var service in new[] { "Bidding", "Scheduling", "Billing" })
                for (var i = 0; i < instances; i++)
                    Assert.True(ConsumedCount(stack, service, i) > 0, $"{service} instance {i} consumed nothing");
        }
        return outcome;
    }

    private static async Task<Dictionary<string, long>> ConsumerCountsAsync(MarketplaceStack stack) =>
        (await stack.VirtualHost.QueuesAsync())
            .Where(q => !q.Name.EndsWith("_error", StringComparison.Ordinal) && !q.Name.EndsWith("_skipped", StringComparison.Ordinal)
                        && !q.Name.Contains("bus", StringComparison.OrdinalIgnoreCase))
            .GroupBy(q => q.Name).ToDictionary(g => g.Key, g => g.Max(q => q.Consumers));

    private static int ConsumedCount(MarketplaceStack stack, string service, int instance) =>
        stack.ReadLog(service, instance).Split('\n').Count(l => l.Contains("Consumed ", StringComparison.Ordinal));
}
