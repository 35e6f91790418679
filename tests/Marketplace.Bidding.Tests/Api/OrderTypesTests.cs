using System.Net;
using System.Net.Http.Json;
using System.Text.Json;
using Marketplace.Testing;
using static Marketplace.Bidding.Tests.Api.BiddingFixture;

namespace Marketplace.Bidding.Tests.Api;

/// <summary>Reserved, interruptible, gtt and amend through the API, on the real servers.</summary>
public sealed class OrderTypesTests(BiddingFixture fx) : IClassFixture<BiddingFixture>
{
    private static DateTimeOffset Hour(int hoursFromNow) =>
        new DateTimeOffset(DateTimeOffset.UtcNow.Ticks / TimeSpan.TicksPerHour * TimeSpan.TicksPerHour, TimeSpan.Zero).AddHours(hoursFromNow);

    private static string Status(JsonElement order) => order.GetProperty("status").GetString()!;

    private static string Reason(JsonElement order) => order.GetProperty("status_reason").GetString()!;

    [Fact]
    public async Task A_reserved_order_with_a_fixed_window_is_matched_for_exactly_that_window()
    {
        var model = NewModel();
        await fx.PublishOfferAsync(model, ask: 200);
        var start = Hour(3);

        var response = await PostOrderAsync(fx.Renter(Guid.NewGuid()),
            OrderBody(model, count: 2, type: "reserved", earliestStart: start, latestEnd: start.AddHours(2), duration: 7200));

        Assert.Equal(HttpStatusCode.Created, response.StatusCode);
        var order = await ReadAsync(response);
        Assert.Equal("matched", Status(order));
        Assert.Equal(start, order.GetProperty("match").GetProperty("start").GetDateTimeOffset());
        Assert.Equal(start.AddHours(2), order.GetProperty("match").GetProperty("end").GetDateTimeOffset());
        var id = order.GetProperty("id").GetString();
        var relayed = await Eventually.Get(() => Task.FromResult(fx.Relayed.FirstOrDefault(m => m.OrderId.ToString() == id)), m => true,
            what: "OrderMatched relayed");
        Assert.Equal("reserved", relayed.OrderType);
        Assert.Equal("gold", relayed.SlaLevel);
        Assert.False(relayed.Interruptible);
    }

    [Fact]
    public async Task A_flexible_reserved_order_starts_at_the_earliest_time_capacity_allows()
    {
        var model = NewModel();
        // The only offer is fully taken for the next two hours by an on-demand order.
        await fx.PublishOfferAsync(model, ask: 200, count: 4);
        var renter = fx.Renter(Guid.NewGuid());
        var busy = await ReadAsync(await PostOrderAsync(renter, OrderBody(model, count: 4, duration: 7200)));
        var busyEnd = busy.GetProperty("match").GetProperty("end").GetDateTimeOffset();

        var flexible = await ReadAsync(await PostOrderAsync(renter,
            OrderBody(model, count: 4, type: "reserved", earliestStart: Hour(1), latestEnd: Hour(8), duration: 3600)));

        Assert.Equal("matched", Status(flexible));
        Assert.Equal(busyEnd, flexible.GetProperty("match").GetProperty("start").GetDateTimeOffset());
    }

    [Fact]
    public async Task A_reserved_order_outside_every_offered_window_says_so_and_fills_when_such_an_offer_appears()
    {
        var model = NewModel();
        await fx.PublishOfferAsync(model, windowStart: Hour(-1), windowEnd: Hour(5));
        var renter = fx.Renter(Guid.NewGuid());

        var order = await ReadAsync(await PostOrderAsync(renter,
            OrderBody(model, type: "reserved", earliestStart: Hour(10), latestEnd: Hour(12), duration: 3600)));

        Assert.Equal("open", Status(order));
        Assert.Contains("the latest offered window ends at", Reason(order));
        var later = await fx.PublishOfferAsync(model, windowStart: Hour(9), windowEnd: Hour(20));
        var filled = await Eventually.Get(() => GetOrderAsync(renter, order.GetProperty("id").GetString()!), o => Status(o) == "matched",
            what: "standing reserved order matched");
        Assert.Equal(later.OfferId.ToString(), filled.GetProperty("match").GetProperty("offer_id").GetString());
        Assert.Equal(Hour(10), filled.GetProperty("match").GetProperty("start").GetDateTimeOffset());
    }

    [Fact]
    public async Task A_gtt_order_leaves_the_book_when_it_expires()
    {
        var model = NewModel();
        var renter = fx.Renter(Guid.NewGuid());
        var order = await ReadAsync(await PostOrderAsync(renter,
            OrderBody(model, timeInForce: "gtt", expiresAt: DateTimeOffset.UtcNow.AddSeconds(2))));
        Assert.Equal("open", Status(order));
        Assert.Equal("gtt", order.GetProperty("time_in_force").GetString());

        var expired = await Eventually.Get(() => GetOrderAsync(renter, order.GetProperty("id").GetString()!), o => Status(o) != "open",
            what: "gtt order expired");
        Assert.Equal("cancelled", Status(expired));
        Assert.StartsWith("expired: good-til-time ended at", Reason(expired));
        Assert.Contains($"no {model} offer is listed", Reason(expired));
    }

    [Fact]
    public async Task Amending_the_price_of_an_open_order_matches_it_at_the_ask()
    {
        var model = NewModel();
        await fx.PublishOfferAsync(model, ask: 235);
        var renter = fx.Renter(Guid.NewGuid());
        var order = await ReadAsync(await PostOrderAsync(renter, OrderBody(model, max: 210)));
        var id = order.GetProperty("id").GetString();
        Assert.Equal("open", Status(order));
        Assert.Contains("raise max_price_per_hour to 2.35 CNY/h", order.GetProperty("alternatives")[0].GetString());

        var wrongCurrency = await renter.PatchAsJsonAsync($"/v1/orders/{id}", new { max_price_per_hour = new { amount = 240, currency = "USD" } }, Json);
        Assert.Equal(HttpStatusCode.BadRequest, wrongCurrency.StatusCode);
        Assert.Equal(210, await fx.ScalarAsync<long>("SELECT max_price_amount FROM bidding.orders WHERE id = @id::uuid", new { id }));

        var amended = await renter.PatchAsJsonAsync($"/v1/orders/{id}", new { max_price_per_hour = new { amount = 240, currency = "CNY" } }, Json);
        Assert.Equal(HttpStatusCode.OK, amended.StatusCode);
        var body = await ReadAsync(amended);
        Assert.Equal("matched", Status(body));
        Assert.Equal(240, body.GetProperty("max_price_per_hour").GetProperty("amount").GetInt64());
        Assert.Equal(235, body.GetProperty("match").GetProperty("price_per_hour").GetProperty("amount").GetInt64());

        var again = await renter.PatchAsJsonAsync($"/v1/orders/{id}", new { max_price_per_hour = new { amount = 250, currency = "CNY" } }, Json);
        Assert.Equal(HttpStatusCode.Conflict, again.StatusCode);
        Assert.Equal(HttpStatusCode.NotFound, (await fx.Renter(Guid.NewGuid()).PatchAsJsonAsync($"/v1/orders/{id}",
            new { max_price_per_hour = new { amount = 250, currency = "CNY" } }, Json)).StatusCode);
    }

    [Fact]
    public async Task An_interruptible_bid_trades_at_the_floor_and_an_on_demand_order_preempts_it_after_the_notice()
    {
        var model = NewModel();
        var offer = await fx.PublishOfferAsync(model, ask: 300, count: 4, interruptible: true, floor: 120, noticeSeconds: 120);
        var spot = fx.Renter(Guid.NewGuid());
        var bid = await ReadAsync(await PostOrderAsync(spot, new
        {
            type = "interruptible", accelerator_model = model, accelerator_count = 4, duration_seconds = 7200,
            bid_per_hour = new { amount = 180, currency = "CNY" },
        }));
        Assert.Equal("matched", Status(bid));
        Assert.Equal(120, bid.GetProperty("match").GetProperty("price_per_hour").GetProperty("amount").GetInt64());
        Assert.True(bid.GetProperty("match").GetProperty("interruptible").GetBoolean());
        var bidId = bid.GetProperty("id").GetString()!;
        var matched = await Eventually.Get(() => Task.FromResult(fx.Relayed.FirstOrDefault(m => m.OrderId.ToString() == bidId)), m => true,
            what: "interruptible OrderMatched relayed");
        Assert.True(matched.Interruptible);
        Assert.Equal(120, matched.PreemptionNoticeSeconds);

        var before = DateTimeOffset.UtcNow;
        var urgent = await ReadAsync(await PostOrderAsync(fx.Renter(Guid.NewGuid()), OrderBody(model, count: 2, max: 300)));

        Assert.Equal("matched", Status(urgent));
        Assert.True(urgent.GetProperty("match").GetProperty("start").GetDateTimeOffset() >= before.AddSeconds(120), "starts after the notice");
        var preemption = await Eventually.Get(() => Task.FromResult(fx.Preemptions.FirstOrDefault(p => p.OrderId.ToString() == bidId)),
            p => true, what: "PreemptionRequested relayed");
        Assert.Equal(matched.MatchId, preemption.MatchId);
        Assert.Equal(120, preemption.NoticeSeconds);
        Assert.Contains("displaced by a higher-priority on_demand order", preemption.Reason);
        var victim = await GetOrderAsync(spot, bidId);
        Assert.StartsWith("preempted:", Reason(victim));
        Assert.Equal(offer.OfferId.ToString(), victim.GetProperty("match").GetProperty("offer_id").GetString());
    }

    [Fact]
    public async Task A_higher_interruptible_bid_outbids_the_lowest_and_pays_at_least_what_it_displaced()
    {
        var model = NewModel();
        await fx.PublishOfferAsync(model, ask: 300, count: 2, interruptible: true, floor: 100, noticeSeconds: 60);
        object Bid(long amount) => new
        {
            type = "interruptible", accelerator_model = model, accelerator_count = 2, duration_seconds = 3600,
            max_price_per_hour = new { amount, currency = "CNY" },
        };
        var low = await ReadAsync(await PostOrderAsync(fx.Renter(Guid.NewGuid()), Bid(130)));
        Assert.Equal("matched", Status(low));
        var equal = await ReadAsync(await PostOrderAsync(fx.Renter(Guid.NewGuid()), Bid(130)));
        Assert.Equal("open", Status(equal));

        var high = await ReadAsync(await PostOrderAsync(fx.Renter(Guid.NewGuid()), Bid(160)));

        Assert.Equal("matched", Status(high));
        var price = high.GetProperty("match").GetProperty("price_per_hour").GetProperty("amount").GetInt64();
        Assert.InRange(price, 130, 160);
        var lowId = low.GetProperty("id").GetString();
        var preemption = await Eventually.Get(() => Task.FromResult(fx.Preemptions.FirstOrDefault(p => p.OrderId.ToString() == lowId)),
            p => true, what: "lowest bid preempted");
        Assert.Contains("outbid", preemption.Reason);
    }

    [Fact]
    public async Task An_interruptible_bid_below_every_floor_says_by_how_much()
    {
        var model = NewModel();
        await fx.PublishOfferAsync(model, ask: 300, interruptible: true, floor: 150);
        await fx.PublishOfferAsync(model, ask: 250, interruptible: false);

        var order = await ReadAsync(await PostOrderAsync(fx.Renter(Guid.NewGuid()), new
        {
            type = "interruptible", accelerator_model = model, accelerator_count = 1, duration_seconds = 3600,
            bid_per_hour = new { amount = 100, currency = "CNY" },
        }));

        Assert.Equal("open", Status(order));
        Assert.Contains("best floor 1.50 CNY/h, your max 1.00 CNY/h (0.50 CNY/h short)", Reason(order));
        Assert.Contains("raise bid_per_hour to 1.50 CNY/h", order.GetProperty("alternatives")[0].GetString());
    }

    public static TheoryData<string, object> BadOrders => new()
    {
        { "expires_at", OrderBody("m", timeInForce: "gtt") },
        { "expires_at", OrderBody("m", timeInForce: "gtt", expiresAt: DateTimeOffset.UtcNow.AddMinutes(-1)) },
        { "expires_at", OrderBody("m", expiresAt: DateTimeOffset.UtcNow.AddHours(1)) },
        { "earliest_start", OrderBody("m", earliestStart: DateTimeOffset.UtcNow.AddHours(1)) },
        { "earliest_start", OrderBody("m", type: "reserved", earliestStart: DateTimeOffset.UtcNow.AddHours(-1)) },
        { "latest_end", OrderBody("m", type: "reserved", earliestStart: DateTimeOffset.UtcNow.AddHours(1),
            latestEnd: DateTimeOffset.UtcNow.AddHours(1.5), duration: 3600) },
        { "bid_per_hour", new { type = "on_demand", accelerator_model = "m", accelerator_count = 1, duration_seconds = 3600,
            max_price_per_hour = new { amount = 100, currency = "CNY" }, bid_per_hour = new { amount = 100, currency = "CNY" } } },
        { "bid_per_hour", new { type = "interruptible", accelerator_model = "m", accelerator_count = 1, duration_seconds = 3600 } },
    };

    [Theory]
    [MemberData(nameof(BadOrders))]
    public async Task Bad_new_fields_are_a_400_problem_naming_the_field_and_write_nothing(string field, object body)
    {
        var org = Guid.NewGuid();
        var response = await PostOrderAsync(fx.Renter(org), body);

        Assert.Equal(HttpStatusCode.BadRequest, response.StatusCode);
        var problem = await ReadAsync(response);
        Assert.True(problem.GetProperty("errors").TryGetProperty(field, out _), problem.ToString());
        Assert.Equal(0L, await fx.ScalarAsync<long>("SELECT count(*) FROM bidding.orders WHERE renter_org_id = @org", new { org }));
    }
}
