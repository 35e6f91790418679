using CsCheck;
using Marketplace.Bidding.Domain;

namespace Marketplace.Bidding.Tests.Domain;

/// <summary>The market's promises, over random books: never above max, never below ask, never over capacity, deterministic.</summary>
public sealed class MatchingProperties
{
    private static readonly DateTimeOffset T0 = new(2026, 12, 1, 0, 0, 0, TimeSpan.Zero);
    private static readonly string[] Models = ["h100-sxm", "ascend-910b"];
    private static readonly string[] Regions = ["cn-east", "cn-north"];
    private static readonly string[] Currencies = ["CNY", "USD"];

    private static readonly Gen<Booking> GenBooking =
        Gen.Select(Gen.Int[0, 20], Gen.Int[1, 10], Gen.Int[1, 8], (start, hours, count) =>
            new Booking(T0.AddHours(start), T0.AddHours(start + hours), count));

    private static readonly Gen<OfferCandidate> GenOffer =
        Gen.Select(Gen.Int[0, 1], Gen.Int[0, 1], Gen.Int[0, 1], Gen.Int[1, 16], Gen.Long[100, 400],
            Gen.Select(Gen.Int[0, 6], Gen.Int[6, 30], Gen.Int[0, 3], Gen.Int[0, 100]),
            GenBooking.Array[0, 5],
            (model, region, currency, capacity, ask, w, bookings) => new OfferCandidate(
                Guid.NewGuid(), Models[model], Regions[region], "CN", capacity, T0.AddHours(w.Item1), T0.AddHours(w.Item2),
                ask, Currencies[currency], w.Item3 * 3600, T0.AddMinutes(-(w.Item4 % 7)), bookings));

    private static readonly Gen<OrderToMatch> GenOrder =
        Gen.Select(Gen.Int[0, 1], Gen.Int[0, 2], Gen.Int[1, 12], Gen.Long[50, 450], Gen.Int[0, 1],
            Gen.Int[0, 20], Gen.Int[1, 8],
            (model, region, count, max, currency, start, hours) => new OrderToMatch(
                Models[model], count, max, Currencies[currency], region == 2 ? null : Regions[region], null,
                T0.AddHours(start), T0.AddHours(start + hours)));

    private static bool Eligible(OrderToMatch o, OfferCandidate c) =>
        c.Model == o.Model && (o.Region is null || c.Region == o.Region) && c.Currency == o.Currency
        && c.WindowStart <= o.Start && c.WindowEnd >= o.End && o.DurationSeconds >= c.MinLeaseSeconds
        && c.AskAmount <= o.MaxPriceAmount && Matching.RemainingCapacity(c, o.Start, o.End) >= o.Count;

    /// <summary>Peak concurrent use, counted minute by minute, independently of the sweep in RemainingCapacity.</summary>
    private static int PeakUse(IEnumerable<Booking> bookings, DateTimeOffset start, DateTimeOffset end)
    {
        var peak = 0;
        for (var t = start; t < end; t = t.AddMinutes(30))
            peak = Math.Max(peak, bookings.Where(b => b.Start <= t && b.End > t).Sum(b => b.Count));
        return peak;
    }

    [Fact]
    public void A_match_is_never_above_the_max_nor_below_the_ask_nor_over_capacity() =>
        Gen.Select(GenOrder, GenOffer.Array[0, 8]).Sample((order, offers) =>
        {
            var d = Matching.Choose(order, offers);
            if (d.Offer is not { } chosen) return;
            Assert.True(d.PriceAmount <= order.MaxPriceAmount);
            Assert.True(d.PriceAmount >= chosen.AskAmount);
            Assert.True(PeakUse(chosen.Bookings, order.Start, order.End) + order.Count <= chosen.Capacity);
            Assert.True(Eligible(order, chosen));
        });

    [Fact]
    public void Nothing_matches_only_when_no_offer_is_eligible_and_then_a_reason_is_given() =>
        Gen.Select(GenOrder, GenOffer.Array[0, 8]).Sample((order, offers) =>
        {
            var d = Matching.Choose(order, offers);
            Assert.Equal(offers.Any(o => Eligible(order, o)), d.Matched);
            if (!d.Matched) Assert.False(string.IsNullOrWhiteSpace(d.Reason));
        });

    [Fact]
    public void The_best_eligible_ask_wins_then_the_earliest() =>
        Gen.Select(GenOrder, GenOffer.Array[1, 8]).Sample((order, offers) =>
        {
            var d = Matching.Choose(order, offers);
            if (d.Offer is not { } chosen) return;
            Assert.DoesNotContain(offers, o => Eligible(order, o) &&
                (o.AskAmount < chosen.AskAmount || (o.AskAmount == chosen.AskAmount && o.PublishedAt < chosen.PublishedAt)));
        });

    [Fact]
    public void The_choice_does_not_depend_on_the_order_of_the_offers() =>
        Gen.Select(GenOrder, GenOffer.Array[0, 8], Gen.Int[0, 7]).Sample((order, offers, rotate) =>
        {
            var first = Matching.Choose(order, offers);
            var shuffled = offers.Skip(rotate % Math.Max(1, offers.Length)).Concat(offers.Take(rotate % Math.Max(1, offers.Length))).Reverse().ToArray();
            var second = Matching.Choose(order, shuffled);
            Assert.Equal(first.Offer?.OfferId, second.Offer?.OfferId);
            Assert.Equal(first.PriceAmount, second.PriceAmount);
            Assert.Equal(first.Reason, second.Reason);
        });
}
