using Dapper;
using Marketplace.Billing.Domain;
using Marketplace.ServiceDefaults.Data;
using MassTransit;
using Npgsql;
using NpgsqlTypes;

namespace Marketplace.Billing.Ledger;

/// <summary>
/// Writes balanced transactions and reads balances. A balance is the SUM of its account's entries; the renters' wallet
/// accounts' sums are kept by the database in <c>wallet_balances</c> by the statement that adds the entries
/// (V9__wallet_balances), so reading one does not grow with the account's history.
/// </summary>
internal static class LedgerStore
{
    /// <summary>Posts the transaction in <paramref name="tx"/>; false if its idempotency key was posted before.</summary>
    public static async Task<bool> PostAsync(Tx tx, LedgerTransaction transaction, CancellationToken ct) =>
        await PostManyAsync(tx, [transaction], ct) == 1;

    /// <summary>
    /// Posts many transactions in one statement (one round trip): those whose idempotency key exists are skipped, with
    /// their entries. Every transaction's entries go in by one INSERT, which the balance trigger checks. Returns how many
    /// transactions were new.
    /// </summary>
    public static async Task<int> PostManyAsync(Tx tx, IReadOnlyList<LedgerTransaction> transactions, CancellationToken ct)
    {
        if (transactions.Count == 0) return 0;
        await using var batch = tx.NewBatch();
        batch.BatchCommands.Add(PostCommand(transactions, tx.Now));
        return (int)(await batch.ExecuteScalarAsync(ct))!;
    }

    /// <summary>
    /// The statement of <see cref="PostManyAsync"/>, to send in a batch with others (it returns how many transactions were
    /// new). <paramref name="now"/> is the transactions' time.
    /// </summary>
    public static NpgsqlBatchCommand PostCommand(IReadOnlyList<LedgerTransaction> transactions, DateTimeOffset now)
    {
        var ids = new Guid[transactions.Count];
        var (keys, kinds) = (new string[transactions.Count], new string[transactions.Count]);
        var entryCount = 0;
        for (var i = 0; i < transactions.Count; i++)
        {
            (ids[i], keys[i], kinds[i]) = (NewId.NextGuid(), transactions[i].IdempotencyKey, transactions[i].Kind);
            entryCount += transactions[i].Entries.Count;
        }
        var (tids, accounts, currencies, amounts) = (new Guid[entryCount], new string[entryCount], new string[entryCount], new long[entryCount]);
        var k = 0;
        for (var i = 0; i < transactions.Count; i++)
            foreach (var e in transactions[i].Entries)
                (tids[k], accounts[k], currencies[k], amounts[k++]) = (ids[i], e.Account, e.Currency, e.Amount);

        return new NpgsqlBatchCommand("""
            WITH posted AS (
                INSERT INTO ledger_transactions (id, idempotency_key, kind, created_at)
                SELECT id, key, kind, @now FROM unnest(@ids, @keys, @kinds) AS t(id, key, kind)
                ON CONFLICT (idempotency_key) DO NOTHING
                RETURNING id),
            entries AS (
                INSERT INTO ledger_entries (transaction_id, account, currency, amount)
                SELECT e.tid, e.a, e.c, e.x FROM unnest(@tids, @accounts, @currencies, @amounts) AS e(tid, a, c, x)
                WHERE e.tid IN (SELECT id FROM posted))
            SELECT count(*)::int FROM posted
            """)
        {
            Parameters =
            {
                new("now", now), new("ids", ids), new("keys", keys), new("kinds", kinds),
                new("tids", tids), new("accounts", accounts), new("currencies", currencies), new("amounts", amounts),
            },
        };
    }

    /// <summary>
    /// Posts one transaction with many entries (a billing run's batch): the transaction row, then its entries by binary
    /// COPY, which the balance trigger checks as one statement. Returns the transaction's id, or null if its
    /// idempotency key was posted before (then nothing is written). <paramref name="id"/> is the id to give it, when the
    /// caller references the transaction before posting it (a billing run claims its holds first).
    /// </summary>
    public static async Task<Guid?> PostLargeAsync(Tx tx, LedgerTransaction transaction, CancellationToken ct, Guid? id = null)
    {
        var inserted = await tx.Connection.QuerySingleOrDefaultAsync<Guid?>(new CommandDefinition("""
            INSERT INTO ledger_transactions (id, idempotency_key, kind, created_at) VALUES (@id, @IdempotencyKey, @Kind, @now)
            ON CONFLICT (idempotency_key) DO NOTHING RETURNING id
            """, new { id = id ?? NewId.NextSequentialGuid(), transaction.IdempotencyKey, transaction.Kind, now = tx.Now }, tx.Transaction,
            cancellationToken: ct));
        if (inserted is not { } posted) return null;
        await using var w = await tx.Connection.BeginBinaryImportAsync(
            "COPY ledger_entries (transaction_id, account, currency, amount) FROM STDIN (FORMAT BINARY)", ct);
        foreach (var e in transaction.Entries)
        {
            await w.StartRowAsync(ct);
            await w.WriteAsync(posted, NpgsqlDbType.Uuid, ct);
            await w.WriteAsync(e.Account, NpgsqlDbType.Text, ct);
            await w.WriteAsync(e.Currency, NpgsqlDbType.Char, ct);
            await w.WriteAsync(e.Amount, NpgsqlDbType.Bigint, ct);
        }
        await w.CompleteAsync(ct);
        return posted;
    }

    /// <summary>
    /// Serialises everything that spends a renter's wallet (for the renter <c>@wallet_renter</c>): two leases booked at
    /// once wait for each other here, so they cannot both spend the same funds. Released at commit.
    /// </summary>
    public const string LockWalletSql = "SELECT pg_advisory_xact_lock(hashtextextended('billing-wallet:' || @wallet_renter::text, 0))";
}
