using System.Net.Http.Json;
using System.Text.Json;
using Marketplace.Contracts;

namespace Marketplace.Scheduling.Tests;

/// <summary>
/// Where a failed node's lease may go: the free slots of its own offer first, then the provider's capacity in the fabric
/// that no other active offer sells during the rest of the lease; never capacity Bidding is selling to someone else.
/// </summary>
public sealed class ReplacementCapacityTests(SchedulingFixture f) : IClassFixture<SchedulingFixture>
{
    private OfferPublished Offer(Guid provider, Guid cluster, IEnumerable<NodeRegistered> nodes, DateTimeOffset from, DateTimeOffset to,
        IReadOnlyList<Guid>? slotIds = null)
    {
        var list = nodes.ToList();
        return new OfferPublished(Guid.NewGuid(), provider, cluster, list.Select(n => n.NodeId).ToList(), SchedulingFixture.Model,
            "cn-east", "CN", slotIds?.Count ?? list.Sum(n => n.Slots.Count), from, to, new Money(235, "CNY"), 60, false, f.Clock.GetUtcNow())
        { SlotIds = slotIds };
    }

    /// <summary>A running lease of <paramref name="count"/> GPUs on <paramref name="offer"/>, placed on <paramref name="on"/> (the tightest node of the offer).</summary>
    private async Task<(LeaseScheduled Lease, OrderMatched Match)> RunningLeaseAsync(OfferPublished offer, int count, NodeRegistered on)
    {
        var start = f.Clock.GetUtcNow();
        var match = f.Match(Guid.NewGuid(), offer.ProviderOrgId, offer.NodeIds, count, start, start.AddHours(2)) with
        {
            OfferId = offer.OfferId,
            SlotIds = offer.SlotIds,
        };
        var lease = await f.ScheduleAsync(match);
        Assert.All(await NodesOfAsync(match.RenterOrgId, lease.LeaseId), n => Assert.Equal(on.NodeId, n));
        await f.AdvanceAndRunAsync(TimeSpan.Zero, async () => await f.StatusAsync(lease.LeaseId) == "active");
        f.Clock.Advance(TimeSpan.FromMinutes(10));
        return (lease, match);
    }

    private async Task<IReadOnlyList<Guid>> NodesOfAsync(Guid renter, Guid leaseId) =>
        (await f.Factory.ClientFor(renter, "renter").GetFromJsonAsync<JsonElement>($"/v1/leases/{leaseId}"))
        .GetProperty("slots").EnumerateArray().Select(s => s.GetProperty("node_id").GetGuid()).ToList();

    private async Task FailAsync(NodeRegistered node) =>
        await f.PublishAndWaitAsync(new NodeHealthChanged(node.NodeId, node.ClusterId, node.ProviderOrgId, "unhealthy", true,
            "node stopped answering heartbeats", f.Clock.GetUtcNow()));

    [Fact]
    public async Task A_failed_node_is_replaced_from_the_lease_s_own_offer_before_unoffered_capacity()
    {
        var provider = Guid.NewGuid();
        var cluster = Guid.NewGuid();
        var primary = await f.RegisterNodeAsync(provider, 8, cluster: cluster, fabric: "ib");
        var inOffer = await f.RegisterNodeAsync(provider, 16, cluster: cluster, fabric: "ib");
        var unoffered = await f.RegisterNodeAsync(provider, 8, cluster: cluster, fabric: "ib"); // the tighter fit, were it allowed first
        var now = f.Clock.GetUtcNow();
        var offer = Offer(provider, cluster, [primary, inOffer], now.AddMinutes(-1), now.AddHours(6));
        await f.PublishAndWaitAsync(offer);
        var (lease, match) = await RunningLeaseAsync(offer, 8, primary);

        await FailAsync(primary);

        await f.EventAsync<LeaseResumed>(e => e.LeaseId == lease.LeaseId);
        Assert.All(await NodesOfAsync(match.RenterOrgId, lease.LeaseId), n => Assert.Equal(inOffer.NodeId, n));
        Assert.Equal(0, await f.ScalarAsync<long>(
            "SELECT count(*) FROM scheduling.bookings b JOIN scheduling.gpu_slots s ON s.id = b.slot_id WHERE s.node_id = @NodeId", unoffered));
    }

    [Fact]
    public async Task Capacity_another_active_offer_sells_is_never_taken_and_the_lease_fails_as_the_provider_s_fault()
    {
        var provider = Guid.NewGuid();
        var cluster = Guid.NewGuid();
        var primary = await f.RegisterNodeAsync(provider, 8, cluster: cluster, fabric: "ib");
        var soldElsewhere = await f.RegisterNodeAsync(provider, 8, cluster: cluster, fabric: "ib");
        var now = f.Clock.GetUtcNow();
        var offer = Offer(provider, cluster, [primary], now.AddMinutes(-1), now.AddHours(6));
        await f.PublishAndWaitAsync(offer);
        await f.PublishAndWaitAsync(Offer(provider, cluster, [soldElsewhere], now, now.AddHours(6)));
        var (lease, _) = await RunningLeaseAsync(offer, 8, primary);

        await FailAsync(primary);

        var ended = await f.EventAsync<LeaseEnded>(e => e.LeaseId == lease.LeaseId);
        Assert.Equal(("failed", "provider"), (ended.Status, ended.Cause));
        Assert.Contains("no spare h100-sxm capacity in its cluster fabric could replace its 8 slot(s)", ended.Reason, StringComparison.Ordinal);
        Assert.Contains("0 free in its offer or outside the provider's active offers; 8 more free but sold in other offers", ended.Reason, StringComparison.Ordinal);
        Assert.Equal(0, await f.ScalarAsync<long>(
            "SELECT count(*) FROM scheduling.bookings b JOIN scheduling.gpu_slots s ON s.id = b.slot_id WHERE s.node_id = @NodeId", soldElsewhere));
    }

    [Fact]
    public async Task Capacity_of_a_withdrawn_offer_or_of_one_that_sells_only_after_the_lease_is_spare()
    {
        var provider = Guid.NewGuid();
        var cluster = Guid.NewGuid();
        var primary = await f.RegisterNodeAsync(provider, 4, cluster: cluster, fabric: "roce");
        var withdrawn = await f.RegisterNodeAsync(provider, 8, cluster: cluster, fabric: "roce");
        var later = await f.RegisterNodeAsync(provider, 4, cluster: cluster, fabric: "roce");
        var sold = await f.RegisterNodeAsync(provider, 4, cluster: cluster, fabric: "roce");
        var now = f.Clock.GetUtcNow();
        var offer = Offer(provider, cluster, [primary], now.AddMinutes(-1), now.AddHours(6));
        await f.PublishAndWaitAsync(offer);
        var withdrawnOffer = Offer(provider, cluster, [withdrawn], now, now.AddHours(6));
        await f.PublishAndWaitAsync(withdrawnOffer);
        await f.PublishAndWaitAsync(new OfferWithdrawn(withdrawnOffer.OfferId, provider, now));
        await f.PublishAndWaitAsync(Offer(provider, cluster, [later], now.AddHours(3), now.AddHours(6))); // the lease ends at +2 h
        await f.PublishAndWaitAsync(Offer(provider, cluster, [sold], now, now.AddHours(6)));
        var (first, firstMatch) = await RunningLeaseAsync(offer, 4, primary);

        await FailAsync(primary);

        // Best fit among the spare nodes: "later" (4 free) before "withdrawn" (8 free); "sold" is never a candidate.
        await f.EventAsync<LeaseResumed>(e => e.LeaseId == first.LeaseId);
        Assert.All(await NodesOfAsync(firstMatch.RenterOrgId, first.LeaseId), n => Assert.Equal(later.NodeId, n));

        await FailAsync(later);
        await f.EventAsync<LeaseResumed>(e => e.LeaseId == first.LeaseId && e.At == f.Clock.GetUtcNow());
        Assert.All(await NodesOfAsync(firstMatch.RenterOrgId, first.LeaseId), n => Assert.Equal(withdrawn.NodeId, n));
        Assert.Equal(0, await f.ScalarAsync<long>(
            "SELECT count(*) FROM scheduling.bookings b JOIN scheduling.gpu_slots s ON s.id = b.slot_id WHERE s.node_id = @NodeId", sold));
    }

    [Fact]
    public async Task Of_a_node_partly_sold_in_another_offer_only_its_unsold_slots_replace()
    {
        var provider = Guid.NewGuid();
        var cluster = Guid.NewGuid();
        var primary = await f.RegisterNodeAsync(provider, 4, cluster: cluster, fabric: "ib");
        var shared = await f.RegisterNodeAsync(provider, 8, cluster: cluster, fabric: "ib");
        var now = f.Clock.GetUtcNow();
        var offer = Offer(provider, cluster, [primary], now.AddMinutes(-1), now.AddHours(6));
        await f.PublishAndWaitAsync(offer);
        var soldSlots = shared.Slots.Where(s => s.Index < 4).Select(s => s.SlotId).ToList();
        await f.PublishAndWaitAsync(Offer(provider, cluster, [shared], now, now.AddHours(6), soldSlots));
        var (lease, _) = await RunningLeaseAsync(offer, 4, primary);

        await FailAsync(primary);

        await f.EventAsync<LeaseResumed>(e => e.LeaseId == lease.LeaseId);
        var indexes = await f.ScalarAsync<string>("""
            SELECT string_agg(s.index::text, ',' ORDER BY s.index) FROM scheduling.bookings b JOIN scheduling.gpu_slots s ON s.id = b.slot_id
            WHERE b.lease_id = @LeaseId AND NOT b.released
            """, new { lease.LeaseId });
        Assert.Equal("4,5,6,7", indexes);
    }
}
