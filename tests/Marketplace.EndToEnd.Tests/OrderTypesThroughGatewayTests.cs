using Xunit;
using System.Net;
using System.Net.Http.Json;
using System.Text.Json.Nodes;
using Marketplace.Testing;
using static Marketplace.EndToEnd.Tests.ThinPathTests;

namespace Marketplace.EndToEnd.Tests;

/// <summary>
/// Every order type and time in force placed through the gateway with real API keys, asserting what the renter sees:
/// the order's state and explanation, and the lease Scheduling booked for it. Each test trades in its own region group
/// (a market of its own), so the tests neither see nor take each other's offers on the shared stack.
/// </summary>
[Collection(StackCollection.Name)]
public sealed class OrderTypesThroughGatewayTests(StackFixture fixture)
{
    private const string Model = "kunlun-r200";
    private const string Currency = "CNY";
    private static readonly SemaphoreSlim Gate = new(1, 1);
    private static (MarketplaceStack Stack, People People)? _shared;

    /// <summary>A provider and a renter whose wallet is funded through the Stripe stand-in, shared by the tests of this class.</summary>
    private sealed record People(HttpClient Provider, HttpClient Renter);

    private async Task<People> PeopleAsync()
    {
        await Gate.WaitAsync();
        try
        {
            if (_shared is { } s && ReferenceEquals(s.Stack, fixture.Stack)) return s.People;
            using var admin = fixture.Stack.Client(MarketplaceStack.AdminKey);
            var provider = await OrgClientAsync(admin, "order types provider", "provider");
            var renter = await OrgClientAsync(admin, "order types renter", "renter");
            using var topUp = new HttpRequestMessage(HttpMethod.Post, "/v1/wallet/top-ups")
            {
                Content = JsonContent.Create(new { amount = new { amount = 500_000, currency = Currency } }),
            };
            topUp.Headers.Add("Idempotency-Key", Guid.NewGuid().ToString());
            (await renter.SendAsync(topUp)).EnsureSuccessStatusCode();
            await Eventually.True(async () => Available(await GetJson(renter, "/v1/wallet")) >= 500_000,
                what: "the signed webhook to credit the renter's wallet");
            var people = new People(provider, renter);
            _shared = (fixture.Stack, people);
            return people;
        }
        finally
        {
            Gate.Release();
        }
    }

    private async Task<HttpClient> OrgClientAsync(HttpClient admin, string name, string role)
    {
        var org = await PostJson(admin, "/v1/orgs", new { name, roles = new[] { role } });
        var key = await PostJson(admin, $"/v1/orgs/{org["id"]}/api-keys", new { name = "test" });
        return fixture.Stack.Client((string)key["key"]!);
    }

    /// <summary>A cluster in a region group of its own with two 8-accelerator nodes of <see cref="Model"/>.</summary>
    private static async Task<(string Region, string ClusterId, string[] NodeIds)> ClusterAsync(HttpClient provider)
    {
        var region = "ot" + Guid.NewGuid().ToString("N")[..6].Replace('0', 'a').Replace('1', 'b') + "-east";
        var cluster = await PostJson(provider, "/v1/clusters", new { name = region, region, jurisdiction = "CN" });
        var nodes = new string[2];
        for (var i = 0; i < nodes.Length; i++)
            nodes[i] = (string)(await PostJson(provider, $"/v1/clusters/{cluster["id"]}/nodes",
                new { hostname = $"{region}-{i}", accelerator_model = Model, accelerator_count = 8 }))["id"]!;
        return (region, (string)cluster["id"]!, nodes);
    }

    private static async Task<string> OfferAsync(HttpClient provider, string clusterId, string[] nodeIds, long ask,
        DateTimeOffset? windowStart = null, bool interruptible = false, long? floor = null)
    {
        var start = windowStart ?? DateTimeOffset.UtcNow.AddMinutes(-1);
        var offer = await PostJson(provider, "/v1/offers", new
        {
            cluster_id = clusterId, node_ids = nodeIds, window_start = start, window_end = start.AddHours(6),
            ask_per_hour = new { amount = ask, currency = Currency }, min_lease_seconds = StackFixture.LeaseSeconds,
            interruptible_allowed = interruptible,
            interruptible_floor_per_hour = floor is { } f ? new { amount = f, currency = Currency } : null,
        });
        // The offer reaches the market through the bus: wait until the market's depth shows it, as a renter would see it.
        var from = Uri.EscapeDataString(start.AddMinutes(1).ToString("O"));
        var to = Uri.EscapeDataString(start.AddMinutes(2).ToString("O"));
        await Eventually.True(async () => (await GetJson(provider,
                $"/v1/market/{Model}/depth?region={offer["region"] ?? ""}&currency={Currency}&window_start={from}&window_end={to}"))["asks"]!
            .AsArray().Any(a => Amount(a!["price_per_hour"]) == ask), what: $"offer {offer["id"]} in the market's depth");
        return (string)offer["id"]!;
    }

    private static async Task<(HttpStatusCode Status, JsonNode Order)> PlaceAsync(HttpClient renter, object body)
    {
        using var request = new HttpRequestMessage(HttpMethod.Post, "/v1/orders") { Content = JsonContent.Create(body) };
        request.Headers.Add("Idempotency-Key", Guid.NewGuid().ToString());
        using var response = await renter.SendAsync(request);
        var text = await response.Content.ReadAsStringAsync();
        Assert.True(response.IsSuccessStatusCode, $"POST /v1/orders → {(int)response.StatusCode}: {text}");
        return (response.StatusCode, JsonNode.Parse(text)!);
    }

    /// <summary>Waits until Scheduling booked the order (it is filled with a lease) and returns the order and its lease.</summary>
    private static async Task<(JsonNode Order, JsonNode Lease)> FilledAsync(HttpClient renter, JsonNode order)
    {
        var filled = await Eventually.Get(async () => (JsonNode?)await GetJson(renter, $"/v1/orders/{order["id"]}"),
            o => (string?)o["status"] is "filled" or "cancelled", what: $"order {order["id"]} to be placed on a lease");
        Assert.True((string?)filled["status"] == "filled", filled.ToJsonString());
        var lease = await GetJson(renter, $"/v1/leases/{filled["lease_id"]}");
        Assert.Equal((string?)order["id"], (string?)lease["order_id"]);
        Assert.Contains((string?)lease["status"], new[] { "scheduled", "active" });
        return (filled, lease);
    }

    private static async Task<JsonNode> GetJson(HttpClient client, string path)
    {
        using var response = await client.GetAsync(path);
        var text = await response.Content.ReadAsStringAsync();
        Assert.True(response.IsSuccessStatusCode, $"GET {path} → {(int)response.StatusCode}: {text}");
        return JsonNode.Parse(text)!;
    }

    private static long Available(JsonNode wallet) => wallet["balances"]!.AsArray()
        .Where(b => (string?)b!["currency"] == Currency).Select(b => (long)b!["available"]!["amount"]!).FirstOrDefault();

    private static long Amount(JsonNode? money) => (long)money!["amount"]!;

    private static object Order(string type, string region, long max, int count = 2, long duration = StackFixture.LeaseSeconds,
        string? timeInForce = null, DateTimeOffset? earliestStart = null, DateTimeOffset? latestEnd = null, DateTimeOffset? expiresAt = null) => new
    {
        type, accelerator_model = Model, accelerator_count = count, duration_seconds = duration, region,
        max_price_per_hour = new { amount = max, currency = Currency }, time_in_force = timeInForce,
        earliest_start = earliestStart, latest_end = latestEnd, expires_at = expiresAt,
    };

    [Fact]
    public async Task An_on_demand_order_trades_at_the_ask_and_gets_a_lease_starting_now()
    {
        var people = await PeopleAsync();
        var (region, cluster, nodes) = await ClusterAsync(people.Provider);
        var offerId = await OfferAsync(people.Provider, cluster, nodes, ask: 500);
        var before = DateTimeOffset.UtcNow;

        var (status, order) = await PlaceAsync(people.Renter, Order("on_demand", region, max: 700));

        Assert.Equal(HttpStatusCode.Created, status);
        Assert.Equal("matched", (string?)order["status"]);
        Assert.Equal(offerId, (string?)order["match"]!["offer_id"]);
        Assert.Equal(500, Amount(order["match"]!["price_per_hour"]));
        var (_, lease) = await FilledAsync(people.Renter, order);
        Assert.Equal(2, (int)lease["accelerator_count"]!);
        Assert.InRange(DateTimeOffset.Parse((string)lease["start"]!), before.AddSeconds(-5), DateTimeOffset.UtcNow.AddSeconds(5));
    }

    [Fact]
    public async Task A_reserved_order_with_a_fixed_window_gets_a_lease_for_exactly_that_window()
    {
        var people = await PeopleAsync();
        var (region, cluster, nodes) = await ClusterAsync(people.Provider);
        await OfferAsync(people.Provider, cluster, nodes, ask: 500);
        var start = new DateTimeOffset(DateTimeOffset.UtcNow.AddMinutes(30).Ticks / TimeSpan.TicksPerMinute * TimeSpan.TicksPerMinute, TimeSpan.Zero);

        var (_, order) = await PlaceAsync(people.Renter,
            Order("reserved", region, max: 600, duration: 1800, earliestStart: start, latestEnd: start.AddMinutes(30)));

        Assert.Equal("matched", (string?)order["status"]);
        var (_, lease) = await FilledAsync(people.Renter, order);
        Assert.Equal("scheduled", (string?)lease["status"]);
        Assert.Equal(start, DateTimeOffset.Parse((string)lease["start"]!));
        Assert.Equal(start.AddMinutes(30), DateTimeOffset.Parse((string)lease["end"]!));
    }

    [Fact]
    public async Task A_flexible_reserved_order_starts_when_the_offered_window_opens()
    {
        var people = await PeopleAsync();
        var (region, cluster, nodes) = await ClusterAsync(people.Provider);
        var opens = new DateTimeOffset(DateTimeOffset.UtcNow.AddMinutes(40).Ticks / TimeSpan.TicksPerMinute * TimeSpan.TicksPerMinute, TimeSpan.Zero);
        await OfferAsync(people.Provider, cluster, nodes, ask: 500, windowStart: opens);

        var (_, order) = await PlaceAsync(people.Renter, Order("reserved", region, max: 600, duration: 1800,
            earliestStart: DateTimeOffset.UtcNow.AddMinutes(5), latestEnd: DateTimeOffset.UtcNow.AddHours(3)));

        Assert.Equal("matched", (string?)order["status"]);
        Assert.Equal(opens, DateTimeOffset.Parse((string)order["match"]!["start"]!));
        var (_, lease) = await FilledAsync(people.Renter, order);
        Assert.Equal(opens, DateTimeOffset.Parse((string)lease["start"]!));
    }

    [Fact]
    public async Task An_interruptible_bid_trades_at_the_providers_floor_and_gets_a_lease()
    {
        var people = await PeopleAsync();
        var (region, cluster, nodes) = await ClusterAsync(people.Provider);
        await OfferAsync(people.Provider, cluster, nodes, ask: 500, interruptible: true, floor: 200);

        var (_, order) = await PlaceAsync(people.Renter, new
        {
            type = "interruptible", accelerator_model = Model, accelerator_count = 4, duration_seconds = StackFixture.LeaseSeconds, region,
            bid_per_hour = new { amount = 300, currency = Currency },
        });

        Assert.Equal("matched", (string?)order["status"]);
        Assert.True((bool?)order["match"]!["interruptible"]);
        Assert.Equal(200, Amount(order["match"]!["price_per_hour"]));
        var (_, lease) = await FilledAsync(people.Renter, order);
        Assert.Equal(4, (int)lease["accelerator_count"]!);
        var prices = await GetJson(people.Renter, $"/v1/market/{Model}/prices?region={region}");
        Assert.Equal(200, Amount(prices["last_trade"]!["price_per_hour"]));
    }

    [Fact]
    public async Task An_unfilled_ioc_order_is_cancelled_at_once_with_the_reason_and_what_would_fill_it()
    {
        var people = await PeopleAsync();
        var (region, cluster, nodes) = await ClusterAsync(people.Provider);
        await OfferAsync(people.Provider, cluster, nodes, ask: 500);

        var (_, order) = await PlaceAsync(people.Renter, Order("on_demand", region, max: 450, timeInForce: "ioc"));

        Assert.Equal("cancelled", (string?)order["status"]);
        Assert.Contains("best ask 5.00 CNY/h, your max 4.50 CNY/h (0.50 CNY/h short)", (string?)order["status_reason"]);
        Assert.Contains(order["alternatives"]!.AsArray(), a => ((string?)a)!.StartsWith("raise max_price_per_hour to 5.00 CNY/h"));
        Assert.Null(order["match"]);
        Assert.Equal("cancelled", (string?)(await GetJson(people.Renter, $"/v1/orders/{order["id"]}"))["status"]);
    }

    [Fact]
    public async Task A_gtc_order_rests_with_its_reason_and_is_filled_when_a_matching_offer_appears()
    {
        var people = await PeopleAsync();
        var (region, cluster, nodes) = await ClusterAsync(people.Provider);

        var (_, order) = await PlaceAsync(people.Renter, Order("on_demand", region, max: 700, timeInForce: "gtc"));
        Assert.Equal("open", (string?)order["status"]);
        Assert.Contains($"no {Model} offer in {region}", (string?)order["status_reason"]);

        var offerId = await OfferAsync(people.Provider, cluster, nodes, ask: 650);

        var (filled, _) = await FilledAsync(people.Renter, order);
        Assert.Equal(offerId, (string?)filled["match"]!["offer_id"]);
        Assert.Equal(650, Amount(filled["match"]!["price_per_hour"]));
        Assert.Null(filled["status_reason"]);
    }

    [Fact]
    public async Task A_gtt_order_leaves_the_book_when_its_time_runs_out_and_says_why()
    {
        var people = await PeopleAsync();
        var (region, cluster, nodes) = await ClusterAsync(people.Provider);
        await OfferAsync(people.Provider, cluster, nodes, ask: 500);

        var (_, order) = await PlaceAsync(people.Renter,
            Order("on_demand", region, max: 400, timeInForce: "gtt", expiresAt: DateTimeOffset.UtcNow.AddSeconds(3)));
        Assert.Equal("open", (string?)order["status"]);
        Assert.Equal("gtt", (string?)order["time_in_force"]);

        var expired = await Eventually.Get(async () => (JsonNode?)await GetJson(people.Renter, $"/v1/orders/{order["id"]}"),
            o => (string?)o["status"] != "open", what: "the gtt order to expire");
        Assert.Equal("cancelled", (string?)expired["status"]);
        Assert.StartsWith("expired: good-til-time ended at", (string?)expired["status_reason"]);
        Assert.Contains("best ask 5.00 CNY/h, your max 4.00 CNY/h", (string?)expired["status_reason"]);
        Assert.Null(expired["lease_id"]);
    }

    [Fact]
    public async Task An_offer_of_part_of_a_node_is_leased_only_on_its_offered_slots()
    {
        var people = await PeopleAsync();
        var (region, cluster, nodes) = await ClusterAsync(people.Provider);
        var start = DateTimeOffset.UtcNow.AddMinutes(-1);
        // Four of the first node's eight accelerators; the other four stay the provider's.
        var offer = await PostJson(people.Provider, "/v1/offers", new
        {
            cluster_id = cluster, nodes = new[] { new { node_id = nodes[0], gpus = 4 } }, window_start = start, window_end = start.AddHours(6),
            ask_per_hour = new { amount = 520, currency = Currency }, min_lease_seconds = StackFixture.LeaseSeconds,
            interruptible_allowed = false,
        });
        Assert.Equal(4, (int)offer["accelerator_count"]!);
        var offered = offer["slots"]!.AsArray().Select(x => (string)x!["id"]!).ToHashSet();
        Assert.Equal(4, offered.Count);
        Assert.All(offer["slots"]!.AsArray(), x => Assert.Equal(nodes[0], (string?)x!["node_id"]));
        var from = Uri.EscapeDataString(start.AddMinutes(1).ToString("O"));
        var to = Uri.EscapeDataString(start.AddMinutes(2).ToString("O"));
        await Eventually.True(async () => (await GetJson(people.Provider,
                $"/v1/market/{Model}/depth?region={region}&currency={Currency}&window_start={from}&window_end={to}"))["asks"]!
            .AsArray().Any(a => Amount(a!["price_per_hour"]) == 520), what: "the part-of-a-node offer in the market's depth");

        // Two renters' orders of two accelerators each fill the offer: both leases stay inside the offered four.
        var (_, first) = await PlaceAsync(people.Renter, Order("on_demand", region, max: 600, count: 2));
        var (_, second) = await PlaceAsync(people.Renter, Order("on_demand", region, max: 600, count: 2));
        var (_, firstLease) = await FilledAsync(people.Renter, first);
        var (_, secondLease) = await FilledAsync(people.Renter, second);
        var leased = firstLease["slots"]!.AsArray().Concat(secondLease["slots"]!.AsArray()).Select(x => (string)x!["slot_id"]!).ToList();
        Assert.Equal(4, leased.Distinct().Count());
        Assert.Subset(offered, leased.ToHashSet());

        // The offer is sold out: a third order finds no capacity, though the node has four free accelerators.
        var (_, third) = await PlaceAsync(people.Renter, Order("on_demand", region, max: 600, count: 2));
        Assert.NotEqual("filled", (string?)third["status"]);
        Assert.Null(third["lease_id"]);
    }

    [Fact]
    public async Task A_verified_only_order_is_not_placed_on_unverified_nodes_and_says_so()
    {
        var people = await PeopleAsync();
        var (region, cluster, nodes) = await ClusterAsync(people.Provider); // registered by API, no agent: unverified
        await OfferAsync(people.Provider, cluster, nodes, ask: 500);

        var (_, order) = await PlaceAsync(people.Renter, new
        {
            type = "on_demand", accelerator_model = Model, accelerator_count = 2, duration_seconds = StackFixture.LeaseSeconds, region,
            max_price_per_hour = new { amount = 600, currency = Currency }, verified_only = true,
        });
        Assert.Equal(true, (bool?)order["verified_only"]);

        var refused = await Eventually.Get(async () => (JsonNode?)await GetJson(people.Renter, $"/v1/orders/{order["id"]}"),
            o => ((string?)o["status_reason"] ?? "").Contains("unverified"), what: "Scheduling to refuse the unverified nodes and say so");
        Assert.NotEqual("filled", (string?)refused["status"]);
        Assert.Null(refused["lease_id"]);
    }
}
