using System.Text.Json.Nodes;
using Marketplace.Testing;
using Xunit;

namespace Marketplace.Proof.Tests;

/// <summary>
/// One running marketplace (every service a real process, fresh database and virtual host) shared by the fuzzer, the
/// security matrices and the poison-message tests. Two worlds (A and B) of provider, renter and finance orgs, so each can
/// try the other's objects; world A has a filled order with a long active lease, so nothing moves during the tests.
/// </summary>
public sealed class ProofFixture : IAsyncLifetime
{
    public const int LeaseSeconds = 60;
    /// <summary>Low enough that a flood of one key is answered 429 quickly; the fuzzer spreads over several keys and retries.</summary>
    public const int PermitsPerSecond = 25;
    public const int Burst = 50;

    public MarketplaceStack Stack { get; private set; } = null!;
    public HttpClient Admin { get; private set; } = null!;
    public World A { get; private set; } = null!;
    public World B { get; private set; } = null!;
    /// <summary>Every API key this fixture created (with the bootstrap admin key): none may ever appear in a log.</summary>
    public List<string> Keys { get; } = [MarketplaceStack.AdminKey];

    public async Task InitializeAsync()
    {
        Stack = await MarketplaceStack.StartAsync(new Dictionary<string, string>
        {
            ["Market__MinLeaseSeconds"] = LeaseSeconds.ToString(),
            ["Gateway__RateLimit__PermitsPerSecond"] = PermitsPerSecond.ToString(),
            ["Gateway__RateLimit__Burst"] = Burst.ToString(),
        });
        Admin = Stack.Client(MarketplaceStack.AdminKey);
        A = await World.CreateAsync(this, "a");
        B = await World.CreateAsync(this, "b");
    }

    public async Task DisposeAsync() => await Stack.DisposeAsync();

    public async Task<(HttpClient Client, string OrgId, string Key)> OrgAsync(string name, params string[] roles)
    {
        var org = await Api.PostJsonAsync(Admin, "/v1/orgs", new { name, roles });
        var key = await Api.PostJsonAsync(Admin, $"/v1/orgs/{org["id"]}/api-keys", new { name = "proof" });
        var secret = (string)key["key"]!;
        lock (Keys) Keys.Add(secret);
        return (Stack.Client(secret), (string)org["id"]!, secret);
    }

    /// <summary>More keys of one org: rate limits are per key.</summary>
    public async Task<HttpClient> ExtraKeyAsync(string orgId)
    {
        var key = await Api.PostJsonAsync(Admin, $"/v1/orgs/{orgId}/api-keys", new { name = "proof extra" });
        var secret = (string)key["key"]!;
        lock (Keys) Keys.Add(secret);
        return Stack.Client(secret);
    }
}

[CollectionDefinition(Name)]
public sealed class ProofCollection : ICollectionFixture<ProofFixture>
{
    public const string Name = "proof";
}

/// <summary>One provider, renter and finance org with their objects.</summary>
public sealed record World(
    HttpClient Provider, HttpClient Renter, HttpClient Finance,
    string ProviderOrgId, string RenterOrgId, string FinanceOrgId, string RenterKeyId, string RenterKey,
    string ClusterId, string NodeId, string OfferId, string OpenOrderId, string FilledOrderId, string LeaseId)
{
    public const string Model = "mi300x";
    public const string Currency = "EUR";

    public static async Task<World> CreateAsync(ProofFixture f, string tag)
    {
        var (provider, providerOrg, _) = await f.OrgAsync($"proof provider {tag}", "provider");
        var (renter, renterOrg, _) = await f.OrgAsync($"proof renter {tag}", "renter");
        var (finance, financeOrg, _) = await f.OrgAsync($"proof finance {tag}", "finance");
        var renterKey = await Api.PostJsonAsync(f.Admin, $"/v1/orgs/{renterOrg}/api-keys", new { name = "to be looked at" });
        lock (f.Keys) f.Keys.Add((string)renterKey["key"]!);

        var cluster = await Api.PostJsonAsync(provider, "/v1/clusters", new { name = $"c-{tag}", region = "eu-west", jurisdiction = "DE" });
        var node = await Api.PostJsonAsync(provider, $"/v1/clusters/{cluster["id"]}/nodes", new { hostname = $"n-{tag}", accelerator_model = Model, accelerator_count = 8 });
        var now = DateTimeOffset.UtcNow;
        var offer = await Api.PostJsonAsync(provider, "/v1/offers", new
        {
            cluster_id = cluster["id"], node_ids = new[] { node["id"] }, window_start = now.AddMinutes(-1), window_end = now.AddHours(8),
            ask_per_hour = new { amount = 100, currency = Currency }, min_lease_seconds = ProofFixture.LeaseSeconds, interruptible_allowed = false,
        });

        // Funded through the Stripe stand-in: the signed webhook credits the wallet.
        await Api.PostJsonAsync(renter, "/v1/wallet/top-ups", new { amount = new { amount = 100_000, currency = Currency } }, Guid.NewGuid().ToString());
        await Eventually.True(async () => await Api.AvailableAsync(renter, Currency) >= 100_000, TimeSpan.FromSeconds(30), $"wallet {tag} to be credited");

        // Below the ask: rests in the book.
        var open = await Api.PostJsonAsync(renter, "/v1/orders", new
        {
            type = "on_demand", accelerator_model = Model, accelerator_count = 1, duration_seconds = ProofFixture.LeaseSeconds,
            max_price_per_hour = new { amount = 50, currency = Currency },
        }, Guid.NewGuid().ToString());
        // Three hours long: the lease stays active for the whole run, so nothing changes under the tests' feet.
        var filled = await Api.PostJsonAsync(renter, "/v1/orders", new
        {
            type = "on_demand", accelerator_model = Model, accelerator_count = 1, duration_seconds = 3 * 3600,
            max_price_per_hour = new { amount = 100, currency = Currency },
        }, Guid.NewGuid().ToString());
        var order = await Eventually.Get(() => Api.GetJsonAsync(renter, $"/v1/orders/{filled["id"]}"),
            o => (string?)o["status"] is "filled" or "cancelled", TimeSpan.FromSeconds(30), $"order {tag} to fill");
        Assert.True((string?)order["status"] == "filled", order.ToJsonString());
        var leaseId = (string)order["lease_id"]!;
        await Eventually.Get(() => Api.GetJsonAsync(renter, $"/v1/leases/{leaseId}"), l => (string?)l["status"] == "active",
            TimeSpan.FromSeconds(30), $"lease {tag} to start");

        return new World(provider, renter, finance, providerOrg, renterOrg, financeOrg, (string)renterKey["id"]!, (string)renterKey["key"]!,
            (string)cluster["id"]!, (string)node["id"]!, (string)offer["id"]!, (string)open["id"]!, (string)filled["id"]!, leaseId);
    }

    public HttpClient ClientFor(string role) => role switch
    {
        "renter" => Renter,
        "provider" => Provider,
        "finance" => Finance,
        _ => throw new ArgumentOutOfRangeException(nameof(role), role, null),
    };
}
