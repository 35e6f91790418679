using System.Net.Http.Json;
using System.Text.Json.Nodes;
using Dapper;
using Marketplace.Testing;
using Xunit;
using Xunit.Abstractions;

namespace Marketplace.Proof.Tests;

/// <summary>A marketplace of its own: these tests kill its processes.</summary>
public sealed class FaultFixture : IAsyncLifetime
{
    public MarketplaceStack Stack { get; private set; } = null!;

    public async Task InitializeAsync() =>
        Stack = await MarketplaceStack.StartAsync(new Dictionary<string, string> { ["Market__MinLeaseSeconds"] = ProofFixture.LeaseSeconds.ToString() });

    public async Task DisposeAsync() => await Stack.DisposeAsync();
}

[CollectionDefinition(Name)]
public sealed class FaultCollection : ICollectionFixture<FaultFixture>
{
    public const string Name = "faults";
}

/// <summary>Short fault scenarios under load: after each, the marketplace's invariants hold.</summary>
[Collection(FaultCollection.Name)]
public sealed class FaultTests(FaultFixture fixture, ITestOutputHelper output)
{
    private const string Model = "h100-sxm";
    private const string Currency = "CNY";

    private async Task<HttpClient> OrgAsync(HttpClient admin, string name, string role)
    {
        var org = await Api.PostJsonAsync(admin, "/v1/orgs", new { name, roles = new[] { role } });
        var key = await Api.PostJsonAsync(admin, $"/v1/orgs/{org["id"]}/api-keys", new { name = "fault" });
        return fixture.Stack.Client((string)key["key"]!);
    }

    [Fact]
    public async Task Scheduling_killed_mid_load_and_restarted_leaves_every_order_settled_and_every_invariant_true()
    {
        using var admin = fixture.Stack.Client(MarketplaceStack.AdminKey);
        var provider = await OrgAsync(admin, "fault provider", "provider");
        var renter = await OrgAsync(admin, "fault renter", "renter");
        var finance = await OrgAsync(admin, "fault finance", "finance");
        var cluster = await Api.PostJsonAsync(provider, "/v1/clusters", new { name = "fault", region = "cn-east", jurisdiction = "CN" });
        var nodes = new List<string>();
        for (var i = 0; i < 2; i++)
            nodes.Add((string)(await Api.PostJsonAsync(provider, $"/v1/clusters/{cluster["id"]}/nodes", new { hostname = $"fault-{i}", accelerator_model = Model, accelerator_count = 16 }))["id"]!);
        var now = DateTimeOffset.UtcNow;
        await Api.PostJsonAsync(provider, "/v1/offers", new
        {
            cluster_id = cluster["id"], node_ids = nodes, window_start = now.AddMinutes(-1), window_end = now.AddHours(2),
            ask_per_hour = new { amount = 1000, currency = Currency }, min_lease_seconds = ProofFixture.LeaseSeconds, interruptible_allowed = false,
        });
        await Api.PostJsonAsync(renter, "/v1/wallet/top-ups", new { amount = new { amount = 10_000_000, currency = Currency } }, Guid.NewGuid().ToString());
        await Eventually.True(async () => await Api.AvailableAsync(renter, Currency) >= 10_000_000, TimeSpan.FromSeconds(30), "the wallet to be funded");

        // 40 orders for 32 GPUs over about four seconds; Scheduling is killed after the first ten and back after the thirtieth.
        var orders = new List<string>();
        for (var i = 0; i < 40; i++)
        {
            if (i == 10) fixture.Stack.Kill("Scheduling");
            if (i == 30) await fixture.Stack.StartServiceAsync("Scheduling");
            var order = await Api.PostJsonAsync(renter, "/v1/orders", new
            {
                type = "on_demand", accelerator_model = Model, accelerator_count = 1, duration_seconds = ProofFixture.LeaseSeconds,
                max_price_per_hour = new { amount = 2000, currency = Currency },
            }, Guid.NewGuid().ToString());
            orders.Add((string)order["id"]!);
            await Task.Delay(100);
        }

        // Every order settles: filled, cancelled with a reason, or open in the book with a reason (capacity ran out).
        var final = new Dictionary<string, JsonNode>();
        await Eventually.True(async () =>
        {
            foreach (var id in orders)
                final[id] = (await Api.GetJsonAsync(renter, $"/v1/orders/{id}"))!;
            return final.Values.All(o => (string?)o["status"] is "filled" or "cancelled" or "open");
        }, TimeSpan.FromSeconds(90), "every order to settle after the restart");
        var byStatus = final.Values.GroupBy(o => (string)o["status"]!).ToDictionary(g => g.Key, g => g.Count());
        output.WriteLine("orders: " + string.Join(", ", byStatus.Select(kv => $"{kv.Key} {kv.Value}")));
        Assert.All(final.Values.Where(o => (string?)o["status"] != "filled"), o => Assert.False(string.IsNullOrEmpty((string?)o["status_reason"]), o.ToJsonString()));
        foreach (var reason in final.Values.Where(o => (string?)o["status"] != "filled").GroupBy(o => (string?)o["status_reason"]))
            output.WriteLine($"  {reason.Count()} × {reason.Key}");
        // How many fill is not asserted: a placement that loses a race is not retried on the offer's other free GPUs
        // (docs/reliability.md, known issue 5), so after the restart's burst some orders rest open with that reason.
        Assert.True(byStatus.GetValueOrDefault("filled") > 0, "no order filled");
        Assert.True(byStatus.GetValueOrDefault("filled") <= 32, "more leases than GPUs");

        using var db = fixture.Stack.Database.OpenAdmin();
        Assert.Equal(0, await db.ExecuteScalarAsync<long>("""
            SELECT count(*) FROM scheduling.bookings a JOIN scheduling.bookings b
              ON a.slot_id = b.slot_id AND a.ctid <> b.ctid AND a.during && b.during
            """));
        // One lease and one hold per filled order: nothing placed or charged twice.
        var filled = final.Where(kv => (string?)kv.Value["status"] == "filled").Select(kv => Guid.Parse(kv.Key)).ToArray();
        Assert.Equal(filled.Length, await db.ExecuteScalarAsync<long>("SELECT count(*) FROM scheduling.leases WHERE order_id = ANY(@filled)", new { filled }));
        await Eventually.True(async () => await db.ExecuteScalarAsync<long>(
            "SELECT count(*) FROM billing.holds h JOIN scheduling.leases l ON l.id = h.lease_id WHERE l.order_id = ANY(@filled)", new { filled }) == filled.Length,
            TimeSpan.FromSeconds(30), "a hold for every lease");
        foreach (var schema in State.Schemas)
            await Eventually.True(async () => await db.ExecuteScalarAsync<long>($"SELECT count(*) FROM {schema}.outbox") == 0,
                TimeSpan.FromSeconds(30), $"{schema}'s outbox to drain");
        var trial = await Api.GetJsonAsync(finance, "/v1/ledger/trial-balance");
        Assert.Equal(true, (bool?)trial!["balanced"]);
        await Task.Delay(TimeSpan.FromSeconds(6)); // the management API's queue counts lag by up to five seconds
        var errors = (await fixture.Stack.VirtualHost.QueueDepthsAsync()).Where(q => q.Key.EndsWith("_error", StringComparison.Ordinal) && q.Value > 0).ToList();
        Assert.True(errors.Count == 0, "messages in _error queues: " + string.Join(", ", errors.Select(e => $"{e.Key} {e.Value}")));
    }
}
