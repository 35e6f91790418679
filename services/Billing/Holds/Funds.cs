using Dapper;
using Marketplace.Billing.Domain;
using Marketplace.Billing.Ledger;
using Marketplace.Contracts;
using Marketplace.ServiceDefaults.Data;

namespace Marketplace.Billing.Holds;

/// <summary>
/// The checks before a hold grows (a new lease or an extension), and the low-balance alert after it. Called under the
/// renter's wallet lock, so the numbers cannot change between the check and the posting.
/// </summary>
internal static class Funds
{
    private sealed record Settings(long? SpendCap, long? PerOrderCap, long? LowBalanceThreshold);

    /// <summary>Null if the renter may reserve <paramref name="extra"/> more (for a lease whose hold becomes
    /// <paramref name="leaseHoldAfter"/>); otherwise a reason a person can act on.</summary>
    public static async Task<string?> RefusalAsync(Tx tx, Guid renter, string currency, long extra, long leaseHoldAfter,
        long available, string what, CancellationToken ct, string detail = "")
    {
        var settings = await SettingsAsync(tx, renter, currency, ct);
        if (settings?.PerOrderCap is { } perOrder && leaseHoldAfter > perOrder)
            return $"{what} can cost up to {Currencies.Format(leaseHoldAfter, currency)}, above the per-order spend cap of " +
                   $"{Currencies.Format(perOrder, currency)}; raise the cap (PUT /v1/wallet/spend-cap) or order less";
        if (settings?.SpendCap is { } cap)
        {
            var spent = await SpentThisMonthAsync(tx, renter, currency, ct);
            if (spent + extra > cap)
                return $"{what} needs up to {Currencies.Format(extra, currency)} more, but {Currencies.Format(spent, currency)} of the monthly " +
                       $"spend cap of {Currencies.Format(cap, currency)} is already committed this month; raise the cap (PUT /v1/wallet/spend-cap) or wait for next month";
        }
        if (available < extra)
            return $"wallet holds {Currencies.Format(available, currency)} available; {what} needs up to {Currencies.Format(extra, currency)}{detail}; top up the wallet";
        return null;
    }

    /// <summary>Spend committed this UTC month: pending holds at their full amount, settled holds at what they charged.</summary>
    public static Task<long> SpentThisMonthAsync(Tx tx, Guid renter, string currency, CancellationToken ct)
    {
        var now = tx.Now.UtcDateTime;
        var monthStart = new DateTime(now.Year, now.Month, 1, 0, 0, 0, DateTimeKind.Utc);
        return tx.Connection.ExecuteScalarAsync<long>(new CommandDefinition("""
            SELECT COALESCE(SUM(CASE status WHEN 'pending' THEN amount ELSE charged END), 0)::bigint
            FROM holds WHERE renter_org_id = @renter AND currency = @currency AND created_at >= @monthStart
            """, new { renter, currency, monthStart }, tx.Transaction, cancellationToken: ct));
    }

    /// <summary>Publishes LowBalance when available crosses below the threshold (not on every hold while it stays below).</summary>
    public static async Task AlertIfLowAsync(Tx tx, Guid renter, string currency, long before, long after, long defaultThreshold, CancellationToken ct)
    {
        var threshold = (await SettingsAsync(tx, renter, currency, ct))?.LowBalanceThreshold ?? defaultThreshold;
        if (threshold > 0 && before >= threshold && after < threshold)
            await tx.PublishAsync(new LowBalance(renter, new Money(after, currency), new Money(threshold, currency), tx.Now), ct);
    }

    public static Task<long> AvailableAsync(Tx tx, Guid renter, string currency, CancellationToken ct) =>
        LedgerStore.WalletBalanceAsync(tx, Accounts.RenterAvailable(renter), currency, ct);

    private static Task<Settings?> SettingsAsync(Tx tx, Guid renter, string currency, CancellationToken ct) =>
        tx.Connection.QuerySingleOrDefaultAsync<Settings>(new CommandDefinition("""
            SELECT spend_cap, per_order_cap, low_balance_threshold FROM wallet_settings
            WHERE renter_org_id = @renter AND currency = @currency
            """, new { renter, currency }, tx.Transaction, cancellationToken: ct));
}
