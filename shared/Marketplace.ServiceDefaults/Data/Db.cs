using System.Data;
using Marketplace.ServiceDefaults.Messaging;
using Microsoft.Extensions.Logging;
using Npgsql;

namespace Marketplace.ServiceDefaults.Data;

/// <summary>Opens the unit of work: a connection and a transaction whose outbox rows are relayed after commit.</summary>
public sealed class Db(NpgsqlDataSource dataSource, OutboxSignal outboxSignal, TimeProvider time, ILogger<Db>? logger = null,
    DueWorkSignal? dueWorkSignal = null)
{
    /// <summary>How often <see cref="RunAsync"/> runs a transaction that PostgreSQL keeps aborting as a deadlock victim or unserializable.</summary>
    public const int TransactionAttempts = 3;

    public NpgsqlDataSource DataSource => dataSource;

    public async Task<Tx> BeginAsync(CancellationToken ct, IsolationLevel isolation = IsolationLevel.ReadCommitted)
    {
        var connection = await dataSource.OpenConnectionAsync(ct);
        try
        {
            var transaction = await connection.BeginTransactionAsync(isolation, ct);
            return new Tx(connection, transaction, outboxSignal, time, dueWorkSignal);
        }
        catch
        {
            await connection.DisposeAsync();
            throw;
        }
    }

    /// <summary>
    /// Runs <paramref name="body"/> in a transaction of its own, and again in a new one (at most
    /// <see cref="TransactionAttempts"/> times in all) when PostgreSQL aborted it as a deadlock victim (40P01) or as
    /// unserializable (40001): the aborted attempt wrote nothing, and the next one usually goes through at once, so a
    /// request answers instead of a 503. The body commits (or returns without committing: rolled back); it may run more
    /// than once, so it must have no effect outside its transaction (no HTTP calls; messages only through the outbox).
    /// </summary>
    public async Task<T> RunAsync<T>(Func<Tx, Task<T>> body, CancellationToken ct, IsolationLevel isolation = IsolationLevel.ReadCommitted)
    {
        for (var attempt = 1; ; attempt++)
        {
            await using var tx = await BeginAsync(ct, isolation);
            try
            {
                return await body(tx);
            }
            catch (PostgresException e) when ((e.SqlState is PostgresErrorCodes.DeadlockDetected or PostgresErrorCodes.SerializationFailure)
                                              && attempt < TransactionAttempts)
            {
                logger?.LogWarning(e, "Transaction attempt {Attempt} aborted ({SqlState}); running it again", attempt, e.SqlState);
            }
        }
    }
}
