using System.Net.Http.Json;
using System.Text.Json;
using Marketplace.Contracts;

namespace Marketplace.Scheduling.Tests;

/// <summary>A match is placed only on what its offer sold (its slots when it is part of its nodes) and, when the renter asks, on verified nodes only.</summary>
public sealed class OfferedCapacityTests(SchedulingFixture f) : IClassFixture<SchedulingFixture>
{
    private async Task<IReadOnlyList<(Guid NodeId, int Index)>> SlotsAsync(Guid renter, Guid leaseId)
    {
        var json = await f.Factory.ClientFor(renter, "renter").GetFromJsonAsync<JsonElement>($"/v1/leases/{leaseId}");
        return json.GetProperty("slots").EnumerateArray()
            .Select(s => (s.GetProperty("node_id").GetGuid(), s.GetProperty("index").GetInt32())).ToList();
    }

    [Fact]
    public async Task A_match_on_part_of_a_node_books_only_its_listed_slots_even_when_other_slots_of_the_node_are_free()
    {
        var provider = Guid.NewGuid();
        var node = await f.RegisterNodeAsync(provider, 8);
        var start = f.Clock.GetUtcNow().AddHours(1);
        // The offer sold slots 2, 3, 6 and 7; slots 0, 1, 4 and 5 stay the provider's (free, and lowest-index-first would take them).
        var offered = node.Slots.Where(s => s.Index is 2 or 3 or 6 or 7).Select(s => s.SlotId).ToList();
        OrderMatched PartMatch(int count) =>
            f.Match(Guid.NewGuid(), provider, [node.NodeId], count, start, start.AddHours(1)) with { SlotIds = offered };

        var three = await f.ScheduleAsync(PartMatch(3));
        var one = await f.ScheduleAsync(PartMatch(1));
        var full = Assert.IsType<PlacementFailed>(await f.PlaceAsync(PartMatch(1)));

        Assert.Equal([2, 3, 6], (await SlotsAsync(three.RenterOrgId, three.LeaseId)).Select(s => s.Index));
        Assert.Equal([7], (await SlotsAsync(one.RenterOrgId, one.LeaseId)).Select(s => s.Index));
        Assert.All(three.SlotIds.Concat(one.SlotIds), id => Assert.Contains(id, offered));
        Assert.Contains("only 0 of 1 h100-sxm slots are free on the offered slots", full.Reason, StringComparison.Ordinal);
        Assert.True(full.SlotsBooked); // only booked: Bidding may clear the order again soon
        Assert.Equal(0, await f.ScalarAsync<long>(
            "SELECT count(*) FROM scheduling.bookings b JOIN scheduling.gpu_slots s ON s.id = b.slot_id WHERE s.node_id = @NodeId AND b.slot_id <> ALL(@offered)",
            new { node.NodeId, offered = offered.ToArray() }));

        // A whole-node match of the same node may use the rest.
        var rest = await f.ScheduleAsync(f.Match(Guid.NewGuid(), provider, [node.NodeId], 4, start, start.AddHours(1)));
        Assert.Equal([0, 1, 4, 5], (await SlotsAsync(rest.RenterOrgId, rest.LeaseId)).Select(s => s.Index));
        Assert.Equal(0, await f.OverlappingBookingsAsync());
    }

    [Fact]
    public async Task A_gang_on_listed_slots_across_two_nodes_never_takes_an_unlisted_slot()
    {
        var provider = Guid.NewGuid();
        var cluster = Guid.NewGuid();
        var a = await f.RegisterNodeAsync(provider, 8, cluster: cluster, fabric: "ib");
        var b = await f.RegisterNodeAsync(provider, 8, cluster: cluster, fabric: "ib");
        var start = f.Clock.GetUtcNow().AddHours(2);
        var offered = a.Slots.Take(4).Concat(b.Slots.Take(4)).Select(s => s.SlotId).ToList();

        var lease = await f.ScheduleAsync(f.Match(Guid.NewGuid(), provider, [a.NodeId, b.NodeId], 8, start, start.AddHours(1)) with { SlotIds = offered });

        Assert.Equal(offered.Order(), lease.SlotIds.Order());
    }

    [Fact]
    public async Task A_verified_only_match_is_not_placed_on_an_unverified_node_and_the_reason_says_so()
    {
        var provider = Guid.NewGuid();
        var node = await f.RegisterNodeAsync(provider, 8);
        await f.PublishAndWaitAsync(new NodeHealthChanged(node.NodeId, node.ClusterId, provider, "healthy", false,
            "inventory differs: 7 GPUs seen, 8 declared", f.Clock.GetUtcNow()));
        var start = f.Clock.GetUtcNow().AddHours(1);
        var match = f.Match(Guid.NewGuid(), provider, [node.NodeId], 4, start, start.AddHours(1));

        var refused = Assert.IsType<PlacementFailed>(await f.PlaceAsync(match with { MatchId = Guid.NewGuid(), OrderId = Guid.NewGuid(), VerifiedOnly = true }));
        Assert.Contains("only 0 of 4 h100-sxm slots are free on the offered nodes", refused.Reason, StringComparison.Ordinal);
        Assert.Contains("of the offered nodes, 1 is unverified (the order asks for verified capacity only)", refused.Reason, StringComparison.Ordinal);
        Assert.False(refused.SlotsBooked); // a node Bidding cannot see is unverified: clearing again soon would not help

        // The same order without the wish is placed there.
        await f.ScheduleAsync(match);
    }

    [Fact]
    public async Task A_node_no_agent_has_reported_on_is_not_verified_capacity_until_Listings_says_so()
    {
        var provider = Guid.NewGuid();
        var node = await f.RegisterNodeAsync(provider, 8);
        var start = f.Clock.GetUtcNow().AddHours(1);
        var match = f.Match(Guid.NewGuid(), provider, [node.NodeId], 4, start, start.AddHours(1)) with { VerifiedOnly = true };

        var refused = Assert.IsType<PlacementFailed>(await f.PlaceAsync(match));
        Assert.Contains("1 is unverified", refused.Reason, StringComparison.Ordinal);

        await f.PublishAndWaitAsync(new NodeHealthChanged(node.NodeId, node.ClusterId, provider, "healthy", true, "healthy", f.Clock.GetUtcNow()));
        await f.ScheduleAsync(match with { MatchId = Guid.NewGuid(), OrderId = Guid.NewGuid() });
    }

    [Fact]
    public async Task A_verified_only_lease_is_never_moved_onto_an_unverified_spare_node()
    {
        var provider = Guid.NewGuid();
        var cluster = Guid.NewGuid();
        var primary = await f.RegisterNodeAsync(provider, 4, cluster: cluster, fabric: "ib");
        var unverified = await f.RegisterNodeAsync(provider, 4, cluster: cluster, fabric: "ib");
        var verified = await f.RegisterNodeAsync(provider, 8, cluster: cluster, fabric: "ib"); // best fit alone would pick the unverified one
        // A node is unverified until its agent's inventory matched (Listings says so); these two have.
        foreach (var node in new[] { primary, verified })
            await f.PublishAndWaitAsync(new NodeHealthChanged(node.NodeId, cluster, provider, "healthy", true, "healthy", f.Clock.GetUtcNow()));
        await f.PublishAndWaitAsync(new NodeHealthChanged(unverified.NodeId, cluster, provider, "healthy", false, "inventory differs", f.Clock.GetUtcNow()));
        var start = f.Clock.GetUtcNow();
        var match = f.Match(Guid.NewGuid(), provider, [primary.NodeId], 4, start, start.AddHours(1)) with { VerifiedOnly = true };
        var lease = await f.ScheduleAsync(match);
        await f.AdvanceAndRunAsync(TimeSpan.Zero, async () => await f.StatusAsync(lease.LeaseId) == "active");
        f.Clock.Advance(TimeSpan.FromMinutes(5));

        await f.PublishAndWaitAsync(new NodeHealthChanged(primary.NodeId, cluster, provider, "unhealthy", true, "Xid 79", f.Clock.GetUtcNow()));

        await f.EventAsync<LeaseResumed>(e => e.LeaseId == lease.LeaseId);
        Assert.All(await SlotsAsync(match.RenterOrgId, lease.LeaseId), s => Assert.Equal(verified.NodeId, s.NodeId));
    }
}
