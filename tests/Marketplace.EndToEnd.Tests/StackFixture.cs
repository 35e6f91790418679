using Xunit;
using Marketplace.Testing;

namespace Marketplace.EndToEnd.Tests;

/// <summary>One running marketplace (every service a real process) shared by the end-to-end tests.</summary>
public sealed class StackFixture : IAsyncLifetime
{
    public const int LeaseSeconds = 60;

    public MarketplaceStack Stack { get; private set; } = null!;

    public async Task InitializeAsync() =>
        Stack = await MarketplaceStack.StartAsync(new Dictionary<string, string>
        {
            ["Market__MinLeaseSeconds"] = LeaseSeconds.ToString(),
            // The demo's silent node is noticed within seconds (production: 30 s).
            ["Listings__HeartbeatTimeoutSeconds"] = "6",
            ["Listings__HealthSweepSeconds"] = "1",
        });

    public async Task DisposeAsync() => await Stack.DisposeAsync();
}

[CollectionDefinition(Name)]
public sealed class StackCollection : ICollectionFixture<StackFixture>
{
    public const string Name = "stack";
}
