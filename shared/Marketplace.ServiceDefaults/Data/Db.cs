using System.Data;
using Marketplace.ServiceDefaults.Messaging;
using Npgsql;

namespace Marketplace.ServiceDefaults.Data;

/// <summary>Opens the unit of work: a connection and a transaction whose outbox rows are relayed after commit.</summary>
public sealed class Db(NpgsqlDataSource dataSource, OutboxSignal outboxSignal, TimeProvider time)
{
    public NpgsqlDataSource DataSource => dataSource;

    public async Task<Tx> BeginAsync(CancellationToken ct, IsolationLevel isolation = IsolationLevel.ReadCommitted)
    {
        var connection = await dataSource.OpenConnectionAsync(ct);
        try
        {
            var transaction = await connection.BeginTransactionAsync(isolation, ct);
            return new Tx(connection, transaction, outboxSignal, time);
        }
        catch
        {
            await connection.DisposeAsync();
            throw;
        }
    }
}
