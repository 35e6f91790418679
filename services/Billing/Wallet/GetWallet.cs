using Dapper;
using Marketplace.Billing.Domain;
using Marketplace.Contracts;
using Marketplace.ServiceDefaults.Web;
using Microsoft.AspNetCore.Http.HttpResults;
using Npgsql;

namespace Marketplace.Billing.Wallet;

internal static class GetWallet
{
    /// <summary>spent_this_month: pending holds at their full amount plus what settled holds charged (what the monthly cap counts).</summary>
    public sealed record Balance(string Currency, Money Available, Money Held, Money SpentThisMonth, Money? SpendCap, Money? PerOrderCap,
        Money? LowBalanceThreshold);
    public sealed record Response(IReadOnlyList<Balance> Balances);

    private sealed record Row(string Currency, long Available, long Held, long Spent, long? SpendCap, long? PerOrderCap, long? LowBalanceThreshold);

    public static async Task<Results<Ok<Response>, ProblemHttpResult>> Handle(Caller caller, NpgsqlDataSource db, TimeProvider time, CancellationToken ct)
    {
        if (!caller.Has(OrgRoles.Renter)) return Problems.Forbidden("Only renters have a wallet.");
        var available = Accounts.RenterAvailable(caller.OrgId);
        var held = Accounts.RenterHeld(caller.OrgId);
        var now = time.GetUtcNow().UtcDateTime;
        var monthStart = new DateTime(now.Year, now.Month, 1, 0, 0, 0, DateTimeKind.Utc);
        await using var connection = await db.OpenConnectionAsync(ct);
        var rows = await connection.QueryAsync<Row>(new CommandDefinition("""
            WITH balances AS (
                SELECT currency,
                       COALESCE(SUM(balance) FILTER (WHERE account = @available), 0)::bigint AS available,
                       COALESCE(SUM(balance) FILTER (WHERE account = @held), 0)::bigint AS held
                FROM wallet_balances WHERE account IN (@available, @held) GROUP BY currency),
            spent AS (
                SELECT currency, SUM(CASE status WHEN 'pending' THEN amount ELSE charged END)::bigint AS spent
                FROM holds WHERE renter_org_id = @org AND created_at >= @monthStart GROUP BY currency),
            settings AS (SELECT * FROM wallet_settings WHERE renter_org_id = @org)
            SELECT c.currency, COALESCE(b.available, 0) AS available, COALESCE(b.held, 0) AS held, COALESCE(sp.spent, 0) AS spent,
                   st.spend_cap, st.per_order_cap, st.low_balance_threshold
            FROM (SELECT currency FROM balances UNION SELECT currency FROM settings) c
            LEFT JOIN balances b ON b.currency = c.currency LEFT JOIN spent sp ON sp.currency = c.currency
            LEFT JOIN settings st ON st.currency = c.currency
            ORDER BY c.currency
            """, new { available, held, org = caller.OrgId, monthStart }, cancellationToken: ct));
        return TypedResults.Ok(new Response(rows.Select(r => new Balance(r.Currency, new Money(r.Available, r.Currency), new Money(r.Held, r.Currency),
            new Money(r.Spent, r.Currency), M(r.SpendCap, r.Currency), M(r.PerOrderCap, r.Currency), M(r.LowBalanceThreshold, r.Currency))).ToList()));
    }

    private static Money? M(long? v, string currency) => v is { } x ? new Money(x, currency) : null;
}
