using CsCheck;
using Marketplace.Scheduling.Domain;

namespace Marketplace.Scheduling.Tests;

/// <summary>Placement on real topology: NVLink domains, cluster fabrics, health, verification, maintenance.</summary>
public sealed class TopologyPlacementTests
{
    private static readonly Guid ClusterA = new("aaaaaaaa-0000-0000-0000-000000000000");
    private static readonly Guid ClusterB = new("bbbbbbbb-0000-0000-0000-000000000000");

    private static CandidateNode Node(int n, Guid cluster, string? domain, string? fabric, int slots, int busy = 0,
        bool healthy = true, bool verified = true, bool maintenance = false)
    {
        var id = new Guid(n, 0, 0, new byte[8]);
        return new CandidateNode(id, cluster, domain, fabric,
            Enumerable.Range(0, slots).Select(i => new SlotState(new Guid(n, (short)i, 1, new byte[8]), id, i, i < busy)).ToList(),
            healthy, verified, maintenance);
    }

    [Fact]
    public void A_small_order_packs_into_the_partly_used_node_with_the_least_room()
    {
        var nodes = new[] { Node(1, ClusterA, "r1", "ib", 8), Node(2, ClusterA, "r1", "ib", 8, busy: 5), Node(3, ClusterA, "r1", "ib", 8, busy: 2) };
        var result = Placement.Place(nodes, new PlacementRequest(2));
        Assert.All(result.Slots, s => Assert.Equal(nodes[1].NodeId, s.NodeId));
        Assert.Equal([5, 6], result.Slots.Select(s => s.Index));
    }

    [Fact]
    public void A_gang_takes_whole_nodes_inside_one_nvlink_domain_when_one_can_hold_it()
    {
        // Domain r1 has 3 whole nodes in cluster A; domain r2 has 2 whole and a partly used node: a gang of 16 fits r2
        // exactly (tighter), never mixing domains.
        var nodes = new[]
        {
            Node(1, ClusterA, "r1", "ib", 8), Node(2, ClusterA, "r1", "ib", 8), Node(3, ClusterA, "r1", "ib", 8),
            Node(4, ClusterA, "r2", "ib", 8), Node(5, ClusterA, "r2", "ib", 8), Node(6, ClusterA, "r2", "ib", 8, busy: 4),
        };
        var result = Placement.Place(nodes, new PlacementRequest(16));
        Assert.True(result.Placed);
        Assert.Equal(new[] { nodes[3].NodeId, nodes[4].NodeId }, result.Slots.Select(s => s.NodeId).Distinct().Order());
    }

    [Fact]
    public void A_gang_larger_than_any_domain_stays_inside_one_cluster_fabric()
    {
        var nodes = new[]
        {
            Node(1, ClusterA, "r1", "ib", 8), Node(2, ClusterA, "r2", "ib", 8), // cluster A: 16 free
            Node(3, ClusterB, "r1", "roce", 8), Node(4, ClusterB, "r2", "roce", 8), Node(5, ClusterB, null, "roce", 8), // B: 24
        };
        var result = Placement.Place(nodes, new PlacementRequest(24));
        Assert.True(result.Placed);
        Assert.All(result.Slots, s => Assert.Contains(s.NodeId, nodes.Where(n => n.ClusterId == ClusterB).Select(n => n.NodeId)));

        var tooBig = Placement.Place(nodes, new PlacementRequest(32));
        Assert.Equal(PlacementFailure.Fragmented, tooBig.Failure);
        Assert.Equal(40, tooBig.FreeCount);
        Assert.Equal(24, tooBig.LargestFabricFree);
    }

    [Fact]
    public void Unhealthy_unverified_when_asked_and_in_maintenance_nodes_are_never_used()
    {
        var nodes = new[]
        {
            Node(1, ClusterA, null, "ib", 8, healthy: false), Node(2, ClusterA, null, "ib", 8, maintenance: true),
            Node(3, ClusterA, null, "ib", 8, verified: false), Node(4, ClusterA, null, "ib", 4),
        };
        var anyNode = Placement.Place(nodes, new PlacementRequest(8));
        Assert.All(anyNode.Slots, s => Assert.Equal(nodes[2].NodeId, s.NodeId)); // unverified is fine unless asked
        var verifiedOnly = Placement.Place(nodes, new PlacementRequest(8, RequireVerified: true));
        Assert.False(verifiedOnly.Placed);
        Assert.Equal((PlacementFailure.NotEnoughFree, 4, 3), (verifiedOnly.Failure, verifiedOnly.FreeCount, verifiedOnly.ExcludedNodes));
        Assert.Equal(new Exclusions(Unhealthy: 1, InMaintenance: 1, Unverified: 1, Avoided: 0), verifiedOnly.Excluded);
    }

    [Fact]
    public void An_offer_of_part_of_a_node_is_placed_only_on_its_slots_even_when_other_slots_are_free()
    {
        // Node 1 offers its slots 4..7 only; node 2 is whole and free but not listed at all.
        var part = Node(1, ClusterA, null, "ib", 8, busy: 0);
        var whole = Node(2, ClusterA, null, "ib", 8);
        var offered = part.Slots.Where(s => s.Index >= 4).Select(s => s.SlotId).ToHashSet();

        var four = Placement.Place([part, whole], new PlacementRequest(4, AllowedSlots: offered));
        Assert.Equal([4, 5, 6, 7], four.Slots.Select(s => s.Index));
        Assert.All(four.Slots, s => Assert.Equal(part.NodeId, s.NodeId));

        var five = Placement.Place([part, whole], new PlacementRequest(5, AllowedSlots: offered));
        Assert.Equal((PlacementFailure.NotEnoughFree, 4), (five.Failure, five.FreeCount));
    }

    [Fact]
    public void Placement_never_leaves_the_allowed_slots()
    {
        Cases.SelectMany(c => Gen.Bool.Array[c.Nodes.Sum(n => n.Slots.Count)], (c, allow) => (c.Nodes, c.Request, Allow: allow))
            .Sample(c =>
            {
                var allowed = c.Nodes.SelectMany(n => n.Slots).Where((_, i) => c.Allow[i]).Select(s => s.SlotId).ToHashSet();
                var result = Placement.Place(c.Nodes, c.Request with { AllowedSlots = allowed });
                var allowedFree = c.Nodes.Where(n => Usable(n, c.Request)).SelectMany(n => n.Slots).Count(s => !s.Busy && allowed.Contains(s.SlotId));
                return result.Slots.All(s => allowed.Contains(s.SlotId))
                    && (result.Placed ? result.Slots.Count == c.Request.Count : result.FreeCount == allowedFree);
            });
    }

    private static Gen<T> Pick<T>(params T[] values) => Gen.Int[0, values.Length - 1].Select(i => values[i]);

    // Up to 10 nodes over 2 clusters, 2 fabrics, 3 NVLink domains (or none), 1..8 slots, random occupancy and health.
    private static readonly Gen<CandidateNode> NodeGen =
        from n in Gen.Int[1, 1_000_000]
        from cluster in Pick(ClusterA, ClusterB)
        from domain in Pick<string?>(null, "r1", "r2", "r3")
        from fabric in Pick<string?>(null, "ib", "roce")
        from size in Gen.Int[1, 8]
        from busy in Gen.Bool.Array[size]
        from healthy in Gen.Int[0, 9]
        from verified in Gen.Int[0, 5]
        from maintenance in Gen.Int[0, 9]
        select new CandidateNode(new Guid(n, 0, 0, new byte[8]), cluster, domain, fabric,
            busy.Select((b, i) => new SlotState(new Guid(n, (short)i, 1, new byte[8]), new Guid(n, 0, 0, new byte[8]), i, b)).ToList(),
            healthy > 0, verified > 0, maintenance == 0);

    private static readonly Gen<(CandidateNode[] Nodes, PlacementRequest Request)> Cases =
        from nodes in NodeGen.Array[1, 10]
        from count in Gen.Int[1, 30]
        from requireVerified in Gen.Bool
        select (nodes.DistinctBy(n => n.NodeId).ToArray(), new PlacementRequest(count, requireVerified));

    private static bool Usable(CandidateNode n, PlacementRequest r) => n.Healthy && !n.InMaintenance && (!r.RequireVerified || n.Verified);

    private static int FreeOf(CandidateNode n) => n.Slots.Count(s => !s.Busy);

    [Fact]
    public void Placement_uses_only_free_slots_of_usable_nodes_and_places_whenever_one_fabric_can_hold_the_gang()
    {
        Cases.Sample(c =>
        {
            var result = Placement.Place(c.Nodes, c.Request);
            var usable = c.Nodes.Where(n => Usable(n, c.Request)).ToList();
            var fabricCanHold = usable.GroupBy(n => n.FabricKey).Any(g => g.Sum(FreeOf) >= c.Request.Count);
            if (!result.Placed) return !fabricCanHold && result.Slots.Count == 0;
            var byId = usable.SelectMany(n => n.Slots).ToDictionary(s => s.SlotId);
            return result.Slots.Count == c.Request.Count
                && result.Slots.Select(s => s.SlotId).Distinct().Count() == c.Request.Count
                && result.Slots.All(s => byId.TryGetValue(s.SlotId, out var slot) && !slot.Busy);
        });
    }

    [Fact]
    public void A_gang_never_spans_two_cluster_fabrics()
    {
        Cases.Sample(c =>
        {
            var keys = c.Nodes.ToDictionary(n => n.NodeId, n => n.FabricKey);
            return Placement.Place(c.Nodes, c.Request).Slots.Select(s => keys[s.NodeId]).Distinct().Count() <= 1;
        });
    }

    [Fact]
    public void A_gang_stays_in_one_node_if_one_fits_else_in_one_nvlink_domain_if_one_can_hold_it()
    {
        Cases.Sample(c =>
        {
            var result = Placement.Place(c.Nodes, c.Request);
            if (!result.Placed) return true;
            var usable = c.Nodes.Where(n => Usable(n, c.Request)).ToList();
            var nodes = result.Slots.Select(s => s.NodeId).Distinct().ToList();
            var fits = usable.Where(n => FreeOf(n) >= c.Request.Count).Select(FreeOf).ToList();
            if (fits.Count > 0)
                return nodes.Count == 1 && FreeOf(usable.Single(n => n.NodeId == nodes[0])) == fits.Min();
            var domainCanHold = usable.GroupBy(n => n.DomainKey).Any(g => g.Sum(FreeOf) >= c.Request.Count);
            var domains = usable.Where(n => nodes.Contains(n.NodeId)).Select(n => n.DomainKey).Distinct().Count();
            return !domainCanHold || domains == 1;
        });
    }

    [Fact]
    public void A_multi_node_gang_takes_every_node_whole_but_at_most_one()
    {
        Cases.Sample(c =>
        {
            var result = Placement.Place(c.Nodes, c.Request);
            var taken = result.Slots.GroupBy(s => s.NodeId).ToDictionary(g => g.Key, g => g.Count());
            if (taken.Count <= 1) return true;
            var partial = taken.Count(t => t.Value < FreeOf(c.Nodes.Single(n => n.NodeId == t.Key)));
            return partial <= 1;
        });
    }

    [Fact]
    public void Placement_does_not_depend_on_the_order_of_nodes_or_slots()
    {
        Cases.SelectMany(c => Gen.Shuffle(c.Nodes.Select(n => n with { Slots = n.Slots.Reverse().ToList() }).ToArray()),
                (c, shuffled) => (c.Nodes, Shuffled: shuffled, c.Request))
            .Sample(c => Placement.Place(c.Nodes, c.Request).Slots.Select(s => s.SlotId)
                .SequenceEqual(Placement.Place(c.Shuffled, c.Request).Slots.Select(s => s.SlotId)));
    }

    [Fact]
    public void Avoided_nodes_are_never_used()
    {
        Cases.Sample(c =>
        {
            var avoid = c.Nodes.Take(1).Select(n => n.NodeId).ToHashSet();
            return Placement.Place(c.Nodes, c.Request with { AvoidNodes = avoid }).Slots.All(s => !avoid.Contains(s.NodeId));
        });
    }
}
