using Dapper;
using MassTransit;
using Marketplace.Contracts;

namespace Marketplace.Scheduling.Tests;

public sealed class LeaseLifecycleTests(SchedulingFixture f) : IClassFixture<SchedulingFixture>
{
    [Fact]
    public async Task A_lease_goes_scheduled_active_completed_with_the_clock_and_publishes_each_step()
    {
        var provider = Guid.NewGuid();
        var node = await f.RegisterNodeAsync(provider, slots: 8);
        var start = f.Clock.GetUtcNow().AddMinutes(1);
        var match = f.Match(Guid.NewGuid(), provider, [node.NodeId], 2, start, start.AddMinutes(1));

        var scheduled = await f.ScheduleAsync(match);
        Assert.Equal(2, scheduled.SlotIds.Count);
        Assert.Equal("scheduled", await f.StatusAsync(scheduled.LeaseId));
        Assert.Equal(0, await f.DueWork.RunDueAsync(CancellationToken.None)); // nothing is due before the start

        await f.AdvanceAndRunAsync(TimeSpan.FromMinutes(1), async () => await f.StatusAsync(scheduled.LeaseId) == "active");
        Assert.Equal(start, await f.ScalarAsync<DateTime>("SELECT started_at FROM scheduling.leases WHERE id = @LeaseId", scheduled));
        await Eventually.True(() => Task.FromResult(f.EventsOf<LeaseStarted>().Any(e => e.LeaseId == scheduled.LeaseId)));

        await f.AdvanceAndRunAsync(TimeSpan.FromMinutes(1), async () => await f.StatusAsync(scheduled.LeaseId) == "completed");
        var ended = await Eventually.Get(() => Task.FromResult(f.EventsOf<LeaseEnded>().FirstOrDefault(e => e.LeaseId == scheduled.LeaseId)), _ => true);
        Assert.Equal(("completed", "renter", "the lease reached its end"), (ended.Status, ended.Cause, ended.Reason));
        Assert.Equal(match.OrderId, ended.OrderId);
        Assert.Equal(start.AddMinutes(1), ended.At);
    }

    [Fact]
    public async Task The_same_match_delivered_three_times_makes_one_lease()
    {
        var provider = Guid.NewGuid();
        var node = await f.RegisterNodeAsync(provider, slots: 4);
        var start = f.Clock.GetUtcNow().AddHours(1);
        var match = f.Match(Guid.NewGuid(), provider, [node.NodeId], 1, start, start.AddHours(1));
        var messageId = NewId.NextGuid();

        for (var i = 0; i < 3; i++) await f.Bus.PublishAsync(match, messageId);
        await Eventually.True(() => Task.FromResult(f.Consumed.Of(messageId) == 3), what: "three deliveries consumed");

        Assert.Equal(1, await f.ScalarAsync<long>("SELECT count(*) FROM scheduling.leases WHERE order_id = @OrderId", match));
        Assert.Equal(1, await f.ScalarAsync<long>(
            "SELECT count(*) FROM scheduling.bookings b JOIN scheduling.leases l ON l.id = b.lease_id WHERE l.order_id = @OrderId", match));
        await f.OutcomeAsync(match.MatchId);
        Assert.Single(f.EventsOf<LeaseScheduled>(), e => e.MatchId == match.MatchId);
    }

    [Fact]
    public async Task A_rejected_hold_cancels_the_lease_and_frees_its_slots()
    {
        var provider = Guid.NewGuid();
        var node = await f.RegisterNodeAsync(provider, slots: 1);
        var start = f.Clock.GetUtcNow().AddHours(2);
        var match = f.Match(Guid.NewGuid(), provider, [node.NodeId], 1, start, start.AddHours(1));
        var lease = await f.ScheduleAsync(match);

        await f.Bus.PublishAsync(new HoldRejected(lease.LeaseId, match.OrderId, match.RenterOrgId,
            "the wallet holds 1.00 CNY; the lease needs up to 2.35 CNY", f.Clock.GetUtcNow()));

        var ended = await Eventually.Get(() => Task.FromResult(f.EventsOf<LeaseEnded>().FirstOrDefault(e => e.LeaseId == lease.LeaseId)), _ => true);
        Assert.Equal(("cancelled", "renter", "the wallet holds 1.00 CNY; the lease needs up to 2.35 CNY"), (ended.Status, ended.Cause, ended.Reason));
        Assert.Equal("cancelled", await f.StatusAsync(lease.LeaseId));
        Assert.Equal(0, await f.ScalarAsync<long>(
            "SELECT count(*) FROM scheduling.due_work WHERE key = @key AND done_at IS NULL", new { key = lease.LeaseId.ToString() }));

        // The slot is free again for the same window.
        await f.ScheduleAsync(f.Match(Guid.NewGuid(), provider, [node.NodeId], 1, start, start.AddHours(1)));
        Assert.Equal(0, await f.OverlappingBookingsAsync());
    }

    [Fact]
    public async Task A_match_that_does_not_fit_fails_with_a_reason_the_renter_can_read()
    {
        var provider = Guid.NewGuid();
        var node = await f.RegisterNodeAsync(provider, slots: 2);
        var start = new DateTimeOffset(2030, 6, 1, 10, 0, 0, TimeSpan.Zero);
        var match = f.Match(Guid.NewGuid(), provider, [node.NodeId], 3, start, start.AddHours(8));

        var failed = Assert.IsType<PlacementFailed>(await f.PlaceAsync(match));

        Assert.Equal(match.OrderId, failed.OrderId);
        Assert.Equal("only 2 of 3 h100-sxm slots are free on the offered nodes between 2030-06-01 10:00:00Z and 2030-06-01 18:00:00Z",
            failed.Reason);
        Assert.Equal(0, await f.ScalarAsync<long>("SELECT count(*) FROM scheduling.leases WHERE order_id = @OrderId", match));
    }

    [Fact]
    public async Task A_match_that_arrives_before_its_node_is_placed_once_the_node_is_known()
    {
        var provider = Guid.NewGuid();
        var node = new NodeRegistered(Guid.NewGuid(), Guid.NewGuid(), provider, "cn-east", "CN", SchedulingFixture.Model,
            [new GpuSlotInfo(Guid.NewGuid(), 0)], f.Clock.GetUtcNow());
        var start = f.Clock.GetUtcNow().AddHours(1);
        var match = f.Match(Guid.NewGuid(), provider, [node.NodeId], 1, start, start.AddHours(1));

        await f.Bus.PublishAsync(match);
        await f.Bus.PublishAsync(node);

        var scheduled = Assert.IsType<LeaseScheduled>(await f.OutcomeAsync(match.MatchId));
        Assert.Equal([node.Slots[0].SlotId], scheduled.SlotIds);
    }

    [Fact]
    public async Task Nodes_of_another_provider_or_model_are_never_booked()
    {
        var provider = Guid.NewGuid();
        var foreign = await f.RegisterNodeAsync(Guid.NewGuid(), slots: 8);
        var otherModel = await f.RegisterNodeAsync(provider, slots: 8, model: "ascend-910b");
        var start = f.Clock.GetUtcNow().AddHours(1);

        var failed = Assert.IsType<PlacementFailed>(await f.PlaceAsync(
            f.Match(Guid.NewGuid(), provider, [foreign.NodeId, otherModel.NodeId], 1, start, start.AddHours(1))));

        Assert.StartsWith("only 0 of 1 h100-sxm slots", failed.Reason, StringComparison.Ordinal);
        await using var c = f.Database.OpenAdmin();
        Assert.Equal(0, await c.ExecuteScalarAsync<long>("SELECT count(*) FROM scheduling.bookings WHERE slot_id = ANY(@ids)",
            new { ids = foreign.Slots.Concat(otherModel.Slots).Select(s => s.SlotId).ToArray() }));
    }
}
