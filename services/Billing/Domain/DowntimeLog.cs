namespace Marketplace.Billing.Domain;

/// <summary>
/// A lease's downtime as Billing stores it, one row per interruption plus the resumes that no interruption has claimed
/// yet: <see cref="Cause"/> empty marks such a resume (a stub, zero length: never downtime by itself).
/// </summary>
public readonly record struct DowntimeRow(DateTime StartedAt, DateTime? EndedAt, string Cause, string? Reason);

/// <summary>
/// Pairs a lease's interruptions with its resumes (pure). LeaseInterrupted and LeaseResumed travel on different queues
/// and are consumed concurrently, so they arrive in any order: after an outage of Billing, a lease's whole history of
/// interruptions may arrive at once, its resumes before its interruptions. Whatever the order, the rows are the same:
/// in start order, each interruption ends at the first resume at or after its start that no earlier interruption took
/// (none: still down, until the lease ends); every other resume is kept as a stub, for an interruption that may still
/// arrive. Scheduling has one interruption open at a time, but the start it reports is the failure's time, which may be
/// before the previous interruption's resume (a gang lease: node B's failure handled after node A's replacement ran):
/// the resume then ends the earlier interruption and the later one ends at the next resume, so every resume is used and
/// the time down is the same as Scheduling's (bounding an interruption by the next one's start left the earlier open
/// until the lease ended).
/// </summary>
public static class DowntimeLog
{
    public const string StubReason = "resume before interruption";

    /// <summary>The stored rows with an interruption added (a second one at the same start is ignored: the first stays).</summary>
    public static List<DowntimeRow> Interrupted(IReadOnlyList<DowntimeRow> rows, DateTime at, string cause, string? reason) =>
        Pair(Interruptions(rows).Append(new DowntimeRow(at, null, cause, reason)), Resumes(rows));

    /// <summary>The stored rows with a resume added.</summary>
    public static List<DowntimeRow> Resumed(IReadOnlyList<DowntimeRow> rows, DateTime at) =>
        Pair(Interruptions(rows), Resumes(rows).Append(at));

    private static IEnumerable<DowntimeRow> Interruptions(IReadOnlyList<DowntimeRow> rows) => rows.Where(r => r.Cause.Length > 0);

    /// <summary>Every resume known: the end of each interruption, and each stub.</summary>
    private static IEnumerable<DateTime> Resumes(IReadOnlyList<DowntimeRow> rows) =>
        rows.Where(r => r.EndedAt is not null).Select(r => r.EndedAt!.Value);

    private static List<DowntimeRow> Pair(IEnumerable<DowntimeRow> interruptions, IEnumerable<DateTime> resumes)
    {
        var starts = interruptions.DistinctBy(i => i.StartedAt).OrderBy(i => i.StartedAt).ToList();
        var ends = resumes.Distinct().Order().ToList();
        var rows = new List<DowntimeRow>(starts.Count + ends.Count);
        var e = 0;
        foreach (var start in starts)
        {
            // Resumes before this start that no earlier interruption took: a later interruption cannot take them either.
            for (; e < ends.Count && ends[e] < start.StartedAt; e++) rows.Add(Stub(ends[e]));
            rows.Add(start with { EndedAt = e < ends.Count ? ends[e++] : null });
        }
        for (; e < ends.Count; e++) rows.Add(Stub(ends[e])); // a second resume in the last interval, or one waiting
        return rows;
    }

    private static DowntimeRow Stub(DateTime at) => new(at, at, "", StubReason);
}
