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
        var accounts = (await connection.QueryAsync<AccountBalance>(new CommandDefinition("""
            SELECT account, currency, SUM(amount)::bigint AS balance FROM ledger_entries
            GROUP BY account, currency ORDER BY account, currency
            """, cancellationToken: ct))).ToList();
        var balanced = accounts.GroupBy(a => a.Currency).All(g => g.Sum(a => a.Balance) == 0);
        return TypedResults.Ok(new Response(accounts, balanced));
    }
}
