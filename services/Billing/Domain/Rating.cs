namespace Marketplace.Billing.Domain;

/// <summary>
/// Prices leases. All amounts are integer minor units; the exact cost price × count × seconds / 3600 is a rational
/// number, rounded ONCE per invoice line, half to even (banker's rounding, so rounding errors do not drift one way
/// over many lines). Holds round up (ceiling) so a hold always covers the charge it guards.
/// </summary>
public static class Rating
{
    private const long SecondsPerHour = 3600;

    /// <summary>The charge for a line: price_per_hour × count × seconds / 3600, half to even.</summary>
    public static long Cost(long pricePerHourMinor, int count, long seconds) =>
        DivideHalfToEven(Numerator(pricePerHourMinor, count, seconds), SecondsPerHour);

    /// <summary>The most a lease can cost: the same quotient rounded up.</summary>
    public static long MaxCost(long pricePerHourMinor, int count, long seconds)
    {
        var n = Numerator(pricePerHourMinor, count, seconds);
        return checked((long)((n + SecondsPerHour - 1) / SecondsPerHour));
    }

    /// <summary>The platform's fee on a line: amount × basis points / 10 000, half to even.</summary>
    public static long Fee(long amount, int basisPoints) => Share(amount, basisPoints);

    /// <summary>A share of an amount: amount × basis points / 10 000, half to even (fees, SLA credits).</summary>
    public static long Share(long amount, int basisPoints)
    {
        if (amount < 0) throw new ArgumentOutOfRangeException(nameof(amount));
        if (basisPoints is < 0 or > 10_000) throw new ArgumentOutOfRangeException(nameof(basisPoints));
        return DivideHalfToEven((Int128)amount * basisPoints, 10_000);
    }

    private static Int128 Numerator(long price, int count, long seconds)
    {
        if (price < 0) throw new ArgumentOutOfRangeException(nameof(price));
        if (count < 0) throw new ArgumentOutOfRangeException(nameof(count));
        if (seconds < 0) throw new ArgumentOutOfRangeException(nameof(seconds));
        return (Int128)price * count * seconds;
    }

    private static long DivideHalfToEven(Int128 numerator, long denominator)
    {
        var q = numerator / denominator;
        var twiceRemainder = numerator % denominator * 2;
        if (twiceRemainder > denominator || (twiceRemainder == denominator && q % 2 != 0)) q++;
        return checked((long)q);
    }
}
