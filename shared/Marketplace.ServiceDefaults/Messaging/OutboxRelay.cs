using System.Diagnostics;
using System.Text.Json;
using Dapper;
using MassTransit;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;
using Npgsql;

namespace Marketplace.ServiceDefaults.Messaging;

public sealed class OutboxOptions
{
    public int BatchSize { get; set; } = 100;
    public TimeSpan PollInterval { get; set; } = TimeSpan.FromMilliseconds(500);

    /// <summary>
    /// How long one publish may wait for the broker's confirm. RabbitMQ.Client 7.2 can leave a publish waiting for ever
    /// when its connection is closed under it (rabbitmq-dotnet-client#1930; found by the closed-connections fault
    /// scenario): without a limit the relay, and every row it holds locked, would stop for good. The row stays and is
    /// published again with the same MessageId; inboxes skip a copy that did arrive. 5 s: with the quick broker reconnect
    /// (BrokerReconnect) such hangs came after every closed connection, and at 15 s they were the closed-connections
    /// fault scenario's whole tail (order → lease p95 13.8 s, max 17.4 s; at 5 s: 2.5 s, max 5.5 s). A confirm takes
    /// milliseconds; a copy published twice is harmless.
    /// </summary>
    public TimeSpan PublishTimeout { get; set; } = TimeSpan.FromSeconds(5);
}

/// <summary>
/// Publishes committed outbox rows. Rows are locked with FOR UPDATE SKIP LOCKED, so several instances relay
/// different rows; a row is deleted only after the broker confirmed it, in the same transaction that locked it.
/// A crash after the confirm and before the delete publishes it again with the same MessageId: inboxes skip it.
/// </summary>
public sealed class OutboxRelay(
    NpgsqlDataSource dataSource,
    IBus bus,
    IBusControl busControl,
    OutboxSignal signal,
    IOptions<OutboxOptions> options,
    ILogger<OutboxRelay> logger) : BackgroundService
{
    internal static readonly ActivitySource Activities = new("Marketplace.Outbox");

    protected override async Task ExecuteAsync(CancellationToken stoppingToken)
    {
        // Relaying before the bus is connected would only fail; and on a new virtual host, before this service's own
        // endpoints are bound, RabbitMQ would drop what it routes nowhere.
        try { await busControl.WaitForHealthStatus(BusHealthStatus.Healthy, stoppingToken); }
        catch (OperationCanceledException) { return; }

        var failures = 0;
        while (!stoppingToken.IsCancellationRequested)
        {
            try
            {
                var relayed = await RelayBatchAsync(stoppingToken);
                failures = 0;
                if (relayed < options.Value.BatchSize)
                    await signal.WaitAsync(options.Value.PollInterval, stoppingToken);
            }
            catch (OperationCanceledException) when (stoppingToken.IsCancellationRequested)
            {
                return;
            }
            catch (Exception ex)
            {
                // Broker or database unavailable: the rows stay and are retried with backoff; nothing is lost.
                failures++;
                var delay = TimeSpan.FromMilliseconds(Math.Min(10_000, 100 * Math.Pow(2, Math.Min(failures, 10))));
                logger.LogWarning(ex, "Outbox relay failed {Failures} time(s); retrying in {Delay}", failures, delay);
                try { await Task.Delay(delay, stoppingToken); } catch (OperationCanceledException) { return; }
            }
        }
    }

    /// <summary>Relays one batch; returns how many rows it published.</summary>
    public async Task<int> RelayBatchAsync(CancellationToken ct)
    {
        await using var connection = await dataSource.OpenConnectionAsync(ct);
        await using var transaction = await connection.BeginTransactionAsync(ct);
        // This transaction only deletes rows the broker has confirmed: its commit need not wait for the WAL flush. If
        // the delete is lost (the machine or PostgreSQL crashed within a fraction of a second), the rows are published
        // again with the same MessageId and the inboxes skip them. At 28 orders/s the stack flushed the WAL 290 times a
        // second, 0.8 ms each (pg_stat_wal), and every commit that must wait for its flush queued behind these: without
        // them, 25 % fewer flushes and 40 % less time flushing; order accepted -> lease scheduled p99 176-180 ms -> 92-121 ms.
        // The setting goes with the claim, in one round trip (it returns no rows: the reader's first result is the claim's).
        var rows = (await connection.QueryAsync<OutboxRow>(new CommandDefinition("""
            SET LOCAL synchronous_commit = off;
            SELECT id, message_id, message_type, body::text AS body, trace_parent, created_at
            FROM outbox ORDER BY id LIMIT @batch FOR UPDATE SKIP LOCKED
            """, new { batch = options.Value.BatchSize }, transaction, cancellationToken: ct))).AsList();
        if (rows.Count == 0) return 0;

        var publishing = DateTime.UtcNow;
        var cycle = Stopwatch.GetTimestamp();
        var results = await Task.WhenAll(rows.Select(row => PublishAsync(row, ct)));
        var sent = rows.Where((_, i) => results[i] is null).Select(r => r.Id).ToArray();
        await connection.ExecuteAsync(new CommandDefinition(
            "DELETE FROM outbox WHERE id = ANY(@sent)", new { sent }, transaction, cancellationToken: ct));
        foreach (var (row, error) in rows.Zip(results).Where(p => p.Second is not null))
        {
            await connection.ExecuteAsync(new CommandDefinition(
                "UPDATE outbox SET attempts = attempts + 1, last_error = @error WHERE id = @Id",
                new { row.Id, error = error!.Message }, transaction, cancellationToken: ct));
        }
        await transaction.CommitAsync(ct);
        if (logger.IsEnabled(LogLevel.Debug))
            // Where a message's time between its commit and its consumer goes: waiting for the relay (this lag) and the
            // relay's own cycle (a new row waits for the cycle in flight); the consumer's log line gives the rest.
            logger.LogDebug("Relayed {Count} message(s): {OldestMs:0.0} ms / {NewestMs:0.0} ms from the oldest / newest row's write to its publish; publish, confirms, delete and commit {CycleMs:0.0} ms",
                rows.Count, (publishing - rows.Min(r => r.CreatedAt)).TotalMilliseconds, (publishing - rows.Max(r => r.CreatedAt)).TotalMilliseconds,
                Stopwatch.GetElapsedTime(cycle).TotalMilliseconds);
        if (sent.Length < rows.Count)
            throw new InvalidOperationException($"{rows.Count - sent.Length} outbox message(s) could not be published");
        return sent.Length;
    }

    private async Task<Exception?> PublishAsync(OutboxRow row, CancellationToken ct)
    {
        try
        {
            var type = MessageTypes.Resolve(row.MessageType);
            var message = JsonSerializer.Deserialize(row.Body, type, MessageTypes.Json)
                ?? throw new InvalidOperationException($"outbox row {row.Id} has an empty body");
            // Continue the trace of the request that wrote the row, so one request is followed across services.
            ActivityContext.TryParse(row.TraceParent, null, out var parent);
            using var activity = Activities.StartActivity($"outbox relay {type.Name}", ActivityKind.Producer, parent);
            await bus.Publish(message, type, ctx => ctx.MessageId = row.MessageId, ct).WaitAsync(options.Value.PublishTimeout, ct);
            return null;
        }
        catch (Exception ex) when (!ct.IsCancellationRequested)
        {
            return ex;
        }
    }

    private sealed record OutboxRow(long Id, Guid MessageId, string MessageType, string Body, string? TraceParent, DateTime CreatedAt);
}
