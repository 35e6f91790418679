namespace Marketplace.Billing.Domain;

/// <summary>An interval the lease was down; <paramref name="End"/> null = still down when the lease ended.</summary>
public sealed record DowntimeInterval(DateTime Start, DateTime? End, string Cause);

/// <summary>What Billing knows about one lease when it closes it.</summary>
public sealed record LeaseUsage(
    DateTime BookedStart, DateTime BookedEnd, DateTime StartedAt, DateTime EndedAt,
    string? EndStatus, string? EndCause, bool Interruptible, string SlaLevel, IReadOnlyList<DowntimeInterval> Downtime);

/// <summary>
/// The metered result: seconds to charge, all downtime inside the run (never charged), and what the SLA counts:
/// the microseconds the provider owed and the microseconds of those it (or the platform) failed to deliver.
/// </summary>
public sealed record Metered(long BilledSeconds, long DowntimeSeconds, long SlaExpectedMicros, long SlaDowntimeMicros, string SlaLevel)
{
    public int SlaCreditBasisPoints => Sla.CreditBasisPoints(SlaLevel, SlaExpectedMicros, SlaDowntimeMicros);
    public int AvailabilityPpm => Sla.AvailabilityPpm(SlaExpectedMicros, SlaDowntimeMicros);
}

/// <summary>
/// Per-second metering of one lease (pure; see docs/billing.md "Metering"). The running span is
/// [started_at, min(ended_at, started_at + booked length)]; downtime of any cause inside it is not charged;
/// the billed seconds are the whole seconds of what is left. For the SLA, downtime caused by the provider or the
/// platform counts, and so does the rest of the booked time when the provider or the platform ended a
/// non-interruptible lease early (failed, preempted or cancelled by them).
/// </summary>
public static class Metering
{
    private const long TicksPerMicro = TimeSpan.TicksPerMicrosecond;
    private static readonly string[] SlaCauses = ["provider", "platform"];
    private static readonly string[] EarlyEndStatuses = ["failed", "preempted", "cancelled"];

    public static Metered Meter(LeaseUsage u)
    {
        var booked = Math.Max(0, Micros(u.BookedEnd) - Micros(u.BookedStart));
        var spanStart = Micros(u.StartedAt);
        var owedEnd = spanStart + booked;
        var spanEnd = Math.Clamp(Micros(u.EndedAt), spanStart, owedEnd);

        var allDown = Union(u.Downtime, spanStart, spanEnd, _ => true);
        var slaDown = Union(u.Downtime, spanStart, spanEnd, d => SlaCauses.Contains(d.Cause));
        var billed = (spanEnd - spanStart - allDown) / 1_000_000;

        var level = u.Interruptible ? Sla.None : u.SlaLevel;
        var endedByThem = EarlyEndStatuses.Contains(u.EndStatus) && SlaCauses.Contains(u.EndCause);
        var shortfall = endedByThem && !u.Interruptible ? owedEnd - spanEnd : 0;
        var expected = spanEnd - spanStart + shortfall;
        return new Metered(billed, allDown / 1_000_000, expected, slaDown + shortfall, level);
    }

    /// <summary>Microseconds covered by the matching intervals inside [from, to], overlaps counted once.</summary>
    private static long Union(IReadOnlyList<DowntimeInterval> intervals, long from, long to, Func<DowntimeInterval, bool> counts)
    {
        var clipped = intervals.Where(counts)
            .Select(d => (Start: Math.Clamp(Micros(d.Start), from, to), End: Math.Clamp(d.End is { } e ? Micros(e) : to, from, to)))
            .Where(d => d.End > d.Start)
            .OrderBy(d => d.Start);
        long total = 0, coveredTo = from;
        foreach (var (start, end) in clipped)
        {
            var s = Math.Max(start, coveredTo);
            if (end > s) { total += end - s; coveredTo = end; }
        }
        return total;
    }

    private static long Micros(DateTime t) => t.Ticks / TicksPerMicro;
}
