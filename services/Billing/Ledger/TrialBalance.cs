using Dapper;
using Marketplace.ServiceDefaults.Web;
using Microsoft.AspNetCore.Http.HttpResults;
using Npgsql;

namespace Marketplace.Billing.Ledger;

internal static class TrialBalance
{
    public sealed record AccountBalance(string Account, string Currency, long Balance);
    public sealed record Response(IReadOnlyList<AccountBalance> Accounts, bool Balanced);

    public static async Task<Results<Ok<Response>, ProblemHttpResult>> Handle(Caller caller, NpgsqlDataSource db, CancellationToken ct)
    {
        if (!caller.IsFinanceOrAdmin) return Problems.Forbidden("Only finance can read the trial balance.");
        await using var connection = await db.OpenConnectionAsync(ct);
        // From the entries themselves, the record; each renter account's beside the balance the database keeps for it
        // (wallet_balances): the books are balanced when every currency sums to zero and every kept balance is its
        // entries' sum.
        var rows = (await connection.QueryAsync<(string Account, string Currency, long Balance, bool Kept)>(new CommandDefinition("""
            SELECT coalesce(e.account, b.account), coalesce(e.currency, b.currency), coalesce(e.balance, 0),
                   coalesce(e.account, b.account) NOT LIKE 'renter:%' OR coalesce(b.balance, 0) = coalesce(e.balance, 0)
            FROM (SELECT account, currency, SUM(amount)::bigint AS balance FROM ledger_entries GROUP BY account, currency) e
            FULL JOIN wallet_balances b ON b.account = e.account AND b.currency = e.currency
            ORDER BY 1, 2
            """, cancellationToken: ct))).ToList();
        var accounts = rows.Select(r => new AccountBalance(r.Account, r.Currency, r.Balance)).ToList();
        var balanced = rows.All(r => r.Kept) && accounts.GroupBy(a => a.Currency).All(g => g.Sum(a => a.Balance) == 0);
        return TypedResults.Ok(new Response(accounts, balanced));
    }
}
