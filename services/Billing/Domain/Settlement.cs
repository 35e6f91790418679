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
        var parts = Parts(holdAmount, line);
        var entries = new List<LedgerEntry>(4);
        void Add(string account, long amount)
        {
            if (amount != 0) entries.Add(new LedgerEntry(account, currency, amount));
        }
        Add(Accounts.RenterHeld(renter), parts.Held);
        Add(Accounts.ProviderPayable(provider), parts.Payable);
        Add(Accounts.PlatformRevenue, parts.Revenue);
        Add(Accounts.RenterAvailable(renter), parts.Available);
        return entries.Count == 0 ? null : new LedgerTransaction($"settle:{leaseId}", "settle", entries);
    }

    /// <summary>What closing one lease moves on each of its accounts (the one formula behind <see cref="Settle"/> and <see cref="SettleBatch"/>).</summary>
    private static (long Held, long Available, long Payable, long Revenue) Parts(long holdAmount, PricedLine? line) => line is null
        ? (-holdAmount, holdAmount, 0, 0)
        : (-holdAmount, holdAmount - line.Amount + line.SlaCredit, line.ProviderNet, line.PlatformFee);

    /// <summary>
    /// A billing run's batch as ONE journal transaction, straight from its leases: each lease's <see cref="Settle"/>
    /// entries summed per account and currency (sums kept per organisation and currency, account names made once per
    /// organisation), so the general ledger gets one line per account while the invoice lines stay the per-lease detail.
    /// Entries in currency, then account order. Balanced because every lease's part is. Null when nothing moves.
    /// </summary>
    public static LedgerTransaction? SettleBatch(string key, IEnumerable<LeaseToSettle> leases)
    {
        var renters = new Dictionary<(Guid Org, string Currency), (long Held, long Available)>();
        var providers = new Dictionary<(Guid Org, string Currency), long>();
        var platform = new Dictionary<string, long>(StringComparer.Ordinal);
        foreach (var l in leases)
        {
            var parts = Parts(l.HoldAmount, l.Line);
            var r = renters.GetValueOrDefault((l.Renter, l.Currency));
            renters[(l.Renter, l.Currency)] = (checked(r.Held + parts.Held), checked(r.Available + parts.Available));
            if (l.Line is null) continue;
            providers[(l.Provider, l.Currency)] = checked(providers.GetValueOrDefault((l.Provider, l.Currency)) + parts.Payable);
            platform[l.Currency] = checked(platform.GetValueOrDefault(l.Currency) + parts.Revenue);
        }
        var entries = new List<LedgerEntry>(renters.Count * 2 + providers.Count + platform.Count);
        void Add(string account, string currency, long amount)
        {
            if (amount != 0) entries.Add(new LedgerEntry(account, currency, amount));
        }
        foreach (var ((org, currency), (held, available)) in renters)
        {
            Add(Accounts.RenterHeld(org), currency, held);
            Add(Accounts.RenterAvailable(org), currency, available);
        }
        foreach (var ((org, currency), payable) in providers) Add(Accounts.ProviderPayable(org), currency, payable);
        foreach (var (currency, revenue) in platform) Add(Accounts.PlatformRevenue, currency, revenue);
        entries.Sort((a, b) => string.CompareOrdinal(a.Currency, b.Currency) is var c and not 0 ? c : string.CompareOrdinal(a.Account, b.Account));
        return entries.Count == 0 ? null : new LedgerTransaction(key, "settle", entries);
    }
}

/// <summary>One lease of a batch to settle: its hold and its priced line (null: it never ran, the whole hold goes back).</summary>
public readonly record struct LeaseToSettle(Guid Renter, Guid Provider, string Currency, long HoldAmount, PricedLine? Line);
