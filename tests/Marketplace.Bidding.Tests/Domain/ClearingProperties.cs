using CsCheck;
using Marketplace.Bidding.Domain;

namespace Marketplace.Bidding.Tests.Domain;

/// <summary>
/// The book-clearing engine against a brute-force reference on small books. Every time is on a 30-minute grid, so the
/// reference can try every start and count capacity slot by slot, with none of the engine's shortcuts (sweep, max-tree,
/// candidate starts).
/// </summary>
public sealed class ClearingProperties
{
    private static readonly DateTimeOffset Now = new(2026, 12, 1, 10, 0, 0, TimeSpan.Zero);
    private static readonly TimeSpan Slot = TimeSpan.FromMinutes(30);
    private static readonly string[] Currencies = ["CNY", "USD"];
    private static readonly string[] Regions = ["cn-east", "cn-north"];

    private static DateTimeOffset At(int slots) => Now + slots * Slot;

    private static Gen<Booking> GenBooking(bool interruptible) =>
        Gen.Select(Gen.Int[-2, 8], Gen.Int[1, 6], Gen.Int[1, 4], Gen.Long[60, 300], Gen.Guid, Gen.Bool,
            (start, slots, count, bid, id, isInterruptible) => new Booking(At(start), At(start + slots), count)
            {
                MatchId = id,
                Interruptible = interruptible && isInterruptible,
                BidAmount = bid,
                MatchedAt = At(-3),
            });

    private static Gen<OfferCandidate> GenOffer(bool interruptibleBookings) =>
        Gen.Select(Gen.Guid, Gen.Int[0, 1], Gen.Int[0, 1], Gen.Int[1, 8], Gen.Long[100, 400],
            Gen.Select(Gen.Int[-4, 2], Gen.Int[2, 20], Gen.Int[0, 2], Gen.Int[0, 30]),
            Gen.Select(Gen.Bool, Gen.Long[0, 200], Gen.Int[0, 2]),
            GenBooking(interruptibleBookings).Array[0, 3],
            (id, currency, region, capacity, ask, w, i, bookings) => new OfferCandidate(
                id, "h100-sxm", Regions[region], "CN", capacity, At(w.Item1), At(w.Item1 + w.Item2), ask, Currencies[currency],
                w.Item3 * 1800, Now.AddMinutes(-w.Item4), Consistent(bookings, capacity))
            {
                InterruptibleAllowed = i.Item1,
                InterruptibleFloorAmount = i.Item2 < 50 ? 0 : i.Item2,
                PreemptionNoticeSeconds = i.Item3 * 1800,
            });

    /// <summary>An offer's existing bookings never oversell it: the ones that would are left out.</summary>
    private static Booking[] Consistent(Booking[] bookings, int capacity)
    {
        var kept = new List<Booking>();
        foreach (var b in bookings)
        {
            var ok = true;
            for (var t = b.Start; t < b.End; t += Slot)
                if (UseAt(kept, t) + b.Count > capacity) ok = false;
            if (ok) kept.Add(b);
        }
        return [.. kept];
    }

    private static readonly Gen<BookOrder> GenOrder =
        Gen.Select(Gen.Guid, Gen.Int[0, 2], Gen.Int[1, 8], Gen.Long[50, 450], Gen.Int[0, 1], Gen.Int[0, 2],
            Gen.Select(Gen.Int[-1, 6], Gen.Int[1, 6], Gen.Int[0, 4]), Gen.Int[0, 50],
            (id, kind, count, limit, currency, region, w, placed) =>
            {
                var k = (OrderKind)kind;
                var (earliest, latestEnd) = k == OrderKind.Reserved
                    ? (At(w.Item1), At(w.Item1 + w.Item2 + w.Item3))
                    : (Now, At(w.Item2));
                return new BookOrder(id, k, "h100-sxm", count, limit, Currencies[currency], region == 2 ? null : Regions[region], null,
                    earliest, latestEnd, w.Item2 * 1800L, Now.AddMinutes(-placed));
            });

    private static Gen<(BookOrder[] Orders, OfferCandidate[] Offers)> GenBook(bool interruptibleBookings) =>
        Gen.Select(GenOrder.Array[0, 10], GenOffer(interruptibleBookings).Array[0, 6]);

    // ---- the reference: sort, then for each order every offer in priority and every start on the grid ----

    private static int UseAt(IEnumerable<Booking> bookings, DateTimeOffset t) => bookings.Where(b => b.Start <= t && b.End > t).Sum(b => b.Count);

    private static bool FitsByHand(OfferCandidate o, List<Booking> bookings, DateTimeOffset start, DateTimeOffset end, int count)
    {
        if (!o.Covers(start, end)) return false;
        for (var t = start; t < end; t += Slot)
            if (UseAt(bookings, t) + count > o.Capacity) return false;
        return true;
    }

    private static List<Fill> Reference(BookOrder[] orders, OfferCandidate[] offers)
    {
        var bookings = offers.ToDictionary(o => o.OfferId, o => o.Bookings.ToList());
        var fills = new List<Fill>();
        var losing = new Dictionary<string, long>();
        var ranked = orders.OrderBy(o => o.Kind == OrderKind.Interruptible).ThenByDescending(o => o.LimitAmount)
            .ThenBy(o => o.PlacedAt).ThenBy(o => o.Id);
        foreach (var order in ranked)
        {
            var interruptible = order.Kind == OrderKind.Interruptible;
            long PriceKey(OfferCandidate o) => interruptible ? o.Floor : o.AskAmount;
            var duration = TimeSpan.FromSeconds(order.DurationSeconds);
            var first = order.EarliestStart > Now ? order.EarliestStart : Now;
            var last = order.Kind == OrderKind.Reserved ? order.LatestEnd - duration : first;
            var found = offers
                .Where(o => o.Currency == order.Currency && (order.Region is null || o.Region == order.Region)
                            && (!interruptible || o.InterruptibleAllowed) && PriceKey(o) <= order.LimitAmount
                            && order.DurationSeconds >= o.MinLeaseSeconds)
                .OrderBy(PriceKey).ThenBy(o => o.PublishedAt).ThenBy(o => o.OfferId)
                .Select(o =>
                {
                    for (var t = first; t <= last; t += Slot)
                        if (FitsByHand(o, bookings[o.OfferId], t, t + duration, order.Count)) return (Offer: o, Start: (DateTimeOffset?)t);
                    return (Offer: o, Start: null);
                })
                .FirstOrDefault(x => x.Start is not null);
            if (found.Offer is null)
            {
                if (interruptible) losing[order.Currency] = Math.Max(losing.GetValueOrDefault(order.Currency), order.LimitAmount);
                continue;
            }
            var start = found.Start!.Value;
            bookings[found.Offer.OfferId].Add(new Booking(start, start + duration, order.Count));
            fills.Add(new Fill(order.Id, found.Offer.OfferId, start, start + duration, order.Count,
                interruptible ? found.Offer.Floor : found.Offer.AskAmount, order.Currency, interruptible, []));
        }
        return [.. fills.Select(f => f.Interruptible
            ? f with { PriceAmount = Math.Min(orders.Single(o => o.Id == f.OrderId).LimitAmount, Math.Max(f.PriceAmount, losing.GetValueOrDefault(f.Currency))) }
            : f)];
    }

    private static string Show(IEnumerable<Fill> fills) =>
        string.Join("\n", fills.Select(f => $"{f.OrderId} {f.OfferId} {f.Start:HH:mm}-{f.End:HH:mm} x{f.Count} @{f.PriceAmount} {f.Currency}"));

    [Fact]
    public void Clearing_matches_the_brute_force_reference_on_small_books() =>
        GenBook(interruptibleBookings: false).Sample((orders, offers) =>
        {
            var result = Clearing.Clear(orders, offers, Now);
            Assert.Equal(Show(Reference(orders, offers)), Show(result.Fills));
            Assert.Equal(orders.Length, result.Fills.Count + result.Unfilled.Count);
        }, iter: 2000);

    [Fact]
    public void No_capacity_is_sold_twice_even_with_preemption() =>
        GenBook(interruptibleBookings: true).Sample((orders, offers) =>
        {
            var result = Clearing.Clear(orders, offers, Now);
            foreach (var offer in result.Offers)
                for (var t = At(-6); t < At(40); t += Slot)
                    Assert.True(UseAt(offer.Bookings, t) <= offer.Capacity, $"offer {offer.OfferId} oversold at {t:HH:mm}");
            // Every fill is inside its offer and counted in the offer's bookings exactly once.
            foreach (var fill in result.Fills)
            {
                var offer = result.Offers.Single(o => o.OfferId == fill.OfferId);
                Assert.True(offer.Covers(fill.Start, fill.End));
                Assert.Single(offer.Bookings, b => b.MatchId == fill.OrderId);
            }
            Assert.Equal(result.Fills.Count, result.Fills.Select(f => f.OrderId).Distinct().Count());
        }, iter: 2000);

    [Fact]
    public void A_renter_never_pays_above_its_limit_and_a_provider_never_receives_below_its_ask_or_floor() =>
        GenBook(interruptibleBookings: true).Sample((orders, offers) =>
        {
            var result = Clearing.Clear(orders, offers, Now);
            foreach (var fill in result.Fills)
            {
                var order = orders.Single(o => o.Id == fill.OrderId);
                var offer = offers.Single(o => o.OfferId == fill.OfferId);
                Assert.True(fill.PriceAmount <= order.LimitAmount);
                Assert.True(fill.PriceAmount >= (fill.Interruptible ? offer.Floor : offer.AskAmount));
                Assert.Equal(order.Currency, offer.Currency);
                if (!fill.Interruptible) Assert.Equal(offer.AskAmount, fill.PriceAmount);
            }
        }, iter: 2000);

    [Fact]
    public void Preemption_only_displaces_lower_priority_interruptible_matches_after_the_notice() =>
        GenBook(interruptibleBookings: true).Sample((orders, offers) =>
        {
            var result = Clearing.Clear(orders, offers, Now);
            foreach (var fill in result.Fills.Where(f => f.Preemptions.Count > 0))
            {
                var order = orders.Single(o => o.Id == fill.OrderId);
                var offer = offers.Single(o => o.OfferId == fill.OfferId);
                Assert.True(fill.Start >= Now.AddSeconds(offer.PreemptionNoticeSeconds), "the notice is given before the capacity is taken");
                foreach (var p in fill.Preemptions)
                {
                    var victim = offer.Bookings.Single(b => b.MatchId == p.MatchId);
                    Assert.True(victim.Interruptible);
                    if (order.Kind == OrderKind.Interruptible) Assert.True(victim.BidAmount < order.LimitAmount, "only a lower bid is outbid");
                    // Capacity comes back at the end of the notice (or the victim never starts).
                    Assert.True(p.EndsAt <= (victim.Start > fill.Start ? victim.Start : fill.Start));
                }
            }
        }, iter: 3000);

    [Fact]
    public void The_same_book_clears_the_same_way_whatever_order_it_arrives_in() =>
        Gen.Select(GenBook(interruptibleBookings: true), Gen.Int[0, 1000]).Sample((book, seed) =>
        {
            var (orders, offers) = book;
            var random = new Random(seed);
            var first = Clearing.Clear(orders, offers, Now);
            var second = Clearing.Clear([.. orders.OrderBy(_ => random.Next())], [.. offers.OrderBy(_ => random.Next())], Now);
            Assert.Equal(Show(first.Fills.OrderBy(f => f.OrderId)), Show(second.Fills.OrderBy(f => f.OrderId)));
            Assert.Equal(first.Unfilled.Order(), second.Unfilled.Order());
            Assert.Equal(
                string.Join(",", first.Fills.SelectMany(f => f.Preemptions).Select(p => $"{p.MatchId}@{p.EndsAt:HH:mm}").Order()),
                string.Join(",", second.Fills.SelectMany(f => f.Preemptions).Select(p => $"{p.MatchId}@{p.EndsAt:HH:mm}").Order()));
        }, iter: 1000);

    [Fact]
    public void An_unfilled_order_always_has_a_reason() =>
        GenBook(interruptibleBookings: true).Sample((orders, offers) =>
        {
            var result = Clearing.Clear(orders, offers, Now);
            foreach (var id in result.Unfilled)
                Assert.False(string.IsNullOrWhiteSpace(Explanations.Explain(orders.Single(o => o.Id == id), result.Offers, Now).Reason));
        }, iter: 500);
}
