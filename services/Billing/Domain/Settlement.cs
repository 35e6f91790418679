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
    /// The ledger effect of closing a lease, as ONE compound transaction with at most one entry per account:
    /// <c>settle:{lease}</c> = the whole hold leaves renter held; the provider's net (amount − SLA credit − fee) goes to
    /// its payable, the fee to platform revenue, and what was not charged plus the SLA credit back to renter available.
    /// A lease that never ran (<paramref name="line"/> null) only releases its hold, under the key the LeaseEnded void
    /// uses (<c>release:{lease}</c>), so the two can never both happen. Keys are derived from the lease, so posting twice
    /// is a no-op. Null when nothing moves (a hold of zero).
    /// </summary>
    public static LedgerTransaction? Settle(Guid leaseId, Guid renter, Guid provider, string currency, long holdAmount, PricedLine? line)
    {
        if (line is null)
            return holdAmount > 0 ? LedgerTransaction.Transfer($"release:{leaseId}", "release",
                Accounts.RenterHeld(renter), Accounts.RenterAvailable(renter), currency, holdAmount) : null;
        var entries = new List<LedgerEntry>(4);
        void Add(string account, long amount)
        {
            if (amount != 0) entries.Add(new LedgerEntry(account, currency, amount));
        }
        Add(Accounts.RenterHeld(renter), -holdAmount);
        Add(Accounts.ProviderPayable(provider), line.ProviderNet);
        Add(Accounts.PlatformRevenue, line.PlatformFee);
        Add(Accounts.RenterAvailable(renter), holdAmount - line.Amount + line.SlaCredit);
        return entries.Count == 0 ? null : new LedgerTransaction($"settle:{leaseId}", "settle", entries);
    }

    /// <summary>
    /// Many leases closed together as ONE journal transaction (a billing run's batch): each lease's
    /// <see cref="Settle"/> entries summed per account and currency, so the general ledger gets one line per account
    /// while the invoice lines stay the per-lease detail (a subledger). Balanced because every lease's part is.
    /// Null when nothing moves.
    /// </summary>
    public static LedgerTransaction? SettleMany(string key, IEnumerable<LedgerTransaction> perLease)
    {
        var sums = new Dictionary<(string Account, string Currency), long>();
        foreach (var e in perLease.SelectMany(t => t.Entries))
            sums[(e.Account, e.Currency)] = checked(sums.GetValueOrDefault((e.Account, e.Currency)) + e.Amount);
        var entries = sums.Where(kv => kv.Value != 0).OrderBy(kv => kv.Key.Currency, StringComparer.Ordinal)
            .ThenBy(kv => kv.Key.Account, StringComparer.Ordinal).Select(kv => new LedgerEntry(kv.Key.Account, kv.Key.Currency, kv.Value)).ToList();
        return entries.Count == 0 ? null : new LedgerTransaction(key, "settle", entries);
    }
}
