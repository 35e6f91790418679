using Marketplace.Bidding.Domain;

namespace Marketplace.Bidding.Tests.Domain;

public sealed class MatchingTests
{
    private static readonly DateTimeOffset T0 = new(2026, 12, 1, 10, 0, 0, TimeSpan.Zero);

    private static OrderToMatch Order(int count = 1, long max = 300, string currency = "CNY", string? region = null,
        string? jurisdiction = null, int hours = 1, string model = "h100-sxm") =>
        new(model, count, max, currency, region, jurisdiction, T0, T0.AddHours(hours));

    private static OfferCandidate Offer(long ask = 235, int capacity = 8, string region = "cn-east", string jurisdiction = "CN",
        string currency = "CNY", int minLease = 60, int publishedMinutesAgo = 10, string model = "h100-sxm",
        DateTimeOffset? windowEnd = null, params Booking[] bookings) =>
        new(Guid.NewGuid(), model, region, jurisdiction, capacity, T0.AddDays(-1), windowEnd ?? T0.AddDays(1), ask, currency,
            minLease, T0.AddMinutes(-publishedMinutesAgo), bookings);

    [Fact]
    public void Lowest_ask_wins_and_the_trade_is_at_the_ask()
    {
        var cheap = Offer(ask: 200);
        var decision = Matching.Choose(Order(max: 300), [Offer(ask: 250), cheap, Offer(ask: 290)]);
        Assert.Same(cheap, decision.Offer);
        Assert.Equal(200, decision.PriceAmount);
    }

    [Fact]
    public void Equal_asks_go_to_the_earliest_offer()
    {
        var early = Offer(ask: 235, publishedMinutesAgo: 60);
        var decision = Matching.Choose(Order(), [Offer(ask: 235, publishedMinutesAgo: 5), early]);
        Assert.Same(early, decision.Offer);
    }

    [Fact]
    public void A_gang_is_taken_from_one_offer_or_not_at_all()
    {
        var decision = Matching.Choose(Order(count: 6), [Offer(capacity: 4), Offer(capacity: 4)]);
        Assert.False(decision.Matched);
        Assert.Equal("no h100-sxm offer has 6 accelerators free from 2026-12-01T10:00:00Z to 2026-12-01T11:00:00Z; the most free in one offer is 4: "
            + "8 are free across 2 offers, but a gang must come from one offer",
            decision.Reason);
    }

    [Fact]
    public void Bookings_overlapping_the_window_reduce_the_capacity_but_adjacent_ones_do_not()
    {
        var offer = Offer(capacity: 8, bookings:
        [
            new Booking(T0.AddHours(-1), T0, 8),                     // ends where the order starts
            new Booking(T0.AddMinutes(10), T0.AddMinutes(20), 3),
            new Booking(T0.AddMinutes(15), T0.AddMinutes(30), 2),    // overlaps the previous: peak 5
            new Booking(T0.AddMinutes(40), T0.AddMinutes(50), 4),
            new Booking(T0.AddHours(1), T0.AddHours(2), 8),          // starts where the order ends
        ]);
        Assert.Equal(3, Matching.RemainingCapacity(offer, T0, T0.AddHours(1)));
    }

    [Fact]
    public void A_price_below_the_best_ask_says_by_how_much()
    {
        var decision = Matching.Choose(Order(max: 210, region: "cn-east"), [Offer(ask: 235), Offer(ask: 250)]);
        Assert.Null(decision.Offer);
        Assert.Equal("no h100-sxm offer in cn-east at or below 2.10 CNY/h; best ask 2.35 CNY/h, your max 2.10 CNY/h (0.25 CNY/h short)",
            decision.Reason);
    }

    [Fact]
    public void No_offer_of_the_model_is_explained()
    {
        var decision = Matching.Choose(Order(model: "mi300x"), [Offer()]);
        Assert.Equal("no mi300x offer is listed at the moment", decision.Reason);
    }

    [Fact]
    public void No_offer_in_the_region_names_where_offers_exist()
    {
        var decision = Matching.Choose(Order(region: "us-west"), [Offer(region: "cn-east"), Offer(region: "cn-north")]);
        Assert.Equal("no h100-sxm offer in us-west; your region/jurisdiction constraint excludes all 2 offers, which are in cn-east/CN, cn-north/CN",
            decision.Reason);
    }

    [Fact]
    public void Jurisdiction_is_a_hard_constraint()
    {
        var decision = Matching.Choose(Order(jurisdiction: "EU"), [Offer(jurisdiction: "CN", ask: 1)]);
        Assert.False(decision.Matched);
        Assert.StartsWith("no h100-sxm offer in jurisdiction EU", decision.Reason);
    }

    [Fact]
    public void Another_currency_does_not_match()
    {
        var decision = Matching.Choose(Order(currency: "USD", max: 10_000), [Offer(currency: "CNY")]);
        Assert.Equal("no h100-sxm offer is priced in USD; offers are priced in CNY", decision.Reason);
    }

    [Fact]
    public void A_window_the_offer_does_not_cover_is_explained()
    {
        var decision = Matching.Choose(Order(hours: 5), [Offer(windowEnd: T0.AddHours(2))]);
        Assert.Equal("no h100-sxm offer covers 2026-12-01T10:00:00Z to 2026-12-01T15:00:00Z; the latest offered window ends at 2026-12-01T12:00:00Z",
            decision.Reason);
    }

    [Fact]
    public void A_lease_shorter_than_the_offers_minimum_is_explained()
    {
        var decision = Matching.Choose(Order(hours: 1), [Offer(minLease: 7200)]);
        Assert.Equal("every h100-sxm offer requires a lease of at least 7200 s; your order lasts 3600 s", decision.Reason);
    }

    [Fact]
    public void Price_is_formatted_in_major_units_per_hour() =>
        Assert.Equal("2.35 CNY/h", Matching.Price(235, "CNY"));
}
