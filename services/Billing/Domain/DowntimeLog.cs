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
/// each interruption ends at the first resume at or after its start and before the next interruption's start (none:
/// still down, until the lease ends); every other resume is kept as a stub, for an interruption that may still arrive.
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
        for (; e < ends.Count && (starts.Count == 0 || ends[e] < starts[0].StartedAt); e++) rows.Add(Stub(ends[e]));
        for (var i = 0; i < starts.Count; i++)
        {
            var next = i + 1 < starts.Count ? starts[i + 1].StartedAt : DateTime.MaxValue;
            DateTime? end = e < ends.Count && ends[e] < next ? ends[e++] : null;
            rows.Add(starts[i] with { EndedAt = end });
            for (; e < ends.Count && ends[e] < next; e++) rows.Add(Stub(ends[e])); // a second resume in the same interval
        }
        return rows;
    }

    private static DowntimeRow Stub(DateTime at) => new(at, at, "", StubReason);
}
