using System.Net;
using System.Net.Http.Json;
using System.Text.Json;
using Marketplace.Contracts;

namespace Marketplace.Scheduling.Tests;

/// <summary>Topology, health and maintenance on the real servers: gang placement, exclusion, replacement, failure.</summary>
public sealed class NodeFailureTests(SchedulingFixture f) : IClassFixture<SchedulingFixture>
{
    private async Task<JsonElement> LeaseJsonAsync(Guid renter, Guid leaseId) =>
        await f.Factory.ClientFor(renter, "renter").GetFromJsonAsync<JsonElement>($"/v1/leases/{leaseId}");

    private async Task StartAsync(LeaseScheduled lease) =>
        await f.AdvanceAndRunAsync(TimeSpan.Zero, async () => await f.StatusAsync(lease.LeaseId) == "active");

    private NodeHealthChanged Unhealthy(NodeRegistered node, DateTimeOffset at, string reason = "GPU 3 fell off the bus (Xid 79)") =>
        new(node.NodeId, node.ClusterId, node.ProviderOrgId, "unhealthy", true, reason, at);

    [Fact]
    public async Task A_two_node_gang_is_placed_on_whole_nodes_of_one_nvlink_domain()
    {
        var provider = Guid.NewGuid();
        var cluster = Guid.NewGuid();
        var lone = await f.RegisterNodeAsync(provider, 8, cluster: cluster, fabric: "infiniband");
        var rackA = await f.RegisterNodeAsync(provider, 8, cluster: cluster, nvlinkDomain: "nvl-rack-1", fabric: "infiniband");
        var rackB = await f.RegisterNodeAsync(provider, 8, cluster: cluster, nvlinkDomain: "nvl-rack-1", fabric: "infiniband");
        var start = f.Clock.GetUtcNow().AddHours(1);

        var match = f.Match(Guid.NewGuid(), provider, [lone.NodeId, rackA.NodeId, rackB.NodeId], 16, start, start.AddHours(1));
        var lease = await f.ScheduleAsync(match);

        var json = await LeaseJsonAsync(match.RenterOrgId, lease.LeaseId);
        var nodes = json.GetProperty("slots").EnumerateArray().Select(s => s.GetProperty("node_id").GetGuid()).ToList();
        Assert.Equal(16, nodes.Count);
        Assert.Equal(new[] { rackA.NodeId, rackB.NodeId }.Order(), nodes.Distinct().Order());
    }

    [Fact]
    public async Task An_unhealthy_node_and_one_in_maintenance_are_not_offered_to_new_leases()
    {
        var provider = Guid.NewGuid();
        var sick = await f.RegisterNodeAsync(provider, 8);
        var serviced = await f.RegisterNodeAsync(provider, 8);
        var start = f.Clock.GetUtcNow().AddDays(1);
        await f.PublishAndWaitAsync(Unhealthy(sick, f.Clock.GetUtcNow()));
        await f.PublishAndWaitAsync(new NodeMaintenanceScheduled(Guid.NewGuid(), serviced.NodeId, provider,
            start.AddMinutes(30), start.AddHours(3), f.Clock.GetUtcNow()));

        var failed = Assert.IsType<PlacementFailed>(await f.PlaceAsync(
            f.Match(Guid.NewGuid(), provider, [sick.NodeId, serviced.NodeId], 4, start, start.AddHours(1))));
        Assert.Contains("only 0 of 4 h100-sxm slots are free", failed.Reason, StringComparison.Ordinal);
        Assert.Contains("of the offered nodes, 1 is unhealthy and 1 is in maintenance then", failed.Reason, StringComparison.Ordinal);
        Assert.False(failed.SlotsBooked);

        // Before the maintenance window the serviced node is fine.
        await f.ScheduleAsync(f.Match(Guid.NewGuid(), provider, [sick.NodeId, serviced.NodeId], 4, start.AddHours(-2), start.AddHours(-1)));
    }

    [Fact]
    public async Task A_node_failing_mid_lease_is_replaced_by_spare_capacity_in_its_fabric_with_the_downtime_recorded()
    {
        var provider = Guid.NewGuid();
        var cluster = Guid.NewGuid();
        var primary = await f.RegisterNodeAsync(provider, 8, cluster: cluster, fabric: "infiniband");
        var spare = await f.RegisterNodeAsync(provider, 8, cluster: cluster, fabric: "infiniband");
        var otherFabric = await f.RegisterNodeAsync(provider, 8, cluster: Guid.NewGuid(), fabric: "infiniband");
        var start = f.Clock.GetUtcNow();
        var match = f.Match(Guid.NewGuid(), provider, [primary.NodeId], 8, start, start.AddHours(2));
        var lease = await f.ScheduleAsync(match);
        await StartAsync(lease);
        f.Clock.Advance(TimeSpan.FromMinutes(30));
        var failedAt = f.Clock.GetUtcNow();
        f.Clock.Advance(TimeSpan.FromSeconds(20)); // the report reaches Scheduling 20 s after the failure

        await f.PublishAndWaitAsync(Unhealthy(primary, failedAt));

        var interrupted = await f.EventAsync<LeaseInterrupted>(e => e.LeaseId == lease.LeaseId);
        var resumed = await f.EventAsync<LeaseResumed>(e => e.LeaseId == lease.LeaseId);
        Assert.Equal((failedAt, "provider"), (interrupted.At, interrupted.Cause));
        Assert.Contains("GPU 3 fell off the bus", interrupted.Reason, StringComparison.Ordinal);
        Assert.Equal(f.Clock.GetUtcNow(), resumed.At);
        // Bidding is told the lease's accelerators now: the spare node's eight, from the move on.
        var moved = await f.EventAsync<LeaseSlotsMoved>(e => e.LeaseId == lease.LeaseId);
        Assert.Equal((match.MatchId, match.OrderId, f.Clock.GetUtcNow()), (moved.MatchId, moved.OrderId, moved.From));
        Assert.Equal(spare.Slots.Select(s => s.SlotId).Order(), moved.SlotIds.Order());

        var json = await LeaseJsonAsync(match.RenterOrgId, lease.LeaseId);
        Assert.Equal("active", json.GetProperty("status").GetString());
        Assert.All(json.GetProperty("slots").EnumerateArray(), s => Assert.Equal(spare.NodeId, s.GetProperty("node_id").GetGuid()));
        var downtime = Assert.Single(json.GetProperty("downtime").EnumerateArray());
        Assert.Equal(failedAt, downtime.GetProperty("start").GetDateTimeOffset());
        Assert.Equal(f.Clock.GetUtcNow(), downtime.GetProperty("end").GetDateTimeOffset());
        Assert.Equal("provider", downtime.GetProperty("cause").GetString());

        // The provider sees it too; the old bookings end at the move, the new ones run to the lease's end.
        var providerView = await f.Factory.ClientFor(provider, "provider").GetFromJsonAsync<JsonElement>($"/v1/leases/{lease.LeaseId}");
        Assert.Single(providerView.GetProperty("downtime").EnumerateArray());
        Assert.Equal(8, await f.ScalarAsync<long>(
            "SELECT count(*) FROM scheduling.bookings WHERE lease_id = @LeaseId AND released AND upper(during) = @now",
            new { lease.LeaseId, now = f.Clock.GetUtcNow() }));
        Assert.Equal(0, await f.OverlappingBookingsAsync());
        Assert.Equal(0, await f.ScalarAsync<long>("SELECT count(*) FROM scheduling.bookings b JOIN scheduling.gpu_slots s ON s.id = b.slot_id WHERE s.node_id = @NodeId",
            otherFabric));

        // At its end the lease completes on the replacement as planned.
        await f.AdvanceAndRunAsync(TimeSpan.FromHours(2), async () => await f.StatusAsync(lease.LeaseId) == "completed");
        // Its end tells Billing how many downtime events to wait for: one interruption and one resume.
        var ended = await f.EventAsync<LeaseEnded>(e => e.LeaseId == lease.LeaseId);
        Assert.Equal((1, 1), (ended.Interruptions, ended.Resumes));
    }

    [Fact]
    public async Task A_node_failing_with_no_spare_capacity_ends_the_lease_as_failed_by_the_provider()
    {
        var provider = Guid.NewGuid();
        var cluster = Guid.NewGuid();
        var only = await f.RegisterNodeAsync(provider, 4, cluster: cluster, fabric: "roce");
        var tooSmall = await f.RegisterNodeAsync(provider, 2, cluster: cluster, fabric: "roce");
        var start = f.Clock.GetUtcNow();
        var match = f.Match(Guid.NewGuid(), provider, [only.NodeId], 4, start, start.AddHours(1));
        var lease = await f.ScheduleAsync(match);
        await StartAsync(lease);
        f.Clock.Advance(TimeSpan.FromMinutes(10));

        await f.PublishAndWaitAsync(Unhealthy(only, f.Clock.GetUtcNow(), "node stopped answering heartbeats"));

        var ended = await f.EventAsync<LeaseEnded>(e => e.LeaseId == lease.LeaseId);
        Assert.Equal(("failed", "provider"), (ended.Status, ended.Cause));
        Assert.Contains("node stopped answering heartbeats", ended.Reason, StringComparison.Ordinal);
        Assert.Contains("no spare h100-sxm capacity in its cluster fabric could replace its 4 slot(s)", ended.Reason, StringComparison.Ordinal);
        Assert.Equal(f.Clock.GetUtcNow(), ended.At);
        var interrupted = await f.EventAsync<LeaseInterrupted>(e => e.LeaseId == lease.LeaseId);
        Assert.Equal(f.Clock.GetUtcNow(), interrupted.At);
        Assert.DoesNotContain(f.EventsOf<LeaseResumed>(), e => e.LeaseId == lease.LeaseId);
        // The end closed the interruption without a resume: Billing must wait for the interruption, not for a resume.
        Assert.Equal((1, 0), (ended.Interruptions, ended.Resumes));

        var json = await LeaseJsonAsync(match.RenterOrgId, lease.LeaseId);
        Assert.Equal(("failed", "provider"), (json.GetProperty("status").GetString(), json.GetProperty("cause").GetString()));
        var downtime = Assert.Single(json.GetProperty("downtime").EnumerateArray());
        Assert.Equal(f.Clock.GetUtcNow(), downtime.GetProperty("end").GetDateTimeOffset());
        Assert.Equal(0, await f.ScalarAsync<long>("SELECT count(*) FROM scheduling.bookings b JOIN scheduling.gpu_slots s ON s.id = b.slot_id WHERE s.node_id = @NodeId",
            tooSmall));
        Assert.Equal(0, await f.ScalarAsync<long>(
            "SELECT count(*) FROM scheduling.due_work WHERE key = @key AND done_at IS NULL", new { key = lease.LeaseId.ToString() }));
    }

    [Fact]
    public async Task A_scheduled_lease_on_a_node_that_failed_before_its_start_moves_at_the_start_without_downtime()
    {
        var provider = Guid.NewGuid();
        var cluster = Guid.NewGuid();
        var booked = await f.RegisterNodeAsync(provider, 2, cluster: cluster);
        var spare = await f.RegisterNodeAsync(provider, 2, cluster: cluster);
        var start = f.Clock.GetUtcNow().AddMinutes(5);
        var match = f.Match(Guid.NewGuid(), provider, [booked.NodeId], 2, start, start.AddHours(1));
        var lease = await f.ScheduleAsync(match);

        await f.PublishAndWaitAsync(Unhealthy(booked, f.Clock.GetUtcNow()));
        Assert.Equal("scheduled", await f.StatusAsync(lease.LeaseId)); // nothing runs yet: nothing is interrupted
        await f.AdvanceAndRunAsync(TimeSpan.FromMinutes(5), async () => await f.StatusAsync(lease.LeaseId) == "active");

        var json = await LeaseJsonAsync(match.RenterOrgId, lease.LeaseId);
        Assert.All(json.GetProperty("slots").EnumerateArray(), s => Assert.Equal(spare.NodeId, s.GetProperty("node_id").GetGuid()));
        Assert.Empty(json.GetProperty("downtime").EnumerateArray());
        Assert.DoesNotContain(f.EventsOf<LeaseInterrupted>(), e => e.LeaseId == lease.LeaseId);
    }

    [Fact]
    public async Task A_late_health_report_older_than_the_last_one_changes_nothing()
    {
        var provider = Guid.NewGuid();
        var node = await f.RegisterNodeAsync(provider, 1);
        var now = f.Clock.GetUtcNow();
        await f.PublishAndWaitAsync(new NodeHealthChanged(node.NodeId, node.ClusterId, provider, "healthy", true, "recovered", now));
        await f.PublishAndWaitAsync(Unhealthy(node, now.AddMinutes(-5)));

        Assert.Equal("healthy", await f.ScalarAsync<string>("SELECT health FROM scheduling.nodes WHERE id = @NodeId", node));
    }
}
