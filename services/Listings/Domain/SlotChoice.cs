namespace Marketplace.Listings.Domain;

/// <param name="NvlinkIsland">Slots of a node with the same island share NVLink (or the vendor's equivalent); null: PCIe only.</param>
public sealed record NodeSlot(Guid Id, int Index, int? NvlinkIsland);

/// <summary>Which accelerators of a node an offer of part of it gets: the rule behind <c>nodes: [{node_id, gpus}]</c>.</summary>
public static class SlotChoice
{
    /// <summary>
    /// <paramref name="count"/> of the node's slots that are not <paramref name="taken"/>, in index order; null when fewer are free.
    /// An offer stays inside one NVLink island when one has room: the island with the fewest free slots that still fits
    /// (best fit, so bigger islands stay whole for bigger offers). Otherwise it takes the islands with the most free slots
    /// first, splitting as few as it can. Lower index first everywhere; PCIe-only slots are all alike.
    /// </summary>
    public static IReadOnlyList<NodeSlot>? Choose(IEnumerable<NodeSlot> slots, IReadOnlySet<Guid> taken, int count)
    {
        var free = slots.Where(s => !taken.Contains(s.Id)).OrderBy(s => s.Index).ToList();
        if (count < 1 || free.Count < count) return null;
        var islands = free.GroupBy(s => s.NvlinkIsland).ToList();
        if (islands.Count == 1 || free.All(s => s.NvlinkIsland is null)) return free.Take(count).ToList();

        var fits = islands.Where(g => g.Count() >= count).OrderBy(g => g.Count()).ThenBy(g => g.Key).FirstOrDefault();
        var chosen = fits is not null
            ? fits.Take(count)
            : islands.OrderByDescending(g => g.Count()).ThenBy(g => g.Key).SelectMany(g => g).Take(count);
        return chosen.OrderBy(s => s.Index).ToList();
    }
}
