namespace Marketplace.Billing.Domain;

/// <summary>One tier: below <paramref name="AvailabilityBelowBp"/> (basis points of availability, 9950 = 99.50%),
/// the renter gets <paramref name="CreditBp"/> of the line back (basis points of the line amount).</summary>
public sealed record SlaTier(int AvailabilityBelowBp, int CreditBp);

/// <summary>
/// SLA credits by level. Availability = (expected − downtime) / expected over the seconds the provider owed, where
/// downtime is what the provider or the platform caused. The lowest tier the availability falls under wins.
/// Interruptible leases carry no SLA: being preempted is what they are cheaper for.
/// </summary>
public static class Sla
{
    public const string None = "none";
    public const string Standard = "standard";
    public const string Premium = "premium";

    // Ordered from the harshest tier to the mildest; the first that matches wins.
    private static readonly Dictionary<string, SlaTier[]> TiersByLevel = new(StringComparer.Ordinal)
    {
        [None] = [],
        [Standard] = [new(9500, 10_000), new(9900, 2500), new(9950, 1000)],
        [Premium] = [new(9500, 10_000), new(9900, 5000), new(9950, 2500), new(9990, 1000)],
    };

    public static bool IsLevel(string? level) => level is not null && TiersByLevel.ContainsKey(level);

    /// <summary>The credit in basis points of the line for this much downtime out of this many expected microseconds.</summary>
    public static int CreditBasisPoints(string level, long expectedMicros, long downtimeMicros)
    {
        if (expectedMicros <= 0 || downtimeMicros <= 0) return 0;
        var up = Math.Max(0, expectedMicros - Math.Min(downtimeMicros, expectedMicros));
        if (!TiersByLevel.TryGetValue(level, out var tiers)) return 0;
        foreach (var tier in tiers) // the array itself: no enumerator allocated (a billing run prices 100 000 lines)
        {
            // up / expected < below / 10 000, exactly, in integers.
            if ((Int128)up * 10_000 < (Int128)tier.AvailabilityBelowBp * expectedMicros) return tier.CreditBp;
        }
        return 0;
    }

    /// <summary>Availability in parts per million, rounded down (shown on invoices; the tiers use the exact ratio).</summary>
    public static int AvailabilityPpm(long expectedMicros, long downtimeMicros)
    {
        if (expectedMicros <= 0) return 1_000_000;
        var up = Math.Max(0, expectedMicros - Math.Min(downtimeMicros, expectedMicros));
        return (int)((Int128)up * 1_000_000 / expectedMicros);
    }
}
