using Dapper;
using Marketplace.Billing.Domain;
using Marketplace.Billing.Ledger;
using Marketplace.Contracts;
using Marketplace.ServiceDefaults.Data;

namespace Marketplace.Billing.Holds;

/// <summary>
/// The checks before a hold grows (a new lease or an extension), and the low-balance alert after it. The wallet's
/// numbers are read under the renter's wallet lock, so they cannot change between the check and the posting.
/// </summary>
internal static class Funds
{
    /// <summary>
    /// What a renter's wallet allows in one currency: available funds, the caps and the low-balance threshold (null: none
    /// set), and what the UTC month asked for (this one unless said) has committed (only when there is a monthly cap to
    /// hold it against).
    /// </summary>
    internal sealed record Wallet(long Available, long? SpendCap, long? PerOrderCap, long? LowBalanceThreshold, long? Spent);

    /// <summary>
    /// Takes the renter's wallet lock, then reads the <see cref="Wallet"/>: two statements, so that the read sees every
    /// spend the lock waited for. Parameters: <see cref="AddParameters"/>; results: <see cref="ReadAsync"/>. Spend
    /// committed this month counts pending holds at their full amount and settled holds at what they charged.
    /// </summary>
    public const string LockAndReadSql = LedgerStore.LockWalletSql + """
        ;
        SELECT COALESCE((SELECT balance FROM wallet_balances WHERE account = @wallet_available AND currency = @wallet_currency), 0) AS available,
               s.spend_cap, s.per_order_cap, s.low_balance_threshold,
               CASE WHEN s.spend_cap IS NOT NULL THEN
                   (SELECT COALESCE(SUM(CASE h.status WHEN 'pending' THEN h.amount ELSE h.charged END), 0)::bigint
                    FROM holds h WHERE h.renter_org_id = @wallet_renter AND h.currency = @wallet_currency
                                       AND h.created_at >= @wallet_month AND h.created_at < @wallet_next_month)
               END AS spent
        FROM (VALUES (1)) AS one (x)
             LEFT JOIN wallet_settings s ON s.renter_org_id = @wallet_renter AND s.currency = @wallet_currency;
        """;

    /// <summary>
    /// The parameters of <see cref="LockAndReadSql"/> (named <c>@wallet_*</c>): the month whose spend is read is the one
    /// of <paramref name="month"/>, this one if null. A lease's cost belongs to the month it was booked in, extensions too.
    /// </summary>
    public static DynamicParameters AddParameters(DynamicParameters parameters, Tx tx, Guid renter, string currency, DateTime? month = null)
    {
        var first = MonthOf(month ?? tx.Now.UtcDateTime);
        parameters.Add("wallet_renter", renter);
        parameters.Add("wallet_currency", currency);
        parameters.Add("wallet_available", Accounts.RenterAvailable(renter));
        parameters.Add("wallet_month", first);
        parameters.Add("wallet_next_month", first.AddMonths(1));
        return parameters;
    }

    /// <summary>The first instant of the UTC month of <paramref name="at"/>.</summary>
    public static DateTime MonthOf(DateTime at)
    {
        var utc = at.ToUniversalTime();
        return new DateTime(utc.Year, utc.Month, 1, 0, 0, 0, DateTimeKind.Utc);
    }

    /// <summary>Reads <see cref="LockAndReadSql"/>'s results: the lock's, then the wallet.</summary>
    public static async Task<Wallet> ReadAsync(SqlMapper.GridReader results)
    {
        await results.ReadAsync(); // the lock
        return await results.ReadSingleAsync<Wallet>();
    }

    /// <summary>Locks and reads the wallet in one round trip (the spend of <paramref name="month"/>'s month).</summary>
    public static async Task<Wallet> LockAndReadAsync(Tx tx, Guid renter, string currency, DateTime month, CancellationToken ct)
    {
        await using var results = await tx.Connection.QueryMultipleAsync(new CommandDefinition(LockAndReadSql,
            AddParameters(new DynamicParameters(), tx, renter, currency, month), tx.Transaction, cancellationToken: ct));
        return await ReadAsync(results);
    }

    /// <summary>Null if the renter may reserve <paramref name="extra"/> more (for a lease whose hold becomes
    /// <paramref name="leaseHoldAfter"/>); otherwise a reason a person can act on. <paramref name="bookedIn"/>: the month
    /// the lease was booked in, when it is not this one (its spend is what <paramref name="wallet"/> holds).</summary>
    public static string? Refusal(Wallet wallet, string currency, long extra, long leaseHoldAfter, string what, string detail = "",
        DateTime? bookedIn = null)
    {
        if (wallet.PerOrderCap is { } perOrder && leaseHoldAfter > perOrder)
            return $"{what} can cost up to {Currencies.Format(leaseHoldAfter, currency)}, above the per-order spend cap of " +
                   $"{Currencies.Format(perOrder, currency)}; raise the cap (PUT /v1/wallet/spend-cap) or order less";
        if (wallet.SpendCap is { } cap)
        {
            var spent = wallet.Spent ?? 0;
            if (spent + extra > cap)
                return bookedIn is { } month
                    ? $"{what} needs up to {Currencies.Format(extra, currency)} more, but {Currencies.Format(spent, currency)} of the monthly " +
                      $"spend cap of {Currencies.Format(cap, currency)} is already committed in {month:yyyy-MM}, the month the lease was booked in " +
                      "(a lease's extensions count in that month); raise the cap (PUT /v1/wallet/spend-cap)"
                    : $"{what} needs up to {Currencies.Format(extra, currency)} more, but {Currencies.Format(spent, currency)} of the monthly " +
                      $"spend cap of {Currencies.Format(cap, currency)} is already committed this month; raise the cap (PUT /v1/wallet/spend-cap) or wait for next month";
        }
        if (wallet.Available < extra)
            return $"wallet holds {Currencies.Format(wallet.Available, currency)} available; {what} needs up to {Currencies.Format(extra, currency)}{detail}; top up the wallet";
        return null;
    }

    /// <summary>
    /// LowBalance when spending <paramref name="spend"/> takes the available funds across below the threshold (the
    /// renter's, else <paramref name="defaultThreshold"/>); null when it stays above, or was below already.
    /// </summary>
    public static LowBalance? LowBalanceAfter(Wallet wallet, Guid renter, string currency, long spend, long defaultThreshold, DateTimeOffset now)
    {
        var threshold = wallet.LowBalanceThreshold ?? defaultThreshold;
        var after = wallet.Available - spend;
        return threshold > 0 && wallet.Available >= threshold && after < threshold
            ? new LowBalance(renter, new Money(after, currency), new Money(threshold, currency), now)
            : null;
    }
}
