using System.Net.Http.Json;
using System.Text.Json;
using Marketplace.Contracts;
using Marketplace.Testing;
using static Marketplace.Bidding.Tests.Api.BiddingFixture;

namespace Marketplace.Bidding.Tests.Api;

/// <summary>Another model as an alternative, preempted orders back in the book, offer changes and best-bid ticks.</summary>
public sealed class MarketBehaviourTests(BiddingFixture fx) : IClassFixture<BiddingFixture>
{
    private static DateTimeOffset Hour(int hoursFromNow) =>
        new DateTimeOffset(DateTimeOffset.UtcNow.Ticks / TimeSpan.TicksPerHour * TimeSpan.TicksPerHour, TimeSpan.Zero).AddHours(hoursFromNow);

    private static string Status(JsonElement order) => order.GetProperty("status").GetString()!;

    private static string Reason(JsonElement order) => order.GetProperty("status_reason").GetString()!;

    private static string Id(JsonElement order) => order.GetProperty("id").GetString()!;

    [Fact]
    public async Task An_unfilled_order_is_pointed_to_another_model_with_room_within_its_price()
    {
        // A currency of its own keeps the other tests' offers out of the suggestion.
        var (wanted, other, dearer) = (NewModel(), NewModel(), NewModel());
        await fx.PublishOfferAsync(wanted, ask: 500, currency: "NOK");
        await fx.PublishOfferAsync(other, ask: 280, count: 4, currency: "NOK");
        await fx.PublishOfferAsync(dearer, ask: 350, currency: "NOK");

        var order = await ReadAsync(await PostOrderAsync(fx.Renter(Guid.NewGuid()), OrderBody(wanted, count: 2, max: 300, currency: "NOK")));

        Assert.Equal("open", Status(order));
        Assert.Contains("best ask 5.00 NOK/h", Reason(order));
        Assert.Contains($"another model: {other} has 2 free at 2.80 NOK/h",
            order.GetProperty("alternatives").EnumerateArray().Select(a => a.GetString()));
    }

    private object Bid(string model, int count, long amount, string timeInForce = "gtc", long duration = 7200) => new
    {
        type = "interruptible", accelerator_model = model, accelerator_count = count, duration_seconds = duration,
        bid_per_hour = new { amount, currency = "CNY" }, time_in_force = timeInForce,
    };

    [Fact]
    public async Task A_preempted_gtc_interruptible_order_is_back_in_the_book_and_fills_again_after_its_notice()
    {
        var model = NewModel();
        await fx.PublishOfferAsync(model, ask: 300, count: 4, interruptible: true, floor: 100, noticeSeconds: 120);
        var spot = fx.Renter(Guid.NewGuid());
        var bid = await ReadAsync(await PostOrderAsync(spot, Bid(model, 4, 150)));
        var ioc = await ReadAsync(await PostOrderAsync(spot, Bid(model, 1, 140, timeInForce: "ioc")));
        Assert.Equal("matched", Status(bid));
        Assert.Equal("cancelled", Status(ioc));   // no room left: ioc orders do not rest

        var before = DateTimeOffset.UtcNow;
        var urgent = await ReadAsync(await PostOrderAsync(fx.Renter(Guid.NewGuid()), OrderBody(model, count: 2, max: 300)));
        Assert.Equal("matched", Status(urgent));

        var victim = await GetOrderAsync(spot, Id(bid));
        var requeuedId = victim.GetProperty("requeued_as").GetString()!;
        Assert.StartsWith("preempted:", Reason(victim));
        Assert.EndsWith($"back in the book as order {requeuedId}", Reason(victim));
        var requeued = await GetOrderAsync(spot, requeuedId);
        Assert.Equal("open", Status(requeued));
        Assert.Equal(Id(bid), requeued.GetProperty("requeued_from").GetString());
        Assert.Equal("interruptible", requeued.GetProperty("type").GetString());
        Assert.Equal(4, requeued.GetProperty("accelerator_count").GetInt32());
        Assert.Equal(150, requeued.GetProperty("max_price_per_hour").GetProperty("amount").GetInt64());
        var notBefore = requeued.GetProperty("not_before").GetDateTimeOffset();
        Assert.True(notBefore >= before.AddSeconds(120), "it waits for its predecessor's capacity to be taken back");

        // New supply: the requeued order fills, starting when the preempted lease's notice ends (never two leases at once).
        await fx.PublishOfferAsync(model, ask: 300, count: 4, interruptible: true, floor: 100);
        var filled = await GetOrderAsync(spot, requeuedId);
        Assert.Equal("matched", Status(filled));
        Assert.Equal(notBefore, filled.GetProperty("match").GetProperty("start").GetDateTimeOffset());
    }

    [Fact]
    public async Task A_withdrawn_offer_revokes_matches_not_started_returns_their_quantity_and_keeps_running_ones()
    {
        var model = NewModel();
        var offer = await fx.PublishOfferAsync(model, count: 4);
        var renter = fx.Renter(Guid.NewGuid());
        var running = await ReadAsync(await PostOrderAsync(renter, OrderBody(model, count: 2)));
        var later = await ReadAsync(await PostOrderAsync(renter,
            OrderBody(model, count: 2, type: "reserved", earliestStart: Hour(3), latestEnd: Hour(4), duration: 3600)));
        var laterIoc = await ReadAsync(await PostOrderAsync(renter,
            OrderBody(model, count: 2, type: "reserved", earliestStart: Hour(5), latestEnd: Hour(6), duration: 3600, timeInForce: "ioc")));
        Assert.All(new[] { running, later, laterIoc }, o => Assert.Equal("matched", Status(o)));
        var laterMatch = await fx.ScalarAsync<Guid>("SELECT id FROM bidding.matches WHERE order_id = @id::uuid", new { id = Id(later) });

        await fx.Bus.Publish(new OfferWithdrawn(offer.OfferId, offer.ProviderOrgId, DateTimeOffset.UtcNow));

        var revoked = await Eventually.Get(() => GetOrderAsync(renter, Id(later)), o => Status(o) == "cancelled", what: "match revoked");
        Assert.StartsWith($"offer {offer.OfferId} was withdrawn by its provider before the lease started; back in the book as order", Reason(revoked));
        Assert.Equal(JsonValueKind.Null, revoked.GetProperty("match").ValueKind);
        var requeued = await GetOrderAsync(renter, revoked.GetProperty("requeued_as").GetString()!);
        Assert.Equal("open", Status(requeued));
        Assert.Equal(Hour(3), requeued.GetProperty("earliest_start").GetDateTimeOffset());
        Assert.Contains($"no {model} offer is listed", Reason(requeued));   // cleared at once against what is left
        var iocAfter = await GetOrderAsync(renter, Id(laterIoc));
        Assert.Equal("cancelled", Status(iocAfter));
        Assert.EndsWith("not requeued (immediate-or-cancel, or its time ran out)", Reason(iocAfter));
        Assert.Equal(JsonValueKind.Null, iocAfter.GetProperty("requeued_as").ValueKind);
        Assert.Equal("matched", Status(await GetOrderAsync(renter, Id(running))));   // started: Scheduling's lease stands

        // Scheduling is asked to end the lease before it starts, without notice.
        var request = await Eventually.Get(() => Task.FromResult(fx.Preemptions.FirstOrDefault(p => p.MatchId == laterMatch)), p => true,
            what: "PreemptionRequested for the revoked match");
        Assert.Equal(0, request.NoticeSeconds);
    }

    [Fact]
    public async Task Less_capacity_revokes_the_latest_match_that_no_longer_fits_and_its_order_waits_in_the_book()
    {
        var model = NewModel();
        var offer = await fx.PublishOfferAsync(model, count: 4);
        var renter = fx.Renter(Guid.NewGuid());
        var first = await ReadAsync(await PostOrderAsync(renter,
            OrderBody(model, count: 2, type: "reserved", earliestStart: Hour(2), latestEnd: Hour(3), duration: 3600)));
        var second = await ReadAsync(await PostOrderAsync(renter,
            OrderBody(model, count: 2, type: "reserved", earliestStart: Hour(2), latestEnd: Hour(3), duration: 3600)));

        await fx.PublishOfferAsync(model, count: 2, offerId: offer.OfferId);

        Assert.Equal("matched", Status(await GetOrderAsync(renter, Id(first))));
        var revoked = await GetOrderAsync(renter, Id(second));
        Assert.Equal("cancelled", Status(revoked));
        Assert.StartsWith($"offer {offer.OfferId} reduced its capacity before the lease started", Reason(revoked));
        var requeued = await GetOrderAsync(renter, revoked.GetProperty("requeued_as").GetString()!);
        Assert.Equal("open", Status(requeued));
        Assert.Contains("the most free in one offer is 0", Reason(requeued));
        Assert.Equal(2L, await fx.ScalarAsync<long>(
            "SELECT coalesce(sum(accelerator_count), 0) FROM bidding.matches WHERE offer_id = @id AND state = 'active'", new { id = offer.OfferId }));
    }

    [Fact]
    public async Task A_resting_order_that_raises_the_best_bid_ticks_and_so_does_its_cancellation()
    {
        var model = NewModel();
        await fx.PublishOfferAsync(model, ask: 400);
        var renter = fx.Renter(Guid.NewGuid());
        var low = await ReadAsync(await PostOrderAsync(renter, OrderBody(model, max: 200, region: "cn-east")));
        var high = await ReadAsync(await PostOrderAsync(renter, OrderBody(model, max: 250, region: "cn-east")));
        Assert.Equal("open", Status(high));

        var market = $"{model}/cn";
        await Eventually.True(() => Task.FromResult(fx.Ticks.Any(t => t.Market == market && t.BestBid?.Amount == 250 && t.LastTrade is null)),
            what: "PriceTicked for the new best bid");
        Assert.Equal(400, fx.Ticks.First(t => t.Market == market && t.BestBid?.Amount == 250).BestAsk?.Amount);

        Assert.True((await renter.DeleteAsync($"/v1/orders/{Id(high)}")).IsSuccessStatusCode);
        await Eventually.True(() => Task.FromResult(fx.Ticks.Any(t => t.Market == market && t.BestBid?.Amount == 200)),
            what: "PriceTicked when the best bid was cancelled");

        var amended = await renter.PatchAsJsonAsync($"/v1/orders/{Id(low)}", new { max_price_per_hour = new { amount = 260, currency = "CNY" } }, Json);
        Assert.True(amended.IsSuccessStatusCode);
        await Eventually.True(() => Task.FromResult(fx.Ticks.Any(t => t.Market == market && t.BestBid?.Amount == 260)),
            what: "PriceTicked when an amend raised the best bid");
    }
}
