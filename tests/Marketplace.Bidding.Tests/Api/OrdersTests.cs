using System.Net;
using System.Net.Http.Json;
using Marketplace.Contracts;
using Marketplace.Testing;
using static Marketplace.Bidding.Tests.Api.BiddingFixture;

namespace Marketplace.Bidding.Tests.Api;

public sealed class OrdersTests(BiddingFixture fx) : IClassFixture<BiddingFixture>
{
    [Fact]
    public async Task An_order_matches_the_cheapest_offer_at_its_ask_and_OrderMatched_is_relayed()
    {
        var model = NewModel();
        await fx.PublishOfferAsync(model, ask: 250);
        var cheapest = await fx.PublishOfferAsync(model, ask: 235);
        var renter = Guid.NewGuid();

        var response = await PostOrderAsync(fx.Renter(renter), OrderBody(model, count: 2, max: 300));

        Assert.Equal(HttpStatusCode.Created, response.StatusCode);
        var order = await ReadAsync(response);
        var id = order.GetProperty("id").GetString()!;
        Assert.Equal("matched", order.GetProperty("status").GetString());
        Assert.Equal(renter.ToString(), order.GetProperty("renter_org_id").GetString());
        var match = order.GetProperty("match");
        Assert.Equal(cheapest.OfferId.ToString(), match.GetProperty("offer_id").GetString());
        Assert.Equal(235, match.GetProperty("price_per_hour").GetProperty("amount").GetInt64());
        Assert.Equal(TimeSpan.FromHours(1), match.GetProperty("end").GetDateTimeOffset() - match.GetProperty("start").GetDateTimeOffset());

        var relayed = await Eventually.Get(() => Task.FromResult(fx.Relayed.FirstOrDefault(m => m.OrderId.ToString() == id)),
            m => true, what: "OrderMatched relayed");
        Assert.Equal(cheapest.OfferId, relayed.OfferId);
        Assert.Equal(cheapest.ProviderOrgId, relayed.ProviderOrgId);
        Assert.Equal(cheapest.NodeIds, relayed.NodeIds);
        Assert.Equal(new Money(235, "CNY"), relayed.PricePerHour);
        Assert.Equal(2, relayed.AcceleratorCount);
        Assert.Equal("on_demand", relayed.OrderType);
        Assert.Equal(0L, await fx.ScalarAsync<long>("SELECT count(*) FROM bidding.outbox WHERE body->>'orderId' = @id", new { id }));

        var prices = await ReadAsync(await fx.Renter(renter).GetAsync($"/v1/market/{model}/prices"));
        Assert.Equal(235, prices.GetProperty("last_trade").GetProperty("price_per_hour").GetProperty("amount").GetInt64());
        Assert.Equal(235, prices.GetProperty("best_ask").GetProperty("amount").GetInt64());
    }

    [Fact]
    public async Task The_same_key_and_body_return_the_same_order_and_a_different_body_is_refused()
    {
        var model = NewModel();
        await fx.PublishOfferAsync(model);
        var renter = fx.Renter(Guid.NewGuid());
        var key = Guid.NewGuid().ToString();

        var first = await PostOrderAsync(renter, OrderBody(model), key);
        var again = await PostOrderAsync(renter, OrderBody(model), key);
        var changed = await PostOrderAsync(renter, OrderBody(model, count: 2), key);

        Assert.Equal(HttpStatusCode.Created, first.StatusCode);
        Assert.Equal(HttpStatusCode.OK, again.StatusCode);
        Assert.Equal((await ReadAsync(first)).GetProperty("id").GetString(), (await ReadAsync(again)).GetProperty("id").GetString());
        Assert.Equal(HttpStatusCode.UnprocessableEntity, changed.StatusCode);
        Assert.Equal("application/problem+json", changed.Content.Headers.ContentType?.MediaType);
        Assert.EndsWith("/idempotency-key-reused", (await ReadAsync(changed)).GetProperty("type").GetString());
        Assert.Equal(1L, await fx.ScalarAsync<long>("SELECT count(*) FROM bidding.orders WHERE accelerator_model = @model", new { model }));
        Assert.Equal(1L, await fx.ScalarAsync<long>("SELECT count(*) FROM bidding.matches m JOIN bidding.orders o ON o.id = m.order_id WHERE o.accelerator_model = @model", new { model }));
    }

    [Fact]
    public async Task A_max_below_the_best_ask_leaves_a_gtc_order_open_and_cancels_an_ioc_one_with_the_gap()
    {
        var model = NewModel();
        await fx.PublishOfferAsync(model, ask: 235);
        await fx.PublishOfferAsync(model, ask: 260);
        var renter = fx.Renter(Guid.NewGuid());

        var gtc = await ReadAsync(await PostOrderAsync(renter, OrderBody(model, max: 210, region: "cn-east")));
        var ioc = await ReadAsync(await PostOrderAsync(renter, OrderBody(model, max: 210, timeInForce: "ioc")));

        Assert.Equal("open", gtc.GetProperty("status").GetString());
        Assert.Equal($"no {model} offer in cn-east at or below 2.10 CNY/h; best ask 2.35 CNY/h, your max 2.10 CNY/h (0.25 CNY/h short)",
            gtc.GetProperty("status_reason").GetString());
        Assert.Equal(System.Text.Json.JsonValueKind.Null, gtc.GetProperty("match").ValueKind);
        Assert.Equal("cancelled", ioc.GetProperty("status").GetString());
        Assert.Contains("best ask 2.35 CNY/h, your max 2.10 CNY/h", ioc.GetProperty("status_reason").GetString());
    }

    [Fact]
    public async Task A_standing_gtc_order_fills_when_a_matching_offer_arrives_later()
    {
        var model = NewModel();
        var renter = fx.Renter(Guid.NewGuid());
        var placed = await ReadAsync(await PostOrderAsync(renter, OrderBody(model, count: 4, max: 300)));
        Assert.Equal("open", placed.GetProperty("status").GetString());
        Assert.Equal($"no {model} offer is listed at the moment", placed.GetProperty("status_reason").GetString());
        var id = placed.GetProperty("id").GetString()!;

        await fx.PublishOfferAsync(model, ask: 400);   // too expensive: still open, with the new reason
        var stillOpen = await GetOrderAsync(renter, id);
        Assert.Equal("open", stillOpen.GetProperty("status").GetString());
        Assert.Contains("best ask 4.00 CNY/h", stillOpen.GetProperty("status_reason").GetString());

        var offer = await fx.PublishOfferAsync(model, ask: 280);
        var filled = await GetOrderAsync(renter, id);
        Assert.Equal("matched", filled.GetProperty("status").GetString());
        Assert.Equal(offer.OfferId.ToString(), filled.GetProperty("match").GetProperty("offer_id").GetString());
        Assert.Equal(280, filled.GetProperty("match").GetProperty("price_per_hour").GetProperty("amount").GetInt64());
        await Eventually.True(() => Task.FromResult(fx.Relayed.Any(m => m.OrderId.ToString() == id)), what: "OrderMatched relayed");
    }

    [Fact]
    public async Task PlacementFailed_frees_the_capacity_and_returns_the_order_to_the_book_with_the_reason()
    {
        var model = NewModel();
        await fx.PublishOfferAsync(model, count: 1);
        var renter = fx.Renter(Guid.NewGuid());
        var order = await ReadAsync(await PostOrderAsync(renter, OrderBody(model)));
        var id = Guid.Parse(order.GetProperty("id").GetString()!);
        Assert.Equal("matched", order.GetProperty("status").GetString());
        var matchId = await fx.ScalarAsync<Guid>("SELECT id FROM bidding.matches WHERE order_id = @id", new { id });

        await fx.Bus.Publish(new PlacementFailed(matchId, id, "node n1 is unhealthy", DateTimeOffset.UtcNow));

        var reopened = await Eventually.Get(() => GetOrderAsync(renter, id.ToString()),
            o => o.GetProperty("status").GetString() == "open", what: "order back in the book");
        Assert.Equal("the match could not be placed: node n1 is unhealthy; back in the book", reopened.GetProperty("status_reason").GetString());
        Assert.Equal(System.Text.Json.JsonValueKind.Null, reopened.GetProperty("match").ValueKind);
        Assert.Equal("released", await fx.ScalarAsync<string>("SELECT state FROM bidding.matches WHERE id = @matchId", new { matchId }));
        // The capacity is free again: a moment later the order takes it again (WaitingOrdersTests).
    }

    [Fact]
    public async Task LeaseScheduled_fills_the_order_and_HoldRejected_cancels_it_with_the_reason()
    {
        var model = NewModel();
        var offer = await fx.PublishOfferAsync(model, count: 2);
        var renterOrg = Guid.NewGuid();
        var renter = fx.Renter(renterOrg);
        var order = await ReadAsync(await PostOrderAsync(renter, OrderBody(model, count: 2)));
        var id = Guid.Parse(order.GetProperty("id").GetString()!);
        var matchId = await fx.ScalarAsync<Guid>("SELECT id FROM bidding.matches WHERE order_id = @id", new { id });
        var leaseId = Guid.NewGuid();
        var now = DateTimeOffset.UtcNow;

        await fx.Bus.Publish(new LeaseScheduled(leaseId, id, matchId, renterOrg, offer.ProviderOrgId, model, 2, now, now.AddHours(1),
            new Money(235, "CNY"), [Guid.NewGuid(), Guid.NewGuid()], now));
        var filled = await Eventually.Get(() => GetOrderAsync(renter, id.ToString()),
            o => o.GetProperty("status").GetString() == "filled", what: "order filled");
        Assert.Equal(leaseId.ToString(), filled.GetProperty("lease_id").GetString());

        await fx.Bus.Publish(new HoldRejected(leaseId, id, renterOrg, "insufficient funds: 4.70 CNY needed, 1.00 CNY available", now));
        var cancelled = await Eventually.Get(() => GetOrderAsync(renter, id.ToString()),
            o => o.GetProperty("status").GetString() == "cancelled", what: "order cancelled");
        Assert.Equal("the wallet cannot cover the lease: insufficient funds: 4.70 CNY needed, 1.00 CNY available",
            cancelled.GetProperty("status_reason").GetString());
        Assert.Equal("matched", (await ReadAsync(await PostOrderAsync(renter, OrderBody(model, count: 2)))).GetProperty("status").GetString());
    }

    [Fact]
    public async Task Another_orgs_order_is_not_found()
    {
        var model = NewModel();
        var order = await ReadAsync(await PostOrderAsync(fx.Renter(Guid.NewGuid()), OrderBody(model)));
        var id = order.GetProperty("id").GetString();
        var stranger = fx.Renter(Guid.NewGuid());

        Assert.Equal(HttpStatusCode.NotFound, (await stranger.GetAsync($"/v1/orders/{id}")).StatusCode);
        Assert.Equal(HttpStatusCode.NotFound, (await stranger.DeleteAsync($"/v1/orders/{id}")).StatusCode);
        Assert.Equal("open", await fx.ScalarAsync<string>("SELECT status FROM bidding.orders WHERE id = @id::uuid", new { id }));
    }

    [Fact]
    public async Task An_open_order_can_be_cancelled_once_and_a_matched_one_not()
    {
        var model = NewModel();
        var renter = fx.Renter(Guid.NewGuid());
        var open = (await ReadAsync(await PostOrderAsync(renter, OrderBody(model)))).GetProperty("id").GetString();

        var cancel = await renter.DeleteAsync($"/v1/orders/{open}");
        Assert.Equal(HttpStatusCode.OK, cancel.StatusCode);
        Assert.Equal("cancelled", (await ReadAsync(cancel)).GetProperty("status").GetString());
        Assert.Equal(HttpStatusCode.Conflict, (await renter.DeleteAsync($"/v1/orders/{open}")).StatusCode);

        await fx.PublishOfferAsync(model);
        Assert.Equal("cancelled", (await GetOrderAsync(renter, open!)).GetProperty("status").GetString());
        var matched = (await ReadAsync(await PostOrderAsync(renter, OrderBody(model)))).GetProperty("id").GetString();
        Assert.Equal(HttpStatusCode.Conflict, (await renter.DeleteAsync($"/v1/orders/{matched}")).StatusCode);
    }

    public static TheoryData<string, object> BadOrders => new()
    {
        { "earliest_start", OrderBody("m", type: "reserved") },
        { "type", OrderBody("m", type: "spot") },
        { "accelerator_model", OrderBody(" ") },
        { "accelerator_count", OrderBody("m", count: 0) },
        { "accelerator_count", OrderBody("m", count: 65) },
        { "duration_seconds", OrderBody("m", duration: 59) },
        { "duration_seconds", OrderBody("m", duration: 30L * 24 * 3600 + 1) },
        { "max_price_per_hour.amount", OrderBody("m", max: 0) },
        { "max_price_per_hour.currency", OrderBody("m", currency: "cny") },
        { "time_in_force", OrderBody("m", timeInForce: "fok") },
        // Offers' regions and jurisdictions are lower-case words and ISO codes (Listings): another spelling never fills.
        { "region", OrderBody("m", region: "CN-EAST") },
        { "region", OrderBody("m", region: "cn east") },
        { "jurisdiction", new { type = "on_demand", accelerator_model = "m", accelerator_count = 1, duration_seconds = 3600,
            max_price_per_hour = new { amount = 300, currency = "CNY" }, jurisdiction = "cn" } },
        { "max_price_per_hour", new { type = "on_demand", accelerator_model = "m", accelerator_count = 1, duration_seconds = 3600 } },
    };

    [Theory]
    [MemberData(nameof(BadOrders))]
    public async Task Bad_input_is_a_400_problem_naming_the_field_and_writes_nothing(string field, object body)
    {
        var org = Guid.NewGuid();
        var response = await PostOrderAsync(fx.Renter(org), body);

        Assert.Equal(HttpStatusCode.BadRequest, response.StatusCode);
        Assert.Equal("application/problem+json", response.Content.Headers.ContentType?.MediaType);
        var problem = await ReadAsync(response);
        Assert.True(problem.GetProperty("errors").TryGetProperty(field, out _), problem.ToString());
        Assert.Equal(0L, await fx.ScalarAsync<long>("SELECT count(*) FROM bidding.orders WHERE renter_org_id = @org", new { org }));
    }

    [Fact]
    public async Task An_order_without_an_Idempotency_Key_is_a_400_problem()
    {
        var org = Guid.NewGuid();
        var response = await fx.Renter(org).PostAsJsonAsync("/v1/orders", OrderBody(NewModel()), Json);
        Assert.Equal(HttpStatusCode.BadRequest, response.StatusCode);
        Assert.Contains("Idempotency-Key", (await ReadAsync(response)).GetProperty("detail").GetString());
        Assert.Equal(0L, await fx.ScalarAsync<long>("SELECT count(*) FROM bidding.orders WHERE renter_org_id = @org", new { org }));
    }

    [Fact]
    public async Task A_provider_cannot_place_orders()
    {
        var response = await PostOrderAsync(fx.Factory.ClientFor(Guid.NewGuid(), "provider"), OrderBody(NewModel()));
        Assert.Equal(HttpStatusCode.Forbidden, response.StatusCode);
    }

    [Fact]
    public async Task Twenty_parallel_orders_against_eight_accelerators_match_exactly_eight()
    {
        var model = NewModel();
        var offer = await fx.PublishOfferAsync(model, count: 8);

        var responses = await Task.WhenAll(Enumerable.Range(0, 20).Select(_ =>
            PostOrderAsync(fx.Renter(Guid.NewGuid()), OrderBody(model, count: 1))));

        Assert.All(responses, r => Assert.Equal(HttpStatusCode.Created, r.StatusCode));
        var statuses = await Task.WhenAll(responses.Select(async r => (await ReadAsync(r)).GetProperty("status").GetString()));
        Assert.Equal(8, statuses.Count(s => s == "matched"));
        Assert.Equal(12, statuses.Count(s => s == "open"));
        Assert.Equal(8L, await fx.ScalarAsync<long>(
            "SELECT coalesce(sum(accelerator_count), 0) FROM bidding.matches WHERE offer_id = @id AND state = 'active'", new { id = offer.OfferId }));
    }
}
