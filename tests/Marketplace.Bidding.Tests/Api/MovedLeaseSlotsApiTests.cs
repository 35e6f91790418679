using System.Text.Json;
using Marketplace.Contracts;
using Marketplace.Testing;
using Xunit;
using static Marketplace.Bidding.Tests.Api.BiddingFixture;

namespace Marketplace.Bidding.Tests.Api;

/// <summary>
/// A lease Scheduling moved off a failed node (LeaseSlotsMoved) is counted on the accelerators it moved to, not on the ones
/// it left: Bidding sells what the move freed, and a LeaseScheduled that arrives after the move does not undo it.
/// </summary>
public sealed class MovedLeaseSlotsApiTests(BiddingFixture fx) : IClassFixture<BiddingFixture>
{
    private static readonly Guid GpuA = Guid.NewGuid(), GpuB = Guid.NewGuid();

    private Task<Guid> MatchOfAsync(Guid orderId) => fx.ScalarAsync<Guid>("SELECT id FROM bidding.matches WHERE order_id = @orderId", new { orderId });

    private Task<long> MatchesOnAsync(Guid match, Guid gpu) =>
        fx.ScalarAsync<long>("SELECT count(*) FROM bidding.matches WHERE id = @match AND slot_ids = @slots", new { match, slots = new[] { gpu } });

    /// <summary>Plays Scheduling: the match is booked on <paramref name="gpu"/>, as decided at <paramref name="at"/>.</summary>
    private async Task ScheduleAsync(Guid renterOrg, OfferPublished offer, string model, Guid orderId, Guid gpu, DateTimeOffset start,
        DateTimeOffset end, DateTimeOffset at) =>
        await fx.Bus.PublishAsync(new LeaseScheduled(Guid.NewGuid(), orderId, await MatchOfAsync(orderId), renterOrg, offer.ProviderOrgId, model, 1,
            start, end, new Money(235, "CNY"), [gpu], at));

    [Fact]
    public async Task A_lease_moved_to_another_accelerator_frees_the_one_it_left_and_a_late_LeaseScheduled_does_not_undo_it()
    {
        var model = NewModel();
        var offer = await fx.PublishOfferAsync(model, count: 2);
        var renterOrg = Guid.NewGuid();
        var renter = fx.Renter(renterOrg);
        var s = new DateTimeOffset(DateTimeOffset.UtcNow.AddMinutes(10).Ticks / TimeSpan.TicksPerMinute * TimeSpan.TicksPerMinute, TimeSpan.Zero);
        var placedAt = DateTimeOffset.UtcNow;

        // The early lease runs on GPU A from s to s+20 min, the late one on GPU B from s+30 to s+60 min.
        var (early, _) = await ReservedAsync(renter, model, s, s.AddMinutes(20));
        var (late, _) = await ReservedAsync(renter, model, s.AddMinutes(30), s.AddMinutes(60));
        await ScheduleAsync(renterOrg, offer, model, late, GpuB, s.AddMinutes(30), s.AddMinutes(60), placedAt);
        await Eventually.True(async () => await MatchesOnAsync(await MatchOfAsync(late), GpuB) == 1, what: "the late match on GPU B");

        // Before Bidding heard where the early lease went, its node failed and Scheduling moved it to GPU B (free until s+30).
        var earlyMatch = await MatchOfAsync(early);
        await fx.Bus.PublishAsync(new LeaseSlotsMoved(Guid.NewGuid(), early, earlyMatch, [GpuB], s, placedAt.AddSeconds(30)));
        await Eventually.True(async () => await MatchesOnAsync(earlyMatch, GpuB) == 1, what: "the early match on GPU B");
        // The placement's own event, overtaken by the move, arrives now: the match stays on GPU B.
        await ScheduleAsync(renterOrg, offer, model, early, GpuA, s, s.AddMinutes(20), placedAt);
        await Eventually.True(() => fx.ScalarAsync<bool>("SELECT lease_id IS NOT NULL FROM bidding.orders WHERE id = @early", new { early }),
            what: "the LeaseScheduled consumed");
        Assert.Equal(1, await MatchesOnAsync(earlyMatch, GpuB));

        // So GPU A is free for the whole of s+10 to s+40 min (with the early lease counted on A, no GPU would be).
        var (straddling, order) = await ReservedAsync(renter, model, s.AddMinutes(10), s.AddMinutes(40));
        Assert.Equal("matched", order.GetProperty("status").GetString());
        // And GPU B, held by both leases, is not sold again over their windows: a gang of two never fits in them.
        var gang = await ReadAsync(await PostOrderAsync(renter, OrderBody(model, count: 2, type: "reserved", duration: 600,
            earliestStart: s, latestEnd: s.AddMinutes(60))));
        Assert.Equal("open", gang.GetProperty("status").GetString());
        Assert.Equal(1, await fx.ScalarAsync<long>("SELECT count(*) FROM bidding.matches WHERE order_id = @straddling", new { straddling }));
    }
}
