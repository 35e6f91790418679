namespace Marketplace.Scheduling.Domain;

/// <summary>One accelerator slot of a candidate node and whether it is already booked in the wanted window.</summary>
public sealed record SlotState(Guid SlotId, Guid NodeId, int Index, bool Busy);

/// <summary>The outcome of placement: the chosen slots, or why none could be chosen.</summary>
public sealed record PlacementResult(IReadOnlyList<SlotState> Slots, int FreeCount)
{
    public bool Placed => Slots.Count > 0;
}

/// <summary>
/// Chooses concrete slots for a gang of <c>count</c> accelerators. Packs into as few nodes as possible:
/// a gang that fits one node goes to the node with the fewest free slots that still fits (best fit, so large
/// free nodes stay whole for large gangs); a gang larger than any node takes whole nodes, largest first, and
/// the remainder best-fit. Within a node the lowest indices are taken. The result depends only on the set of
/// slots, never on their order (ties break by node id), so every instance places the same way.
/// </summary>
public static class Placement
{
    public static PlacementResult Place(IEnumerable<SlotState> slots, int count)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(count);
        var nodes = slots
            .Where(s => !s.Busy)
            .DistinctBy(s => s.SlotId)
            .GroupBy(s => s.NodeId)
            .Select(g => new FreeNode(g.Key, g.OrderBy(s => s.Index).ThenBy(s => s.SlotId).ToList()))
            .ToList();
        var free = nodes.Sum(n => n.Free.Count);
        if (free < count) return new PlacementResult([], free);

        var chosen = new List<SlotState>(count);
        var remaining = count;
        while (remaining > 0)
        {
            var bestFit = nodes
                .Where(n => n.Free.Count >= remaining)
                .OrderBy(n => n.Free.Count).ThenBy(n => n.NodeId)
                .FirstOrDefault();
            if (bestFit is not null)
            {
                chosen.AddRange(bestFit.Free.Take(remaining));
                break;
            }
            // No node holds the rest: take the largest node whole, which keeps the number of nodes minimal.
            var largest = nodes.OrderByDescending(n => n.Free.Count).ThenBy(n => n.NodeId).First();
            chosen.AddRange(largest.Free);
            remaining -= largest.Free.Count;
            nodes.Remove(largest);
        }
        return new PlacementResult(chosen, free);
    }

    private sealed record FreeNode(Guid NodeId, List<SlotState> Free);
}
