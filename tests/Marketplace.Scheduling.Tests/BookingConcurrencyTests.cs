using Marketplace.Contracts;
using Marketplace.Scheduling.Leases;
using Npgsql;

namespace Marketplace.Scheduling.Tests;

public sealed class BookingConcurrencyTests(SchedulingFixture f) : IClassFixture<SchedulingFixture>
{
    [Fact]
    public async Task Twenty_concurrent_bookings_of_one_gpu_for_overlapping_windows_let_exactly_one_win()
    {
        var provider = Guid.NewGuid();
        var node = await f.RegisterNodeAsync(provider, slots: 1);
        var slot = node.Slots[0].SlotId;
        var t0 = f.Clock.GetUtcNow().AddDays(1);

        // Every transaction holds its connection open at the start line, then all insert at once.
        var go = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var ready = 0;
        var attempts = Enumerable.Range(0, 20).Select(async i =>
        {
            await using var connection = await f.OpenServiceConnectionAsync();
            await using var transaction = await connection.BeginTransactionAsync();
            if (Interlocked.Increment(ref ready) == 20) go.SetResult();
            await go.Task;
            var start = t0.AddMinutes(i); // windows [t0+i min, t0+i min+1h): every pair overlaps
            var lease = new NewLease(Guid.NewGuid(), Guid.NewGuid(), Guid.NewGuid(), Guid.NewGuid(), provider, SchedulingFixture.Model, 1,
                start, start.AddHours(1), 235, "CNY", t0);
            try
            {
                await Booking.InsertAsync(connection, transaction, lease, [slot], CancellationToken.None);
                await transaction.CommitAsync();
                return "won";
            }
            catch (PostgresException e) when (e.SqlState is PostgresErrorCodes.ExclusionViolation or PostgresErrorCodes.DeadlockDetected)
            {
                return "conflict";
            }
        }).ToList();
        var outcomes = await Task.WhenAll(attempts);

        Assert.Equal(1, outcomes.Count(o => o == "won"));
        Assert.Equal(19, outcomes.Count(o => o == "conflict"));
        Assert.Equal(1, await f.ScalarAsync<long>("SELECT count(*) FROM scheduling.bookings WHERE slot_id = @slot", new { slot }));
        Assert.Equal(0, await f.OverlappingBookingsAsync());
    }

    [Fact]
    public async Task Twenty_matches_racing_for_a_one_gpu_node_give_one_lease_and_nineteen_placement_failures()
    {
        var provider = Guid.NewGuid();
        var node = await f.RegisterNodeAsync(provider, slots: 1);
        var t0 = f.Clock.GetUtcNow().AddDays(2);
        var matches = Enumerable.Range(0, 20)
            .Select(i => f.Match(Guid.NewGuid(), provider, [node.NodeId], 1, t0.AddMinutes(i), t0.AddMinutes(i + 30)))
            .ToList();

        await Task.WhenAll(matches.Select(m => f.Bus.PublishAsync(m)));
        var outcomes = await Task.WhenAll(matches.Select(m => f.OutcomeAsync(m.MatchId)));

        Assert.Single(outcomes.OfType<LeaseScheduled>());
        var failures = outcomes.OfType<PlacementFailed>().ToList();
        Assert.Equal(19, failures.Count);
        Assert.All(failures, p => Assert.True(
            p.Reason.Contains("only 0 of 1 h100-sxm slots are free", StringComparison.Ordinal) || p.Reason.Contains("booked by other leases", StringComparison.Ordinal),
            p.Reason));
        var orderIds = matches.Select(m => m.OrderId).ToArray();
        Assert.Equal(1, await f.ScalarAsync<long>("SELECT count(*) FROM scheduling.leases WHERE order_id = ANY(@orderIds)", new { orderIds }));
        Assert.Equal(0, await f.OverlappingBookingsAsync());
    }

    [Fact]
    public async Task Back_to_back_windows_on_one_gpu_are_both_booked()
    {
        var provider = Guid.NewGuid();
        var node = await f.RegisterNodeAsync(provider, slots: 1);
        var t0 = f.Clock.GetUtcNow().AddDays(3);

        await f.ScheduleAsync(f.Match(Guid.NewGuid(), provider, [node.NodeId], 1, t0, t0.AddHours(1)));
        await f.ScheduleAsync(f.Match(Guid.NewGuid(), provider, [node.NodeId], 1, t0.AddHours(1), t0.AddHours(2)));

        Assert.Equal(0, await f.OverlappingBookingsAsync());
    }
}
