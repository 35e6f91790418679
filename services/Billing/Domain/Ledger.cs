namespace Marketplace.Billing.Domain;

/// <summary>The ledger's account names. Each account holds one currency per row; the name does not carry it.</summary>
public static class Accounts
{
    public static string RenterAvailable(Guid org) => $"renter:{org}:available";
    public static string RenterHeld(Guid org) => $"renter:{org}:held";
    public static string ProviderPayable(Guid org) => $"provider:{org}:payable";
    public const string PlatformRevenue = "platform:revenue";
    public const string StripeClearing = "stripe:clearing";
    public const string PayoutsClearing = "payouts:clearing";
    /// <summary>Contra-revenue: what credit notes gave back to renters.</summary>
    public const string PlatformCreditNotes = "platform:credit_notes";
}

/// <summary>One line of a journal transaction: a signed amount in minor units on one account.</summary>
public sealed record LedgerEntry(string Account, string Currency, long Amount);

/// <summary>
/// A balanced journal transaction. The constructor refuses entries that do not sum to zero per currency, so an
/// unbalanced transaction cannot exist in memory, let alone reach the database. The idempotency key is
/// deterministic (e.g. <c>charge:{lease}</c>), so posting it twice is a no-op.
/// </summary>
public sealed class LedgerTransaction
{
    public string IdempotencyKey { get; }
    public string Kind { get; }
    public IReadOnlyList<LedgerEntry> Entries { get; }

    public LedgerTransaction(string idempotencyKey, string kind, IReadOnlyList<LedgerEntry> entries)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(idempotencyKey);
        ArgumentException.ThrowIfNullOrWhiteSpace(kind);
        if (entries.Count < 2) throw new ArgumentException("A transaction needs at least two entries.", nameof(entries));
        if (entries.Any(e => e.Amount == 0)) throw new ArgumentException("Entries of zero are noise; leave them out.", nameof(entries));
        foreach (var group in entries.GroupBy(e => e.Currency))
        {
            // checked: an overflowing sum must fail, not wrap around to a false zero.
            var sum = group.Aggregate(0L, (acc, e) => checked(acc + e.Amount));
            if (sum != 0)
                throw new ArgumentException($"Entries in {group.Key} sum to {sum}, not zero.", nameof(entries));
        }
        IdempotencyKey = idempotencyKey;
        Kind = kind;
        Entries = entries;
    }

    /// <summary>Moves <paramref name="amount"/> from one account to another (debit to, credit from).</summary>
    public static LedgerTransaction Transfer(string key, string kind, string from, string to, string currency, long amount) =>
        new(key, kind, [new LedgerEntry(from, currency, -amount), new LedgerEntry(to, currency, amount)]);
}
