namespace Marketplace.Scheduling.Domain;

/// <summary>One accelerator slot of a candidate node and whether it is already booked in the wanted window.</summary>
public sealed record SlotState(Guid SlotId, Guid NodeId, int Index, bool Busy);

/// <summary>
/// A node that could take part of a placement, as seen for one time window: its topology (cluster, NVLink domain,
/// scale-out fabric), whether it may be used at all in the window, and its slots with their occupancy.
/// </summary>
public sealed record CandidateNode(
    Guid NodeId,
    Guid ClusterId,
    string? NvlinkDomain,
    string? Fabric,
    IReadOnlyList<SlotState> Slots,
    bool Healthy = true,
    bool Verified = true,
    bool InMaintenance = false)
{
    /// <summary>Nodes with the same key share an NVLink/NVSwitch domain; a node without one is its own domain.</summary>
    public string DomainKey => NvlinkDomain is null ? "node:" + NodeId.ToString("N") : $"{FabricKey}/{NvlinkDomain}";

    /// <summary>Multi-node gangs stay inside one cluster fabric; an unknown fabric means "this cluster only".</summary>
    public string FabricKey => $"{ClusterId:N}/{Fabric ?? "-"}";
}

/// <summary>
/// What to place: <paramref name="Count"/> accelerators, optionally only on verified nodes, never on
/// <paramref name="AvoidNodes"/>, and, when <paramref name="AllowedSlots"/> is set, only on those slots (an offer of part
/// of its nodes); the other slots of a candidate node are not for sale to this request, whether free or not.
/// </summary>
public sealed record PlacementRequest(
    int Count, bool RequireVerified = false, IReadOnlySet<Guid>? AvoidNodes = null, IReadOnlySet<Guid>? AllowedSlots = null);

/// <summary>Why nothing was placed.</summary>
public enum PlacementFailure
{
    None,

    /// <summary>Fewer free slots than asked on the usable nodes (see <see cref="PlacementResult.FreeCount"/>).</summary>
    NotEnoughFree,

    /// <summary>Enough free slots in total, but no single cluster fabric holds the gang.</summary>
    Fragmented,
}

/// <summary>How many candidate nodes were left out, by cause (a node with several causes counts under the first).</summary>
public readonly record struct Exclusions(int Unhealthy, int InMaintenance, int Unverified, int Avoided)
{
    public int Total => Unhealthy + InMaintenance + Unverified + Avoided;
}

/// <summary>The outcome of placement: the chosen slots, or why none could be chosen.</summary>
public sealed record PlacementResult(IReadOnlyList<SlotState> Slots, int FreeCount, Exclusions Excluded, PlacementFailure Failure)
{
    public bool Placed => Failure == PlacementFailure.None;

    public int ExcludedNodes => Excluded.Total;

    /// <summary>The most free slots any single cluster fabric has (what a renter could get instead).</summary>
    public int LargestFabricFree { get; init; }
}

/// <summary>
/// Chooses concrete slots for <c>count</c> accelerators on a provider's topology. Pure: same input, same answer on
/// every instance (ties break by node id, never by input order).
/// <list type="bullet">
/// <item>Unhealthy, in-maintenance, avoided and (when asked) unverified nodes are never used; with allowed slots, no
/// other slot is ever used.</item>
/// <item>An order that fits one node goes to the node with the fewest free slots that still fits (best fit): small
/// orders fill partly used nodes and whole nodes stay whole for gangs.</item>
/// <item>A gang larger than every node takes whole nodes inside one NVLink domain when one domain can hold it
/// (the tightest such domain), otherwise inside one cluster fabric (the tightest such fabric, whole domains first);
/// it never spans two fabrics. Inside the chosen group, nodes are taken whole, largest first, and the remainder goes
/// best-fit, which also keeps the number of nodes minimal.</item>
/// </list>
/// </summary>
public static class Placement
{
    /// <summary>Places on plain slots of one cluster and fabric, every node its own NVLink domain and usable.</summary>
    public static PlacementResult Place(IEnumerable<SlotState> slots, int count)
    {
        var cluster = Guid.Empty;
        var nodes = slots.DistinctBy(s => s.SlotId).GroupBy(s => s.NodeId)
            .Select(g => new CandidateNode(g.Key, cluster, null, null, g.ToList()));
        return Place(nodes.ToList(), new PlacementRequest(count));
    }

    /// <summary>Places on <paramref name="candidates"/>, distinct nodes (one entry per node id).</summary>
    public static PlacementResult Place(IReadOnlyList<CandidateNode> candidates, PlacementRequest request)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(request.Count);
        if (request.AllowedSlots is { } allowed)
            candidates = candidates.Select(c => c with { Slots = c.Slots.Where(s => allowed.Contains(s.SlotId)).ToList() })
                .Where(c => c.Slots.Count > 0).ToList();
        var count = request.Count;
        // One pass over the fleet without allocating per node: usable nodes, their free counts, the best single fit.
        // Free slot lists are built only for the nodes a multi-node gang may use.
        var usable = new List<(CandidateNode Node, int Free)>(candidates.Count);
        var excluded = new Exclusions();
        var totalFree = 0;
        CandidateNode? single = null;
        var singleFree = int.MaxValue;
        foreach (var c in candidates)
        {
            if (!c.Healthy || c.InMaintenance || (request.RequireVerified && !c.Verified) || (request.AvoidNodes?.Contains(c.NodeId) ?? false))
            {
                excluded = Exclude(excluded, c, request);
                continue;
            }
            var free = 0;
            var slots = c.Slots;
            for (var i = 0; i < slots.Count; i++) // an indexer, not foreach: no enumerator per node on a 100k-GPU fleet
                if (!slots[i].Busy) free++;
            if (free == 0) continue;
            usable.Add((c, free));
            totalFree += free;
            if (free >= count && (free < singleFree || (free == singleFree && c.NodeId.CompareTo(single!.NodeId) < 0)))
            {
                single = c;
                singleFree = free;
            }
        }

        if (totalFree < count)
            return Failed(usable, totalFree, excluded, PlacementFailure.NotEnoughFree);
        // One node is always the best topology: best fit across every usable node.
        if (single is not null)
            return new PlacementResult(FreeSlots(single).Take(count).ToList(), totalFree, excluded, PlacementFailure.None);

        // A multi-node gang: the tightest NVLink domain that holds it, else the tightest cluster fabric.
        var group = Tightest(usable, GroupKey.DomainOf, count) ?? Tightest(usable, GroupKey.FabricOf, count);
        if (group is null)
            return Failed(usable, totalFree, excluded, PlacementFailure.Fragmented);
        var nodes = group.Select(n => new FreeNode(n.Node, FreeSlots(n.Node), n.Free == n.Node.Slots.Count)).ToList();
        return new PlacementResult(Fill(nodes, count), totalFree, excluded, PlacementFailure.None);
    }

    private static Exclusions Exclude(Exclusions e, CandidateNode c, PlacementRequest request) =>
        request.AvoidNodes?.Contains(c.NodeId) ?? false ? e with { Avoided = e.Avoided + 1 }
        : !c.Healthy ? e with { Unhealthy = e.Unhealthy + 1 }
        : c.InMaintenance ? e with { InMaintenance = e.InMaintenance + 1 }
        : e with { Unverified = e.Unverified + 1 };

    private static PlacementResult Failed(List<(CandidateNode Node, int Free)> usable, int totalFree, Exclusions excluded, PlacementFailure failure) =>
        new([], totalFree, excluded, failure)
        {
            LargestFabricFree = usable.Count == 0 ? 0 : usable.GroupBy(n => n.Node.FabricKey).Max(g => g.Sum(n => n.Free)),
        };

    /// <summary>A node's free slots, lowest index first (slot id breaks ties, so input order never matters).</summary>
    private static List<SlotState> FreeSlots(CandidateNode node)
    {
        var free = node.Slots.Where(s => !s.Busy).ToList();
        free.Sort(static (a, b) => a.Index != b.Index ? a.Index.CompareTo(b.Index) : a.SlotId.CompareTo(b.SlotId));
        return free;
    }

    private static List<(CandidateNode Node, int Free)>? Tightest(
        List<(CandidateNode Node, int Free)> usable, Func<CandidateNode, GroupKey> key, int count)
    {
        var groups = new Dictionary<GroupKey, (int Free, List<(CandidateNode, int)> Nodes)>();
        foreach (var n in usable)
        {
            var k = key(n.Node);
            var g = groups.TryGetValue(k, out var existing) ? existing : (0, []);
            g.Nodes.Add(n);
            groups[k] = (g.Free + n.Free, g.Nodes);
        }
        (GroupKey Key, int Free, List<(CandidateNode, int)> Nodes)? best = null;
        foreach (var (k, g) in groups)
            if (g.Free >= count && (best is null || g.Free < best.Value.Free || (g.Free == best.Value.Free && k.CompareTo(best.Value.Key) < 0)))
                best = (k, g.Free, g.Nodes);
        return best?.Nodes;
    }

    /// <summary>
    /// An NVLink domain or a cluster fabric as a value (no string per node per decision); the same groups as
    /// <see cref="CandidateNode.DomainKey"/> and <see cref="CandidateNode.FabricKey"/>, ordered ordinally for ties.
    /// </summary>
    private readonly record struct GroupKey(Guid Cluster, string? Fabric, string? Domain, Guid Node) : IComparable<GroupKey>
    {
        public static GroupKey DomainOf(CandidateNode n) =>
            n.NvlinkDomain is null ? new(n.ClusterId, n.Fabric, null, n.NodeId) : new(n.ClusterId, n.Fabric, n.NvlinkDomain, Guid.Empty);

        public static GroupKey FabricOf(CandidateNode n) => new(n.ClusterId, n.Fabric, null, Guid.Empty);

        public int CompareTo(GroupKey other)
        {
            var c = Cluster.CompareTo(other.Cluster);
            if (c == 0) c = string.CompareOrdinal(Fabric, other.Fabric);
            if (c == 0) c = string.CompareOrdinal(Domain, other.Domain);
            return c != 0 ? c : Node.CompareTo(other.Node);
        }
    }

    /// <summary>Whole nodes, largest first (entirely free ones, then those of the fullest NVLink domain), then the rest best-fit.</summary>
    private static List<SlotState> Fill(List<FreeNode> nodes, int count)
    {
        var domainFree = nodes.GroupBy(n => GroupKey.DomainOf(n.Node)).ToDictionary(g => g.Key, g => g.Sum(n => n.Free.Count));
        var order = nodes
            .OrderByDescending(n => n.Free.Count)
            .ThenByDescending(n => n.Whole)
            .ThenByDescending(n => domainFree[GroupKey.DomainOf(n.Node)])
            .ThenBy(n => GroupKey.DomainOf(n.Node))
            .ThenBy(n => n.Node.NodeId)
            .ToList();
        var chosen = new List<SlotState>(count);
        var remaining = count;
        while (remaining > 0)
        {
            FreeNode? fit = null;
            foreach (var n in order)
                if (n.Free.Count >= remaining && (fit is null || n.Free.Count < fit.Free.Count
                    || (n.Free.Count == fit.Free.Count && n.Node.NodeId.CompareTo(fit.Node.NodeId) < 0)))
                    fit = n;
            if (fit is not null)
            {
                chosen.AddRange(fit.Free.Take(remaining));
                break;
            }
            var largest = order[0];
            chosen.AddRange(largest.Free);
            remaining -= largest.Free.Count;
            order.RemoveAt(0);
        }
        return chosen;
    }

    private sealed record FreeNode(CandidateNode Node, List<SlotState> Free, bool Whole);
}
