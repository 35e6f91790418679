namespace Marketplace.Scheduling.Domain;

/// <summary>A half-open time range [Start, End); a null bound is open (maintenance without an end).</summary>
public readonly record struct TimeRange(DateTimeOffset? Start, DateTimeOffset? End)
{
    public bool Overlaps(DateTimeOffset start, DateTimeOffset end) => (Start is null || Start < end) && (End is null || start < End);
}

/// <summary>A node as a calendar knows it: its topology and health, its slots (id, index) and its maintenance windows.</summary>
public sealed record CalendarNode(
    Guid NodeId, Guid ClusterId, string? NvlinkDomain, string? Fabric, bool Healthy, bool Verified,
    IReadOnlyList<(Guid SlotId, int Index)> Slots, IReadOnlyList<TimeRange> Maintenance);

/// <summary>
/// The bookings of some nodes over a span of time, read once, so that several placements with different windows are
/// decided one after the other without reading the database again: each sees the slots booked before it (in the
/// database or by an earlier placement of the same batch) as busy wherever the times overlap. Pure: no I/O.
/// </summary>
public sealed class SlotCalendar
{
    private readonly Dictionary<Guid, CalendarNode> _nodes;
    private readonly Dictionary<Guid, List<TimeRange>> _booked = [];

    public SlotCalendar(IEnumerable<CalendarNode> nodes, IEnumerable<(Guid SlotId, TimeRange During)> bookings)
    {
        _nodes = nodes.ToDictionary(n => n.NodeId);
        foreach (var (slot, during) in bookings) Add(slot, during);
    }

    /// <summary>The candidates for a placement on <paramref name="nodeIds"/> over [start, end), as <see cref="Placement"/> takes them.</summary>
    public IReadOnlyList<CandidateNode> Candidates(IEnumerable<Guid> nodeIds, DateTimeOffset start, DateTimeOffset end) =>
        nodeIds.Distinct().Where(_nodes.ContainsKey).Select(id =>
        {
            var n = _nodes[id];
            var slots = n.Slots.Select(s => new SlotState(s.SlotId, n.NodeId, s.Index, IsBooked(s.SlotId, start, end))).ToList();
            return new CandidateNode(n.NodeId, n.ClusterId, n.NvlinkDomain, n.Fabric, slots, n.Healthy, n.Verified,
                n.Maintenance.Any(m => m.Overlaps(start, end)));
        }).ToList();

    /// <summary>Books the slots over [start, end) in this calendar: later placements see them busy then.</summary>
    public void Book(IEnumerable<Guid> slotIds, DateTimeOffset start, DateTimeOffset end)
    {
        foreach (var slot in slotIds) Add(slot, new TimeRange(start, end));
    }

    private bool IsBooked(Guid slotId, DateTimeOffset start, DateTimeOffset end) =>
        _booked.TryGetValue(slotId, out var ranges) && ranges.Exists(r => r.Overlaps(start, end));

    private void Add(Guid slotId, TimeRange during)
    {
        if (!_booked.TryGetValue(slotId, out var ranges)) _booked[slotId] = ranges = [];
        ranges.Add(during);
    }
}
