using System.Net.Http.Json;
using System.Text.Json.Nodes;
using Marketplace.Testing;
using Xunit;

namespace Marketplace.Bidding.Tests.Api;

/// <summary>
/// Known issue 8 end to end: the whole marketplace as processes on the real PostgreSQL and RabbitMQ. A two-GPU node whose
/// GPUs are booked so that one is free at every instant of a window but neither for all of it: before the fix Bidding
/// matched an order for that window and Scheduling refused it ("only 0 of 1 … slots are free"); now the order stays in the
/// book with Bidding's reason and nothing is matched, while a window in which both GPUs are free is still sold.
/// </summary>
public sealed class WholeWindowCapacityStackTests : IAsyncLifetime
{
    private const string Model = "mlu370";
    private const string Currency = "CNY";
    private MarketplaceStack _stack = null!;

    public async Task InitializeAsync() =>
        _stack = await MarketplaceStack.StartAsync(new Dictionary<string, string> { ["Market__MinLeaseSeconds"] = "60" });

    public async Task DisposeAsync() => await _stack.DisposeAsync();

    private static async Task<JsonNode> SendAsync(HttpClient client, HttpMethod method, string path, object? body = null, bool idempotent = false)
    {
        using var request = new HttpRequestMessage(method, path) { Content = body is null ? null : JsonContent.Create(body) };
        if (idempotent) request.Headers.Add("Idempotency-Key", Guid.NewGuid().ToString());
        using var response = await client.SendAsync(request);
        var text = await response.Content.ReadAsStringAsync();
        Assert.True(response.IsSuccessStatusCode, $"{method} {path} → {(int)response.StatusCode}: {text}");
        return JsonNode.Parse(text)!;
    }

    private static Task<JsonNode> Get(HttpClient client, string path) => SendAsync(client, HttpMethod.Get, path);

    private async Task<HttpClient> OrgAsync(HttpClient admin, string role)
    {
        var org = await SendAsync(admin, HttpMethod.Post, "/v1/orgs", new { name = "whole window " + role, roles = new[] { role } });
        var key = await SendAsync(admin, HttpMethod.Post, $"/v1/orgs/{org["id"]}/api-keys", new { name = "test" });
        return _stack.Client((string)key["key"]!);
    }

    private static Task<JsonNode> ReserveAsync(HttpClient renter, string region, DateTimeOffset start, DateTimeOffset end, int count = 1) =>
        SendAsync(renter, HttpMethod.Post, "/v1/orders", new
        {
            type = "reserved", accelerator_model = Model, accelerator_count = count, region,
            duration_seconds = (long)(end - start).TotalSeconds, earliest_start = start, latest_end = end,
            max_price_per_hour = new { amount = 600, currency = Currency },
        }, idempotent: true);

    /// <summary>Waits until Scheduling booked the order and Bidding heard of it; returns the lease's slot ids.</summary>
    private static async Task<(string LeaseId, string[] Slots)> LeaseAsync(HttpClient renter, JsonNode order)
    {
        Assert.Equal("matched", (string?)order["status"]);
        var filled = await Eventually.Get(async () => (JsonNode?)await Get(renter, $"/v1/orders/{order["id"]}"),
            o => (string?)o["status"] is not ("matched" or "open"), what: $"order {order["id"]} placed");
        Assert.True((string?)filled["status"] == "filled", filled.ToJsonString());
        var lease = await Get(renter, $"/v1/leases/{filled["lease_id"]}");
        return ((string)lease["id"]!, [.. lease["slots"]!.AsArray().Select(s => (string)s!["slot_id"]!)]);
    }

    private static async Task<int> FreeAsync(HttpClient client, string region, DateTimeOffset start, DateTimeOffset end)
    {
        var depth = await Get(client, $"/v1/market/{Model}/depth?region={region}&currency={Currency}"
            + $"&window_start={Uri.EscapeDataString(start.ToString("O"))}&window_end={Uri.EscapeDataString(end.ToString("O"))}");
        return depth["asks"]!.AsArray().Sum(a => (int)a!["accelerators"]!);
    }

    [Fact]
    public async Task A_fragmented_offer_no_longer_yields_a_match_that_Scheduling_refuses()
    {
        using var admin = _stack.Client(MarketplaceStack.AdminKey);
        var provider = await OrgAsync(admin, "provider");
        var renter = await OrgAsync(admin, "renter");
        await SendAsync(renter, HttpMethod.Post, "/v1/wallet/top-ups", new { amount = new { amount = 500_000, currency = Currency } }, idempotent: true);
        await Eventually.True(async () => (await Get(renter, "/v1/wallet"))["balances"]!.AsArray()
            .Any(b => (string?)b!["currency"] == Currency && (long)b["available"]!["amount"]! >= 500_000), what: "the wallet credited");

        var region = "ww" + Guid.NewGuid().ToString("N")[..6].Replace('0', 'a').Replace('1', 'b') + "-east";
        var cluster = await SendAsync(provider, HttpMethod.Post, "/v1/clusters", new { name = region, region, jurisdiction = "CN" });
        var node = await SendAsync(provider, HttpMethod.Post, $"/v1/clusters/{cluster["id"]}/nodes",
            new { hostname = region + "-0", accelerator_model = Model, accelerator_count = 2 });
        var now = DateTimeOffset.UtcNow;
        await SendAsync(provider, HttpMethod.Post, "/v1/offers", new
        {
            cluster_id = cluster["id"], node_ids = new[] { node["id"] }, window_start = now.AddMinutes(-1), window_end = now.AddHours(6),
            ask_per_hour = new { amount = 500, currency = Currency }, min_lease_seconds = 60,
        }, idempotent: true);
        var s = new DateTimeOffset(now.AddMinutes(10).Ticks / TimeSpan.TicksPerMinute * TimeSpan.TicksPerMinute, TimeSpan.Zero);
        await Eventually.True(async () => await FreeAsync(renter, region, s, s.AddMinutes(1)) == 2, what: "the offer in the market");

        // Both GPUs from s to s+20 min; then the first lease is cancelled, so only one GPU stays booked then.
        var (firstLease, firstSlots) = await LeaseAsync(renter, await ReserveAsync(renter, region, s, s.AddMinutes(20)));
        var (_, keptSlots) = await LeaseAsync(renter, await ReserveAsync(renter, region, s, s.AddMinutes(20)));
        await SendAsync(renter, HttpMethod.Post, $"/v1/leases/{firstLease}/cancel", new { });
        await Eventually.True(async () => await FreeAsync(renter, region, s, s.AddMinutes(20)) == 1, what: "the cancelled lease's GPU back");
        // s+30 to s+60 min: Scheduling takes the lowest free GPU, the one the cancelled lease had.
        var (_, lateSlots) = await LeaseAsync(renter, await ReserveAsync(renter, region, s.AddMinutes(30), s.AddMinutes(60)));
        Assert.Equal(firstSlots, lateSlots);
        Assert.NotEqual(keptSlots, lateSlots);

        // s+10 to s+40 min: a GPU is free at every instant (the peak is 1 of 2), but no GPU for all 30 minutes.
        var straddling = await ReserveAsync(renter, region, s.AddMinutes(10), s.AddMinutes(40));
        Assert.Equal("open", (string?)straddling["status"]);
        Assert.Contains("the most free in one offer is 0", (string?)straddling["status_reason"]);
        Assert.Null(straddling["match"]);

        // s+20 to s+30 min both GPUs are free: a gang of two is sold and placed.
        var (_, gangSlots) = await LeaseAsync(renter, await ReserveAsync(renter, region, s.AddMinutes(20), s.AddMinutes(30), count: 2));
        Assert.Equal(2, gangSlots.Distinct().Count());

        // The straddling order was never handed to Scheduling: no refusal came back.
        var again = await Get(renter, $"/v1/orders/{straddling["id"]}");
        Assert.Equal("open", (string?)again["status"]);
        Assert.DoesNotContain("slots are free", (string?)again["status_reason"]);
    }
}
