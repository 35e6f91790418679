using System.Diagnostics;
using System.Text.Json;
using Dapper;
using MassTransit;
using Marketplace.ServiceDefaults.Messaging;
using Npgsql;

namespace Marketplace.ServiceDefaults.Data;

/// <summary>
/// One business transaction. State changes, outbox messages, inbox marks and due work all commit together;
/// Npgsql runs every command on the connection inside the open transaction.
/// </summary>
public sealed class Tx(NpgsqlConnection connection, NpgsqlTransaction transaction, OutboxSignal outboxSignal, TimeProvider time,
    DueWorkSignal? dueWorkSignal = null) : IAsyncDisposable
{
    private bool _published;
    private DateTimeOffset? _soonestScheduled;

    public NpgsqlConnection Connection => connection;
    public NpgsqlTransaction Transaction => transaction;
    public DateTimeOffset Now => time.GetUtcNow();

    /// <summary>Writes an event to the outbox; it is published only if this transaction commits.</summary>
    public async Task PublishAsync<T>(T message, CancellationToken ct) where T : class
    {
        await using var batch = NewBatch();
        Publish(batch, message);
        await batch.ExecuteNonQueryAsync(ct);
    }

    /// <summary>
    /// Adds the outbox row of <paramref name="message"/> to <paramref name="batch"/>, to be written with the batch's other
    /// statements; it is published only if this transaction commits.
    /// </summary>
    public void Publish<T>(NpgsqlBatch batch, T message) where T : class
    {
        batch.BatchCommands.Add(new NpgsqlBatchCommand("""
            INSERT INTO outbox (message_id, message_type, body, trace_parent, created_at)
            VALUES (@message_id, @message_type, @body::jsonb, @trace_parent, @created_at)
            """)
        {
            Parameters =
            {
                new("message_id", NewId.NextGuid()),
                new("message_type", MessageTypes.NameOf(typeof(T))),
                new("body", JsonSerializer.Serialize(message, MessageTypes.Json)),
                new("trace_parent", NpgsqlTypes.NpgsqlDbType.Text) { Value = (object?)Activity.Current?.Id ?? DBNull.Value },
                new("created_at", time.GetUtcNow()),
            },
        });
        _published = true;
    }

    /// <summary>
    /// Statements to send together, in one round trip, inside this transaction: each runs after the one before it and
    /// sees what it wrote; the first that fails fails the transaction.
    /// </summary>
    public NpgsqlBatch NewBatch() => new(connection, transaction);

    /// <summary>Writes several events to the outbox in one statement (a batch of placements); published only if this transaction commits.</summary>
    public async Task PublishAllAsync<T>(IReadOnlyCollection<T> messages, CancellationToken ct) where T : class
    {
        if (messages.Count == 0) return;
        await connection.ExecuteAsync(new CommandDefinition("""
            INSERT INTO outbox (message_id, message_type, body, trace_parent, created_at)
            SELECT m.id, @MessageType, m.body::jsonb, @TraceParent, @CreatedAt FROM unnest(@Ids, @Bodies) AS m(id, body)
            """, new
        {
            Ids = messages.Select(_ => NewId.NextGuid()).ToArray(),
            Bodies = messages.Select(m => JsonSerializer.Serialize(m, MessageTypes.Json)).ToArray(),
            MessageType = MessageTypes.NameOf(typeof(T)),
            TraceParent = Activity.Current?.Id,
            CreatedAt = time.GetUtcNow(),
        }, transaction, cancellationToken: ct));
        _published = true;
    }

    /// <summary>
    /// Records that <paramref name="consumer"/> handled this message. False means it already did (a redelivery):
    /// the caller must skip the effect. Concurrent duplicates wait on the primary key and then see the first one's row.
    /// </summary>
    public async Task<bool> FirstDeliveryAsync(ConsumeContext context, string consumer)
    {
        var inserted = await connection.ExecuteAsync(new CommandDefinition(InboxSql, InboxParameters(new DynamicParameters(), context, consumer),
            transaction, cancellationToken: context.CancellationToken));
        return inserted == 1;
    }

    private const string InboxSql = """
        INSERT INTO inbox (message_id, consumer, received_at) VALUES (@inbox_message_id, @inbox_consumer, @inbox_now)
        ON CONFLICT DO NOTHING
        """;

    private DynamicParameters InboxParameters(DynamicParameters parameters, ConsumeContext context, string consumer)
    {
        parameters.Add("inbox_message_id", context.MessageId ?? throw new InvalidOperationException("message without MessageId"));
        parameters.Add("inbox_consumer", consumer);
        parameters.Add("inbox_now", time.GetUtcNow());
        return parameters;
    }

    /// <summary>
    /// <see cref="FirstDeliveryAsync"/> and the statements of <paramref name="sql"/> in one round trip: the inbox mark first,
    /// then the statements, in order. Null means this consumer handled the message before (a redelivery): the caller
    /// returns without committing, so nothing the statements wrote stays. Otherwise the reader holds the results of the
    /// statements that return rows, in order; the caller reads them all before its next command. The inbox's own
    /// parameters are named <c>@inbox_*</c>.
    /// </summary>
    public async Task<SqlMapper.GridReader?> FirstDeliveryWithAsync(ConsumeContext context, string consumer, string sql, object? param = null)
    {
        var reader = await connection.QueryMultipleAsync(new CommandDefinition($"""
            {InboxSql} RETURNING true;
            {sql}
            """, InboxParameters(new DynamicParameters(param), context, consumer), transaction, cancellationToken: context.CancellationToken));
        if (await reader.ReadSingleOrDefaultAsync<bool>()) return reader;
        await reader.DisposeAsync();
        return null;
    }

    /// <summary>Schedules (or moves) work of <paramref name="kind"/> for <paramref name="key"/> at <paramref name="dueAt"/>.</summary>
    public Task ScheduleAsync(string kind, string key, DateTimeOffset dueAt, CancellationToken ct, object? payload = null)
    {
        Scheduled(dueAt);
        return connection.ExecuteAsync(new CommandDefinition("""
            INSERT INTO due_work (kind, key, due_at, payload) VALUES (@kind, @key, @dueAt, @payload::jsonb)
            ON CONFLICT (kind, key) DO UPDATE
              SET due_at = excluded.due_at, payload = excluded.payload, done_at = NULL, attempts = 0, last_error = NULL
            """, new { kind, key, dueAt, payload = JsonSerializer.Serialize(payload ?? new { }, MessageTypes.Json) },
            transaction, cancellationToken: ct));
    }

    /// <summary>Schedules (or moves) several items of due work in one statement; each (kind, key) at most once.</summary>
    public Task ScheduleAllAsync(IReadOnlyCollection<(string Kind, string Key, DateTimeOffset DueAt)> items, CancellationToken ct)
    {
        if (items.Count == 0) return Task.CompletedTask;
        Scheduled(items.Min(i => i.DueAt));
        return connection.ExecuteAsync(new CommandDefinition("""
            INSERT INTO due_work (kind, key, due_at, payload) SELECT w.kind, w.key, w.due_at, '{}' FROM unnest(@kinds, @keys, @dueAts) AS w(kind, key, due_at)
            ON CONFLICT (kind, key) DO UPDATE
              SET due_at = excluded.due_at, payload = excluded.payload, done_at = NULL, attempts = 0, last_error = NULL
            """, new
            {
                kinds = items.Select(i => i.Kind).ToArray(), keys = items.Select(i => i.Key).ToArray(),
                dueAts = items.Select(i => i.DueAt.UtcDateTime).ToArray(),
            }, transaction, cancellationToken: ct));
    }

    private void Scheduled(DateTimeOffset dueAt)
    {
        if (_soonestScheduled is not { } soonest || dueAt < soonest) _soonestScheduled = dueAt;
    }

    /// <summary>Cancels pending work of <paramref name="kind"/> for <paramref name="key"/>, if any.</summary>
    public Task CancelScheduledAsync(string kind, string key, CancellationToken ct) => CancelScheduledAsync([kind], key, ct);

    /// <summary>Cancels pending work of any of <paramref name="kinds"/> for <paramref name="key"/>, in one statement.</summary>
    public async Task CancelScheduledAsync(string[] kinds, string key, CancellationToken ct)
    {
        await using var batch = NewBatch();
        CancelScheduled(batch, kinds, key);
        await batch.ExecuteNonQueryAsync(ct);
    }

    /// <summary>Adds the cancelling of pending work of any of <paramref name="kinds"/> for <paramref name="key"/> to <paramref name="batch"/>.</summary>
    public void CancelScheduled(NpgsqlBatch batch, string[] kinds, string key) =>
        batch.BatchCommands.Add(new NpgsqlBatchCommand(
            "UPDATE due_work SET done_at = @now, last_error = 'cancelled' WHERE kind = ANY(@kinds) AND key = @key AND done_at IS NULL")
        {
            Parameters = { new("now", time.GetUtcNow()), new("kinds", kinds), new("key", key) },
        });

    public async Task CommitAsync(CancellationToken ct)
    {
        await transaction.CommitAsync(ct);
        if (_published) outboxSignal.Wake();
        // Work due within the runner's (default) poll interval is woken for; later work is found by its watch in time.
        if (_soonestScheduled is { } soonest && soonest <= time.GetUtcNow() + DueWorkRunner.DefaultPollInterval) dueWorkSignal?.Wake();
    }

    public async ValueTask DisposeAsync()
    {
        await transaction.DisposeAsync();
        await connection.DisposeAsync();
    }
}
