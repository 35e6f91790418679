using CsCheck;
using Marketplace.Scheduling.Domain;

namespace Marketplace.Scheduling.Tests;

public sealed class PlacementTests
{
    private static readonly Guid NodeA = Guid.Parse("00000000-0000-0000-0000-00000000000a");
    private static readonly Guid NodeB = Guid.Parse("00000000-0000-0000-0000-00000000000b");
    private static readonly Guid NodeC = Guid.Parse("00000000-0000-0000-0000-00000000000c");

    private static IEnumerable<SlotState> Node(Guid node, int slots, params int[] busy) =>
        Enumerable.Range(0, slots).Select(i => new SlotState(Guid.NewGuid(), node, i, busy.Contains(i)));

    [Fact]
    public void A_gang_that_fits_one_node_goes_to_the_fullest_node_that_still_fits()
    {
        // A has 8 free, B has 3 free, C has 2 free: a gang of 3 takes B and leaves A whole for a gang of 8.
        var slots = Node(NodeA, 8).Concat(Node(NodeB, 8, 0, 1, 2, 3, 4)).Concat(Node(NodeC, 8, 0, 1, 2, 3, 4, 5)).ToList();
        var result = Placement.Place(slots, 3);
        Assert.True(result.Placed);
        Assert.All(result.Slots, s => Assert.Equal(NodeB, s.NodeId));
        Assert.Equal([5, 6, 7], result.Slots.Select(s => s.Index));
    }

    [Fact]
    public void A_gang_larger_than_any_node_spans_whole_nodes_and_best_fits_the_rest()
    {
        var slots = Node(NodeA, 8).Concat(Node(NodeB, 4)).Concat(Node(NodeC, 2)).ToList();
        var result = Placement.Place(slots, 10);
        Assert.Equal(10, result.Slots.Count);
        Assert.Equal(8, result.Slots.Count(s => s.NodeId == NodeA));
        Assert.Equal(2, result.Slots.Count(s => s.NodeId == NodeC)); // C fits the remaining 2 exactly; B stays whole
    }

    [Fact]
    public void Not_enough_free_slots_places_nothing_and_says_how_many_were_free()
    {
        var result = Placement.Place(Node(NodeA, 4, 0, 1, 2), 2);
        Assert.False(result.Placed);
        Assert.Equal(1, result.FreeCount);
    }

    // Up to 6 nodes of 1..8 slots, each slot busy or free, and a gang of 1..24.
    private static readonly Gen<(List<SlotState> Slots, int Count)> Cases =
        from sizes in Gen.Int[1, 8].Array[1, 6]
        from busy in Gen.Bool.Array[sizes.Sum()]
        from count in Gen.Int[1, 24]
        select (Build(sizes, busy), count);

    private static List<SlotState> Build(int[] sizes, bool[] busy)
    {
        var slots = new List<SlotState>();
        var k = 0;
        for (var n = 0; n < sizes.Length; n++)
        {
            var node = new Guid(n + 1, 0, 0, new byte[8]);
            for (var i = 0; i < sizes[n]; i++)
                slots.Add(new SlotState(new Guid(n + 1, (short)i, 1, new byte[8]), node, i, busy[k++]));
        }
        return slots;
    }

    [Fact]
    public void Placement_picks_exactly_count_distinct_free_slots_or_none()
    {
        Cases.Sample(c =>
        {
            var result = Placement.Place(c.Slots, c.Count);
            var free = c.Slots.Count(s => !s.Busy);
            if (free < c.Count) return !result.Placed && result.FreeCount == free;
            return result.Slots.Count == c.Count
                && result.Slots.Select(s => s.SlotId).Distinct().Count() == c.Count
                && result.Slots.All(s => !s.Busy && c.Slots.Contains(s));
        });
    }

    [Fact]
    public void Placement_does_not_depend_on_the_order_of_the_slots()
    {
        Cases.SelectMany(c => Gen.Shuffle(c.Slots.ToArray()), (c, shuffled) => (c.Slots, Shuffled: shuffled, c.Count))
            .Sample(c => Placement.Place(c.Slots, c.Count).Slots.Select(s => s.SlotId)
                .SequenceEqual(Placement.Place(c.Shuffled, c.Count).Slots.Select(s => s.SlotId)));
    }

    [Fact]
    public void A_gang_that_fits_one_node_uses_one_node_with_the_fewest_free_slots_that_fit()
    {
        Cases.Sample(c =>
        {
            var freeByNode = c.Slots.Where(s => !s.Busy).GroupBy(s => s.NodeId).ToDictionary(g => g.Key, g => g.Count());
            var fitting = freeByNode.Values.Where(f => f >= c.Count).ToList();
            if (fitting.Count == 0) return true;
            var result = Placement.Place(c.Slots, c.Count);
            var nodes = result.Slots.Select(s => s.NodeId).Distinct().ToList();
            return nodes.Count == 1 && freeByNode[nodes[0]] == fitting.Min();
        });
    }

    [Fact]
    public void A_gang_spans_no_more_nodes_than_necessary()
    {
        Cases.Sample(c =>
        {
            var result = Placement.Place(c.Slots, c.Count);
            if (!result.Placed) return true;
            // The fewest nodes that can hold the gang: take the largest free counts until they cover it.
            var needed = 0;
            var covered = 0;
            foreach (var f in c.Slots.Where(s => !s.Busy).GroupBy(s => s.NodeId).Select(g => g.Count()).OrderDescending())
            {
                if (covered >= c.Count) break;
                covered += f;
                needed++;
            }
            return result.Slots.Select(s => s.NodeId).Distinct().Count() == needed;
        });
    }
}
