namespace Marketplace.Scheduling.Domain;

/// <summary>The window a late on-demand match runs in, and whether the offer's end cut it short of what was ordered.</summary>
public sealed record LateWindow(DateTimeOffset Start, DateTimeOffset End, TimeSpan Ordered)
{
    public bool Capped => End - Start < Ordered;

    /// <summary>
    /// Every match reaches the scheduler a little after Bidding fixed its window (the bus hop: milliseconds). Only a match
    /// later than this is re-anchored (the broker or the scheduler was down or far behind); the renter is never billed
    /// for the seconds before the lease starts anyway.
    /// </summary>
    public static readonly TimeSpan Grace = TimeSpan.FromSeconds(5);

    /// <summary>Whether a match whose window starts at <paramref name="start"/> reaches the scheduler late at <paramref name="now"/>.</summary>
    public static bool IsLate(DateTimeOffset start, DateTimeOffset now) => now - start > Grace;

    /// <summary>
    /// An on-demand order asks for a duration from when it is placed; Bidding fixes the window when it matches. A match
    /// that reaches the scheduler after that window's start (the broker or the scheduler was down or behind) is re-anchored
    /// at <paramref name="now"/> for the ordered duration, but never past the end of the offer's availability
    /// (<paramref name="offerEnd"/>; null when unknown or withdrawn: then not past the matched end either). Null when the
    /// match is not late (by more than <see cref="Grace"/>).
    /// </summary>
    public static LateWindow? Reanchor(DateTimeOffset start, DateTimeOffset end, DateTimeOffset now, DateTimeOffset? offerEnd)
    {
        if (!IsLate(start, now) || end <= now) return null;
        var ordered = end - start;
        var limit = offerEnd is { } o && o > end ? o : end;
        var shifted = now + ordered;
        return new LateWindow(now, shifted < limit ? shifted : limit, ordered);
    }
}
