using MassTransit;
using Marketplace.Contracts;
using Marketplace.Scheduling.Leases;
using Microsoft.Extensions.DependencyInjection;
using Xunit;

namespace Marketplace.Scheduling.Tests;

/// <summary>
/// Matches in flight together are placed in one transaction (<see cref="PlacementBatcher"/>); whatever the batch does not
/// place is handed back untouched, and the consumer's own path places or refuses it. Exactly once either way.
/// </summary>
public sealed class PlacementBatchTests(SchedulingFixture f) : IClassFixture<SchedulingFixture>
{
    private PlacementBatcher Batcher => f.Factory.Services.GetRequiredService<PlacementBatcher>();

    private Task<long> LeasesOfAsync(OrderMatched m) =>
        f.ScalarAsync<long>("SELECT count(*) FROM scheduling.leases WHERE order_id = @OrderId", m);

    private Task<long> InboxOfAsync(Guid messageId) =>
        f.ScalarAsync<long>("SELECT count(*) FROM scheduling.inbox WHERE message_id = @messageId AND consumer = 'order-matched'", new { messageId });

    [Fact]
    public async Task Two_matches_of_one_batch_racing_for_a_one_gpu_node_book_it_once_and_the_other_is_refused_with_a_reason()
    {
        var provider = Guid.NewGuid();
        var node = await f.RegisterNodeAsync(provider, slots: 1);
        var t0 = f.Clock.GetUtcNow().AddDays(4);
        var first = f.Match(Guid.NewGuid(), provider, [node.NodeId], 1, t0, t0.AddHours(1));
        var second = f.Match(Guid.NewGuid(), provider, [node.NodeId], 1, t0.AddMinutes(30), t0.AddHours(2));
        var (firstId, secondId) = (NewId.NextGuid(), NewId.NextGuid());

        var done = await Batcher.PlaceBatchAsync([(firstId, first), (secondId, second)], CancellationToken.None);

        Assert.Equal([true, false], done);
        Assert.Equal((1, 0), (await LeasesOfAsync(first), await LeasesOfAsync(second)));
        Assert.Equal(0, await InboxOfAsync(secondId)); // handed back untouched: the consumer's own path still gets it
        var outcome = Assert.IsType<PlacementFailed>(await PublishAsync(second, secondId));
        Assert.Contains("only 0 of 1 h100-sxm slots are free", outcome.Reason, StringComparison.Ordinal);
        Assert.Equal(0, await f.OverlappingBookingsAsync());
    }

    [Fact]
    public async Task Two_matches_of_one_batch_on_an_offer_of_two_one_gpu_nodes_get_a_node_each()
    {
        var provider = Guid.NewGuid();
        var a = await f.RegisterNodeAsync(provider, slots: 1);
        var b = await f.RegisterNodeAsync(provider, slots: 1);
        var t0 = f.Clock.GetUtcNow().AddDays(4);
        var matches = Enumerable.Range(0, 2).Select(_ => f.Match(Guid.NewGuid(), provider, [a.NodeId, b.NodeId], 1, t0, t0.AddHours(1))).ToList();

        var done = await Batcher.PlaceBatchAsync(matches.Select(m => (NewId.NextGuid(), m)).ToList(), CancellationToken.None);

        Assert.Equal([true, true], done);
        var scheduled = await Task.WhenAll(matches.Select(async m => Assert.IsType<LeaseScheduled>(await f.OutcomeAsync(m.MatchId))));
        Assert.Equal(new[] { a.Slots[0].SlotId, b.Slots[0].SlotId }.Order(), scheduled.SelectMany(s => s.SlotIds).Order());
        Assert.Equal(0, await f.OverlappingBookingsAsync());
    }

    [Theory]
    [InlineData(0)]
    [InlineData(1)]
    public async Task A_batch_sees_every_booking_of_the_offered_nodes_over_its_window_and_books_the_gpu_that_is_free(int busyIndex)
    {
        var provider = Guid.NewGuid();
        var node = await f.RegisterNodeAsync(provider, slots: 2);
        var busy = node.Slots.Single(s => s.Index == busyIndex).SlotId;
        var free = node.Slots.Single(s => s.Index != busyIndex).SlotId;
        var t0 = f.Clock.GetUtcNow().AddDays(8 + busyIndex);
        // One GPU is booked over the whole window (from before it); the other only up to its start (back to back) and a
        // day before. A batch that missed the first booking would book that GPU, and the database would refuse the batch.
        await BookAsync(provider, busy, t0.AddMinutes(-30), t0.AddHours(2));
        await BookAsync(provider, free, t0.AddHours(-1), t0);
        await BookAsync(provider, free, t0.AddDays(-1), t0.AddDays(-1).AddHours(1));

        var match = f.Match(Guid.NewGuid(), provider, [node.NodeId], 1, t0, t0.AddHours(1));
        var done = await Batcher.PlaceBatchAsync([(NewId.NextGuid(), match)], CancellationToken.None);
        Assert.Equal([true], done);

        var scheduled = Assert.IsType<LeaseScheduled>(await f.OutcomeAsync(match.MatchId));
        Assert.Equal([free], scheduled.SlotIds);
        Assert.Equal(0, await f.OverlappingBookingsAsync());
    }

    /// <summary>Books <paramref name="slot"/> over [start, end) for a lease of its own, as the single path does.</summary>
    private async Task BookAsync(Guid provider, Guid slot, DateTimeOffset start, DateTimeOffset end)
    {
        await using var connection = await f.OpenServiceConnectionAsync();
        await using var tx = await connection.BeginTransactionAsync();
        var lease = new NewLease(Guid.NewGuid(), Guid.NewGuid(), Guid.NewGuid(), Guid.NewGuid(), provider, SchedulingFixture.Model, 1,
            start, end, 235, "CNY", start);
        await Booking.InsertAsync(connection, tx, lease, [slot], CancellationToken.None);
        await tx.CommitAsync();
    }

    [Fact]
    public async Task Two_batches_running_at_once_for_a_one_gpu_node_book_it_once_and_hand_the_other_match_back()
    {
        var provider = Guid.NewGuid();
        var node = await f.RegisterNodeAsync(provider, slots: 1);
        var t0 = f.Clock.GetUtcNow().AddDays(6);
        var matches = Enumerable.Range(0, 2).Select(_ => f.Match(Guid.NewGuid(), provider, [node.NodeId], 1, t0, t0.AddHours(1))).ToList();

        var done = await Task.WhenAll(matches.Select(m => Batcher.PlaceBatchAsync([(NewId.NextGuid(), m)], CancellationToken.None)));

        Assert.Equal(1, done.Count(d => d[0]));
        Assert.Equal(1, (await LeasesOfAsync(matches[0])) + (await LeasesOfAsync(matches[1])));
        Assert.Equal(0, await f.OverlappingBookingsAsync());
    }

    [Fact]
    public async Task A_match_already_handled_is_not_booked_again_by_a_batch_and_a_second_copy_in_the_batch_is_handed_back()
    {
        var provider = Guid.NewGuid();
        var node = await f.RegisterNodeAsync(provider, slots: 4);
        var t0 = f.Clock.GetUtcNow().AddDays(4);
        var match = f.Match(Guid.NewGuid(), provider, [node.NodeId], 1, t0, t0.AddHours(1));
        var messageId = NewId.NextGuid();

        var together = await Batcher.PlaceBatchAsync([(messageId, match), (messageId, match)], CancellationToken.None);
        var again = await Batcher.PlaceBatchAsync([(messageId, match)], CancellationToken.None); // a redelivery: done, nothing written

        Assert.Equal([true, false], together);
        Assert.Equal([true], again);
        await f.Bus.PublishAsync(match, messageId); // and the consumer's own path skips it too
        await Eventually.True(() => Task.FromResult(f.Consumed.Of(messageId) == 1), what: "the redelivery consumed");

        Assert.Equal(1, await LeasesOfAsync(match));
        Assert.Equal(1, await f.ScalarAsync<long>(
            "SELECT count(*) FROM scheduling.bookings b JOIN scheduling.leases l ON l.id = b.lease_id WHERE l.order_id = @OrderId", match));
        Assert.Single(f.EventsOf<LeaseScheduled>(), e => e.MatchId == match.MatchId);
    }

    [Fact]
    public async Task A_booking_that_commits_while_a_batch_inserts_on_the_same_slot_rolls_the_batch_back_and_the_match_is_placed_on_another_slot()
    {
        var provider = Guid.NewGuid();
        var node = await f.RegisterNodeAsync(provider, slots: 2);
        var t0 = f.Clock.GetUtcNow().AddDays(5);
        var first = node.Slots.Single(s => s.Index == 0).SlotId;

        // A path that books without slot locks (replacement, extension) is booking slot 0 and has not committed: the
        // batch's read cannot see it, its lock is free, so only the exclusion constraint stands between them.
        await using var other = await f.OpenServiceConnectionAsync();
        await using var tx = await other.BeginTransactionAsync();
        var rival = new NewLease(Guid.NewGuid(), Guid.NewGuid(), Guid.NewGuid(), Guid.NewGuid(), provider, SchedulingFixture.Model, 1,
            t0, t0.AddHours(1), 235, "CNY", t0);
        await Booking.InsertAsync(other, tx, rival, [first], CancellationToken.None);

        var match = f.Match(Guid.NewGuid(), provider, [node.NodeId], 1, t0, t0.AddHours(1));
        await f.Bus.PublishAsync(match);
        await Eventually.True(async () => await f.ScalarAsync<long>(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'") > 0,
            what: "the batch waiting for the rival booking");
        await tx.CommitAsync();

        var scheduled = Assert.IsType<LeaseScheduled>(await f.OutcomeAsync(match.MatchId));
        Assert.Equal([node.Slots.Single(s => s.Index == 1).SlotId], scheduled.SlotIds);
        Assert.Equal(1, await LeasesOfAsync(match));
        Assert.Equal(0, await f.OverlappingBookingsAsync());
    }

    private async Task<object> PublishAsync(OrderMatched match, Guid messageId)
    {
        await f.Bus.PublishAsync(match, messageId);
        return await f.OutcomeAsync(match.MatchId);
    }
}
