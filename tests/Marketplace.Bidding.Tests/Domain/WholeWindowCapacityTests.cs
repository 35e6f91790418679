using CsCheck;
using Marketplace.Bidding.Domain;
using Xunit;

namespace Marketplace.Bidding.Tests.Domain;

/// <summary>
/// A lease needs accelerators each free for its whole window (known issue 8): once Scheduling has placed a match
/// (<see cref="Booking.SlotIds"/>), the clearing counts the accelerators it blocks, not the peak overlap, so it never sells
/// capacity that is free at every instant but spread over several accelerators, and still sells every accelerator that
/// is free for the whole window.
/// </summary>
public sealed class WholeWindowCapacityTests
{
    private static readonly DateTimeOffset Now = new(2026, 12, 1, 10, 0, 0, TimeSpan.Zero);
    private static readonly Guid GpuA = Guid.Parse("00000000-0000-0000-0000-00000000000a");
    private static readonly Guid GpuB = Guid.Parse("00000000-0000-0000-0000-00000000000b");
    private static readonly Guid GpuC = Guid.Parse("00000000-0000-0000-0000-00000000000c");
    private static readonly Guid GpuD = Guid.Parse("00000000-0000-0000-0000-00000000000d");

    private static Booking Placed(DateTimeOffset start, DateTimeOffset end, params Guid[] slots) =>
        new(start, end, slots.Length) { MatchId = Guid.NewGuid(), MatchedAt = Now.AddMinutes(-5), SlotIds = slots };

    private static OfferCandidate Offer(int capacity, params Booking[] bookings) =>
        new(Guid.NewGuid(), "h100-sxm", "cn-east", "CN", capacity, Now.AddDays(-1), Now.AddDays(1), 200, "CNY", 60,
            Now.AddHours(-1), bookings);

    private static BookOrder OnDemand(int count, TimeSpan duration) =>
        new(Guid.NewGuid(), OrderKind.OnDemand, "h100-sxm", count, 300, "CNY", null, null, Now, Now + duration,
            (long)duration.TotalSeconds, Now.AddMinutes(-1));

    private static BookOrder Reserved(int count, DateTimeOffset start, DateTimeOffset end, TimeSpan? duration = null) =>
        new(Guid.NewGuid(), OrderKind.Reserved, "h100-sxm", count, 300, "CNY", null, null, start, end,
            (long)(duration ?? end - start).TotalSeconds, Now.AddMinutes(-1));

    /// <summary>GPU A is free until 10:00:30 (a reserved lease from then), GPU B from 10:00:20 (a lease until then).</summary>
    private static OfferCandidate Fragmented() => Offer(2,
        Placed(Now.AddSeconds(30), Now.AddMinutes(30), GpuA),
        Placed(Now.AddMinutes(-10), Now.AddSeconds(20), GpuB));

    [Fact]
    public void Capacity_free_at_every_instant_but_spread_over_two_accelerators_is_not_sold()
    {
        var offer = Fragmented();
        // At no instant are both GPUs busy: the peak overlap leaves one free, which is not a GPU for the whole minute.
        Assert.Equal(1, offer.Capacity - Clearing.PeakUse(offer.Bookings, Now, Now.AddMinutes(1)));

        var result = Clearing.Clear([OnDemand(1, TimeSpan.FromMinutes(1))], [offer], Now);

        Assert.Empty(result.Fills);
        Assert.Equal(0, Matching.RemainingCapacity(offer, Now, Now.AddMinutes(1)));
        var reason = Explanations.Explain(OnDemand(1, TimeSpan.FromMinutes(1)), [offer], Now).Reason;
        Assert.Contains("the most free in one offer is 0", reason);
    }

    [Fact]
    public void An_accelerator_free_for_the_whole_window_is_still_sold()
    {
        var offer = Fragmented();
        // 10:00:20 to 10:01:20: GPU B is free for all of it.
        var result = Clearing.Clear([Reserved(1, Now.AddSeconds(20), Now.AddSeconds(80))], [offer], Now);
        Assert.Single(result.Fills);
        // And before 10:00:30 GPU A is; from 10:00:20 to 10:00:30 both are.
        Assert.Equal(1, Matching.RemainingCapacity(offer, Now, Now.AddSeconds(30)));
        Assert.Equal(2, Matching.RemainingCapacity(offer, Now.AddSeconds(20), Now.AddSeconds(30)));
    }

    [Fact]
    public void A_flexible_reserved_order_starts_when_one_accelerator_is_free_for_its_whole_lease()
    {
        // GPU A: busy 10:00-10:30 and from 11:20; GPU B: busy 10:20-11:10. The peak never exceeds 1 after 10:30, but an
        // hour on one GPU is first possible at 11:10 (GPU B), not at 10:30.
        var offer = Offer(2,
            Placed(Now, Now.AddMinutes(30), GpuA),
            Placed(Now.AddMinutes(80), Now.AddHours(3), GpuA),
            Placed(Now.AddMinutes(20), Now.AddMinutes(70), GpuB));

        var result = Clearing.Clear([Reserved(1, Now, Now.AddHours(4), TimeSpan.FromHours(1))], [offer], Now);

        Assert.Equal(Now.AddMinutes(70), Assert.Single(result.Fills).Start);
    }

    [Fact]
    public void Half_open_windows_a_placed_lease_ending_at_ten_does_not_block_one_starting_at_ten()
    {
        var offer = Offer(1, Placed(Now.AddHours(-1), Now, GpuA), Placed(Now.AddHours(1), Now.AddHours(2), GpuA));

        Assert.Equal(1, Matching.RemainingCapacity(offer, Now, Now.AddHours(1)));
        Assert.Single(Clearing.Clear([OnDemand(1, TimeSpan.FromHours(1))], [offer], Now).Fills);
        // One second longer and it would touch the next lease.
        Assert.Equal(0, Matching.RemainingCapacity(offer, Now, Now.AddHours(1).AddSeconds(1)));
    }

    [Fact]
    public void A_gang_needs_all_its_accelerators_free_for_the_whole_window()
    {
        // Four GPUs: A busy until 11:00, B busy from 12:00, C and D free. From 10:00 to 13:00 the peak overlap is 1, but only
        // C and D are free for the whole three hours.
        var offer = Offer(4, Placed(Now.AddHours(-1), Now.AddHours(1), GpuA), Placed(Now.AddHours(2), Now.AddHours(4), GpuB));

        Assert.Empty(Clearing.Clear([OnDemand(3, TimeSpan.FromHours(3))], [offer], Now).Fills);
        Assert.Single(Clearing.Clear([OnDemand(2, TimeSpan.FromHours(3))], [offer], Now).Fills);
        // 11:00 to 12:00 all four are free: the whole gang fits.
        Assert.Single(Clearing.Clear([Reserved(4, Now.AddHours(1), Now.AddHours(2))], [offer], Now).Fills);
    }

    [Fact]
    public void Matches_in_flight_count_by_their_peak_next_to_placed_ones()
    {
        // GPU A placed until 11:00; two unplaced matches of one GPU each, one after the other, from 11:00 and 12:00.
        var inFlight1 = new Booking(Now.AddHours(1), Now.AddHours(2), 1) { MatchId = Guid.NewGuid() };
        var inFlight2 = new Booking(Now.AddHours(2), Now.AddHours(3), 1) { MatchId = Guid.NewGuid() };
        var offer = Offer(3, Placed(Now, Now.AddHours(1), GpuA), inFlight1, inFlight2);

        // 10:00-13:00: A is blocked, the unplaced ones need one GPU at a time: 3 - 1 - 1.
        Assert.Equal(1, Matching.RemainingCapacity(offer, Now, Now.AddHours(3)));
        Assert.Equal(2, Matching.RemainingCapacity(offer, Now.AddHours(1), Now.AddHours(3)));
    }

    [Fact]
    public void Preemption_frees_the_accelerators_of_the_displaced_match()
    {
        var victim = Placed(Now, Now.AddHours(2), GpuC, GpuD) with { Interruptible = true, BidAmount = 100 };
        var offer = Offer(4, Placed(Now.AddHours(-1), Now.AddMinutes(30), GpuA), Placed(Now.AddHours(1), Now.AddHours(3), GpuB),
            victim);

        var result = Clearing.Clear([OnDemand(2, TimeSpan.FromHours(2))], [offer], Now);

        var fill = Assert.Single(result.Fills);
        Assert.Equal(victim.MatchId, Assert.Single(fill.Preemptions).MatchId);
    }

    /// <summary>
    /// Scheduling as a model: every placed booking sits on its accelerators; fills are placed one after the other, each on
    /// the lowest accelerators free for its whole window (what Placement does on one node).
    /// </summary>
    private static bool AllPlace(OfferCandidate offer, Guid[] gpus, IEnumerable<Fill> fills)
    {
        var booked = gpus.ToDictionary(g => g, _ => new List<(DateTimeOffset Start, DateTimeOffset End)>());
        foreach (var b in offer.Bookings)
            foreach (var g in b.SlotIds!) booked[g].Add((b.Start, b.End));
        foreach (var fill in fills)
        {
            var free = gpus.Where(g => booked[g].All(r => r.End <= fill.Start || r.Start >= fill.End)).Take(fill.Count).ToList();
            if (free.Count < fill.Count) return false;
            foreach (var g in free) booked[g].Add((fill.Start, fill.End));
        }
        return true;
    }

    [Fact]
    public void Every_on_demand_fill_can_be_placed_on_accelerators_free_for_its_whole_window() =>
        Gen.Select(Gen.Int[1, 6], Gen.Int[0, 8].Array[6], Gen.Int[1, 4].Array[6], Gen.Int[1, 3].Array[0, 8], Gen.Int[1, 8].Array[0, 8])
            .Sample((capacity, starts, lengths, counts, hours) =>
            {
                // Each GPU carries at most one placed lease, somewhere between 09:00 and 14:00 (30-minute grid).
                var gpus = Enumerable.Range(0, capacity).Select(i => new Guid(i + 1, 0, 0, new byte[8])).ToArray();
                var placed = gpus.Select((g, i) => Placed(Now.AddMinutes(30 * (starts[i] - 2)), Now.AddMinutes(30 * (starts[i] - 2 + lengths[i])), g))
                    .ToArray();
                var offer = Offer(capacity, placed);
                var orders = counts.Zip(hours, (c, h) => OnDemand(c, TimeSpan.FromMinutes(30 * h))).ToArray();

                var result = Clearing.Clear(orders, [offer], Now);

                // The fills in the order the clearing made them, which is also the order they reach Scheduling.
                Assert.True(AllPlace(offer, gpus, result.Fills), "a fill Scheduling cannot place on accelerators free for its whole window");
                // Not conservative: an order is left out only when the GPUs free for its whole window (counted here by hand)
                // are fewer than it needs next to the fills, which all start now and so overlap it.
                var inFlight = result.Fills.Sum(f => f.Count);
                foreach (var id in result.Unfilled)
                {
                    var order = orders.Single(o => o.Id == id);
                    var end = Now.AddSeconds(order.DurationSeconds);
                    var freeWhole = placed.Count(b => b.End <= Now || b.Start >= end);
                    Assert.True(freeWhole - inFlight < order.Count, "an order left unfilled although accelerators were free");
                }
            }, iter: 2000);
}
