using Dapper;
using Marketplace.Billing.Domain;
using Marketplace.ServiceDefaults.Data;
using MassTransit;

namespace Marketplace.Billing.Ledger;

/// <summary>Writes balanced transactions and reads balances, which are always SUMs over the entries.</summary>
internal static class LedgerStore
{
    /// <summary>Posts the transaction in <paramref name="tx"/>; false if its idempotency key was posted before.</summary>
    public static async Task<bool> PostAsync(Tx tx, LedgerTransaction transaction, CancellationToken ct)
    {
        var id = await tx.Connection.QuerySingleOrDefaultAsync<Guid?>(new CommandDefinition("""
            INSERT INTO ledger_transactions (id, idempotency_key, kind, created_at)
            VALUES (@id, @IdempotencyKey, @Kind, @now)
            ON CONFLICT (idempotency_key) DO NOTHING
            RETURNING id
            """, new { id = NewId.NextGuid(), transaction.IdempotencyKey, transaction.Kind, now = tx.Now },
            tx.Transaction, cancellationToken: ct));
        if (id is null) return false;
        await tx.Connection.ExecuteAsync(new CommandDefinition("""
            INSERT INTO ledger_entries (transaction_id, account, currency, amount)
            SELECT @id, a, c, x FROM unnest(@accounts, @currencies, @amounts) AS e(a, c, x)
            """, new
            {
                id,
                accounts = transaction.Entries.Select(e => e.Account).ToArray(),
                currencies = transaction.Entries.Select(e => e.Currency).ToArray(),
                amounts = transaction.Entries.Select(e => e.Amount).ToArray(),
            }, tx.Transaction, cancellationToken: ct));
        return true;
    }

    public static Task<long> BalanceAsync(Tx tx, string account, string currency, CancellationToken ct) =>
        tx.Connection.ExecuteScalarAsync<long>(new CommandDefinition(
            "SELECT COALESCE(SUM(amount), 0)::bigint FROM ledger_entries WHERE account = @account AND currency = @currency",
            new { account, currency }, tx.Transaction, cancellationToken: ct));

    /// <summary>
    /// Serialises everything that spends a renter's wallet: two leases booked at once wait for each other here,
    /// so they cannot both spend the same funds. Released at commit.
    /// </summary>
    public static Task LockWalletAsync(Tx tx, Guid renterOrg, CancellationToken ct) =>
        tx.Connection.ExecuteAsync(new CommandDefinition(
            "SELECT pg_advisory_xact_lock(hashtextextended('billing-wallet:' || @org::text, 0))",
            new { org = renterOrg }, tx.Transaction, cancellationToken: ct));
}
