using Marketplace.Bidding.Domain;
using Xunit;

namespace Marketplace.Bidding.Tests.Domain;

/// <summary>
/// When a market's standing book is cleared again for the orders a clearing left open (<see cref="Clearing.CapacityReturnsAt"/>):
/// when the first booking ends, and only if an order waits for capacity, not for a price, a window or a bigger offer.
/// </summary>
public sealed class CapacityReturnsTests
{
    private static readonly DateTimeOffset Now = new(2026, 12, 1, 10, 0, 0, TimeSpan.Zero);

    private static Booking Booked(DateTimeOffset start, DateTimeOffset end, int count = 1) =>
        new(start, end, count) { MatchId = Guid.NewGuid(), MatchedAt = start };

    private static OfferCandidate Offer(int capacity, long ask, params Booking[] bookings) =>
        new(Guid.NewGuid(), "h100-sxm", "cn-east", "CN", capacity, Now.AddDays(-1), Now.AddDays(1), ask, "CNY", 60,
            Now.AddHours(-1), bookings);

    private static BookOrder OnDemand(int count = 1, long max = 300) =>
        new(Guid.NewGuid(), OrderKind.OnDemand, "h100-sxm", count, max, "CNY", null, null, Now, Now.AddHours(1), 3600,
            Now.AddMinutes(-1));

    [Fact]
    public void An_order_that_found_every_accelerator_booked_is_tried_again_when_the_first_booking_ends()
    {
        var offer = Offer(2, 200,
            Booked(Now.AddHours(-2), Now.AddMinutes(-5)), // over already: its accelerator is not what the order waits for
            Booked(Now.AddMinutes(-30), Now.AddMinutes(20)),
            Booked(Now.AddMinutes(-10), Now.AddMinutes(7)));
        var order = OnDemand();
        Assert.Empty(Clearing.Clear([order], [offer], Now).Fills);

        Assert.Equal(Now.AddMinutes(7), Clearing.CapacityReturnsAt([order], [offer], Now));
    }

    [Fact]
    public void The_earliest_end_over_all_offers_of_the_market_counts()
    {
        var a = Offer(1, 200, Booked(Now.AddMinutes(-30), Now.AddMinutes(40)));
        var b = Offer(1, 250, Booked(Now.AddMinutes(-30), Now.AddMinutes(15)));

        Assert.Equal(Now.AddMinutes(15), Clearing.CapacityReturnsAt([OnDemand()], [a, b], Now));
    }

    [Fact]
    public void An_order_waiting_for_a_price_is_not_tried_again_when_capacity_returns()
    {
        var offer = Offer(1, 400, Booked(Now.AddMinutes(-30), Now.AddMinutes(7)));

        Assert.Null(Clearing.CapacityReturnsAt([OnDemand(max: 300)], [offer], Now));
    }

    [Fact]
    public void A_gang_bigger_than_every_offer_is_not_tried_again_when_capacity_returns()
    {
        var offer = Offer(4, 200, Booked(Now.AddMinutes(-30), Now.AddMinutes(7), count: 4));

        Assert.Null(Clearing.CapacityReturnsAt([OnDemand(count: 8)], [offer], Now));
    }

    [Fact]
    public void One_order_waiting_for_capacity_among_orders_waiting_for_a_price_is_enough()
    {
        var offer = Offer(1, 250, Booked(Now.AddMinutes(-30), Now.AddMinutes(7)));
        // In priority the cheap bids come after the order that pays the ask: listing them first changes nothing.
        BookOrder[] waiting = [OnDemand(max: 100), OnDemand(max: 200), OnDemand(max: 300)];

        Assert.Equal(Now.AddMinutes(7), Clearing.CapacityReturnsAt(waiting, [offer], Now));
        Assert.Null(Clearing.CapacityReturnsAt(waiting[..2], [offer], Now));
    }

    [Fact]
    public void Nothing_is_scheduled_without_a_booking_that_ends_or_without_waiting_orders()
    {
        Assert.Null(Clearing.CapacityReturnsAt([OnDemand()], [Offer(1, 200)], Now));
        Assert.Null(Clearing.CapacityReturnsAt([], [Offer(1, 200, Booked(Now.AddMinutes(-30), Now.AddMinutes(7)))], Now));
    }
}
