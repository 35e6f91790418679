namespace Marketplace.Billing.Domain;

/// <summary>One invoice line, priced: what the renter is charged, credited for downtime, and what the platform keeps.</summary>
public sealed record PricedLine(long Amount, int SlaCreditBasisPoints, long SlaCredit, long PlatformFee)
{
    /// <summary>What the provider earns from the line: amount − SLA credit − platform fee (never negative).</summary>
    public long ProviderNet => Amount - SlaCredit - PlatformFee;
}

/// <summary>
/// Prices a metered lease and turns the result into balanced ledger transactions. Rounding happens here and only here,
/// once per line: the amount (half to even), the SLA credit on that amount, the fee on what is left after the credit.
/// </summary>
public static class Settlement
{
    public static PricedLine Price(long pricePerHourMinor, int count, Metered metered, int feeBasisPoints, long holdAmount)
    {
        // A charge can never exceed its hold (the hold is the ceiling over at least as many seconds); the Min is a guard.
        var amount = Math.Min(Rating.Cost(pricePerHourMinor, count, metered.BilledSeconds), holdAmount);
        var creditBp = metered.SlaCreditBasisPoints;
        var credit = Rating.Share(amount, creditBp);
        // The platform earns nothing on what the provider had to give back.
        var fee = Rating.Share(amount - credit, feeBasisPoints);
        return new PricedLine(amount, creditBp, credit, fee);
    }

    /// <summary>
    /// The ledger effect of closing a lease: charge (held → provider payable + platform revenue), SLA credit (provider
    /// payable → renter available) and release of the rest of the hold (held → available). Keys are derived from the
    /// lease, so posting them twice is a no-op.
    /// </summary>
    public static IReadOnlyList<LedgerTransaction> Transactions(Guid leaseId, Guid renter, Guid provider, string currency,
        long holdAmount, PricedLine line)
    {
        var list = new List<LedgerTransaction>(3);
        if (line.Amount > 0)
        {
            List<LedgerEntry> entries = [new(Accounts.RenterHeld(renter), currency, -line.Amount)];
            if (line.Amount - line.PlatformFee != 0) entries.Add(new(Accounts.ProviderPayable(provider), currency, line.Amount - line.PlatformFee));
            if (line.PlatformFee != 0) entries.Add(new(Accounts.PlatformRevenue, currency, line.PlatformFee));
            list.Add(new LedgerTransaction($"charge:{leaseId}", "charge", entries));
        }
        if (line.SlaCredit > 0)
            list.Add(LedgerTransaction.Transfer($"sla_credit:{leaseId}", "sla_credit",
                Accounts.ProviderPayable(provider), Accounts.RenterAvailable(renter), currency, line.SlaCredit));
        if (holdAmount - line.Amount > 0)
            list.Add(LedgerTransaction.Transfer($"release:{leaseId}", "release",
                Accounts.RenterHeld(renter), Accounts.RenterAvailable(renter), currency, holdAmount - line.Amount));
        return list;
    }
}
