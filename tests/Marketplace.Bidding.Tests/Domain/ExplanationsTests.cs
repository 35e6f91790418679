using Marketplace.Bidding.Domain;

namespace Marketplace.Bidding.Tests.Domain;

/// <summary>Each cause of an unfilled order, with the nearest alternative a renter can act on.</summary>
public sealed class ExplanationsTests
{
    private static readonly DateTimeOffset Now = new(2026, 12, 1, 10, 0, 0, TimeSpan.Zero);

    private static BookOrder OnDemand(int count = 4, long max = 300, string? region = null, int hours = 1) =>
        new(Guid.NewGuid(), OrderKind.OnDemand, "h100-sxm", count, max, "CNY", region, null, Now, Now.AddHours(hours), hours * 3600L, Now);

    private static OfferCandidate Offer(long ask = 235, int capacity = 8, string region = "cn-east", params Booking[] bookings) =>
        new(Guid.NewGuid(), "h100-sxm", region, "CN", capacity, Now.AddDays(-1), Now.AddDays(1), ask, "CNY", 60, Now.AddHours(-1), bookings);

    [Fact]
    public void A_price_below_the_best_ask_names_the_gap_and_the_price_that_fills()
    {
        var e = Explanations.Explain(OnDemand(max: 210), [Offer(ask: 235), Offer(ask: 250)], Now);
        Assert.EndsWith("best ask 2.35 CNY/h, your max 2.10 CNY/h (0.25 CNY/h short)", e.Reason);
        Assert.Contains("raise max_price_per_hour to 2.35 CNY/h: 4 accelerators are free now at that price", e.Alternatives);
    }

    [Fact]
    public void No_capacity_now_points_to_the_earliest_window_with_room()
    {
        var busy = Offer(capacity: 4, bookings: new Booking(Now.AddHours(-1), Now.AddHours(3), 4));
        var e = Explanations.Explain(OnDemand(), [busy], Now);
        Assert.Contains("the most free in one offer is 0", e.Reason);
        Assert.Contains("start later: 4 accelerators are free at your price from 2026-12-01T13:00:00Z "
                        + "(a reserved order with earliest_start 2026-12-01T13:00:00Z)", e.Alternatives);
    }

    [Fact]
    public void A_region_constraint_says_how_many_offers_it_excludes_and_where_there_is_room()
    {
        var e = Explanations.Explain(OnDemand(region: "cn-south"), [Offer(region: "cn-east"), Offer(ask: 240, region: "cn-north")], Now);
        Assert.Equal("no h100-sxm offer in cn-south; your region/jurisdiction constraint excludes all 2 offers, which are in cn-east/CN, cn-north/CN",
            e.Reason);
        Assert.Contains("another region: cn-east has room at 2.35 CNY/h, cn-north has room at 2.40 CNY/h", e.Alternatives);
    }

    [Fact]
    public void Capacity_that_exists_but_not_as_one_gang_suggests_a_smaller_gang()
    {
        var e = Explanations.Explain(OnDemand(count: 6), [Offer(capacity: 4), Offer(capacity: 4)], Now);
        Assert.EndsWith("8 are free across 2 offers, but a gang must come from one offer", e.Reason);
        Assert.Contains("a smaller gang: at most 4 accelerators are free in one offer now (8 across 2 offers)", e.Alternatives);
    }

    [Fact]
    public void A_reserved_window_that_has_passed_says_so()
    {
        var order = new BookOrder(Guid.NewGuid(), OrderKind.Reserved, "h100-sxm", 1, 300, "CNY", null, null,
            Now.AddHours(-3), Now.AddMinutes(30), 3600, Now.AddHours(-4));
        var e = Explanations.Explain(order, [Offer()], Now);
        Assert.Equal("the window has passed: a 3600 s lease can no longer end by 2026-12-01T10:30:00Z", e.Reason);
    }

    [Fact]
    public void An_interruptible_bid_with_no_offer_allowing_it_is_pointed_to_on_demand()
    {
        var order = new BookOrder(Guid.NewGuid(), OrderKind.Interruptible, "h100-sxm", 1, 300, "CNY", null, null, Now, Now.AddHours(1), 3600, Now);
        var e = Explanations.Explain(order, [Offer()], Now);
        Assert.Equal("no h100-sxm offer allows interruptible use at the moment", e.Reason);
        Assert.Contains("place an on_demand order instead", e.Alternatives);
    }

    private static OfferCandidate OtherModel(string model, long ask, int capacity = 8, string currency = "CNY", string region = "cn-east") =>
        new(Guid.NewGuid(), model, region, "CN", capacity, Now.AddDays(-1), Now.AddDays(1), ask, currency, 60, Now.AddHours(-1), []);

    [Fact]
    public void Another_model_with_room_in_the_window_within_the_price_is_suggested()
    {
        var full = Offer(capacity: 4, bookings: new Booking(Now.AddHours(-1), Now.AddHours(3), 4));
        var e = Explanations.Explain(OnDemand(max: 300, region: "cn-east"), [
            full,
            OtherModel("a100-80gb", ask: 200),
            OtherModel("h200", ask: 280),
            OtherModel("b200", ask: 310),                       // above the renter's price
            OtherModel("mi300x", ask: 150, currency: "USD"),    // another currency
            OtherModel("l40s", ask: 100, region: "cn-north"),   // outside the order's region
            OtherModel("h100-pcie", ask: 120, capacity: 2),     // too small for the gang of 4
        ], Now);
        Assert.Contains("another model: a100-80gb has 4 free at 2.00 CNY/h, h200 has 4 free at 2.80 CNY/h", e.Alternatives);
        // The reason is still about the model asked for.
        Assert.Contains("the most free in one offer is 0", e.Reason);
    }

    [Fact]
    public void No_other_model_is_suggested_when_none_has_room_within_the_price()
    {
        var e = Explanations.Explain(OnDemand(max: 210), [Offer(ask: 235), OtherModel("h200", ask: 250)], Now);
        Assert.DoesNotContain(e.Alternatives, a => a.StartsWith("another model", StringComparison.Ordinal));
    }
}
