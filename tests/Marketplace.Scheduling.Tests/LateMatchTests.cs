using Marketplace.Contracts;

namespace Marketplace.Scheduling.Tests;

/// <summary>
/// A match or a lease start that reaches Scheduling only after the lease's window (the broker or Scheduling was down
/// meanwhile; found by the RabbitMQ and kill -9 fault scenarios): before, such a lease was booked in the past, its
/// activation failed for ever on an empty time range and its completion waited for the activation, so it stayed
/// "scheduled" for good with the renter's money held.
/// </summary>
public sealed class LateMatchTests(SchedulingFixture f) : IClassFixture<SchedulingFixture>
{
    [Fact]
    public async Task A_match_whose_window_ended_before_it_arrived_is_not_booked_and_fails_with_a_reason()
    {
        var provider = Guid.NewGuid();
        var node = await f.RegisterNodeAsync(provider, slots: 2);
        var end = f.Clock.GetUtcNow().AddSeconds(-1);
        var match = f.Match(Guid.NewGuid(), provider, [node.NodeId], 1, end.AddMinutes(-1), end);

        var failed = Assert.IsType<PlacementFailed>(await f.PlaceAsync(match));

        Assert.Contains("window ended", failed.Reason);
        Assert.Equal(0, await f.ScalarAsync<long>("SELECT count(*) FROM scheduling.leases WHERE order_id = @OrderId", match));
    }

    [Fact]
    public async Task A_lease_whose_start_is_handled_only_after_its_end_fails_without_running_instead_of_staying_scheduled()
    {
        var provider = Guid.NewGuid();
        var node = await f.RegisterNodeAsync(provider, slots: 1);
        var start = f.Clock.GetUtcNow().AddMinutes(1);
        var lease = await f.ScheduleAsync(f.Match(Guid.NewGuid(), provider, [node.NodeId], 1, start, start.AddMinutes(1)));

        // Scheduling "was down" for the whole window: the start and the end are both due when it runs again.
        await f.AdvanceAndRunAsync(TimeSpan.FromMinutes(3), async () => await f.StatusAsync(lease.LeaseId) != "scheduled");

        Assert.Equal("failed", await f.StatusAsync(lease.LeaseId));
        var ended = await f.EventAsync<LeaseEnded>(e => e.LeaseId == lease.LeaseId);
        Assert.Equal(("failed", "platform"), (ended.Status, ended.Cause));
        Assert.Contains("never ran", ended.Reason);
        Assert.True(ended.NeverRan); // Billing releases the renter's hold at once on this
        Assert.DoesNotContain(f.EventsOf<LeaseStarted>(), e => e.LeaseId == lease.LeaseId);
        Assert.Equal(0, await f.ScalarAsync<long>(
            "SELECT count(*) FROM scheduling.due_work WHERE key = @key AND done_at IS NULL", new { key = lease.LeaseId.ToString() }));
    }
}
