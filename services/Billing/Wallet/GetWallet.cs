using Dapper;
using Marketplace.Billing.Domain;
using Marketplace.Contracts;
using Marketplace.ServiceDefaults.Web;
using Microsoft.AspNetCore.Http.HttpResults;
using Npgsql;

namespace Marketplace.Billing.Wallet;

internal static class GetWallet
{
    public sealed record Balance(string Currency, Money Available, Money Held);
    public sealed record Response(IReadOnlyList<Balance> Balances);

    public static async Task<Results<Ok<Response>, ProblemHttpResult>> Handle(Caller caller, NpgsqlDataSource db, CancellationToken ct)
    {
        if (!caller.Has(OrgRoles.Renter)) return Problems.Forbidden("Only renters have a wallet.");
        var available = Accounts.RenterAvailable(caller.OrgId);
        var held = Accounts.RenterHeld(caller.OrgId);
        await using var connection = await db.OpenConnectionAsync(ct);
        var rows = await connection.QueryAsync<(string Currency, long Available, long Held)>(new CommandDefinition("""
            SELECT currency,
                   COALESCE(SUM(amount) FILTER (WHERE account = @available), 0)::bigint,
                   COALESCE(SUM(amount) FILTER (WHERE account = @held), 0)::bigint
            FROM ledger_entries WHERE account IN (@available, @held)
            GROUP BY currency ORDER BY currency
            """, new { available, held }, cancellationToken: ct));
        return TypedResults.Ok(new Response(rows
            .Select(r => new Balance(r.Currency, new Money(r.Available, r.Currency), new Money(r.Held, r.Currency))).ToList()));
    }
}
