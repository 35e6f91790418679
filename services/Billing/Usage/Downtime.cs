using Dapper;
using Marketplace.Billing.Domain;
using Marketplace.Contracts;
using Marketplace.ServiceDefaults.Data;
using MassTransit;

namespace Marketplace.Billing.Usage;

/// <summary>
/// Downtime intervals from Scheduling: LeaseInterrupted opens one, LeaseResumed closes it. Never charged to the renter;
/// what the provider or the platform caused counts against the SLA. They arrive in any order; <see cref="DowntimeLog"/>
/// pairs them.
/// </summary>
internal sealed class LeaseInterruptedConsumer(Db db) : IConsumer<LeaseInterrupted>
{
    public async Task Consume(ConsumeContext<LeaseInterrupted> context)
    {
        var m = context.Message;
        await DowntimeStore.ChangeAsync(db, context, "lease-interrupted", m.LeaseId,
            rows => DowntimeLog.Interrupted(rows, DowntimeStore.Micros(m.At), StoredCause(m.Cause), m.Reason));
    }

    /// <summary>
    /// The cause as stored: a billing run joins a lease's causes with the unit separator (U+001F) to read them, so a cause
    /// never holds one (the causes are one word each; a stray separator becomes a space rather than refusing the downtime).
    /// An event without a cause (empty, blank or missing) is still downtime: stored as <see cref="UnknownCause"/>, never
    /// empty, since an empty cause marks a resume waiting for its interruption (<see cref="DowntimeLog"/>) and the
    /// interruption would be lost, its time billed.
    /// </summary>
    private static string StoredCause(string? cause) =>
        string.IsNullOrWhiteSpace(cause) ? UnknownCause : cause.Replace(Runs.BillingRunner.CauseSeparator, ' ');

    /// <summary>The cause of an interruption whose event named none: not billed, and not counted for the SLA.</summary>
    public const string UnknownCause = "unknown";
}

internal sealed class LeaseResumedConsumer(Db db) : IConsumer<LeaseResumed>
{
    public Task Consume(ConsumeContext<LeaseResumed> context) =>
        DowntimeStore.ChangeAsync(db, context, "lease-resumed", context.Message.LeaseId,
            rows => DowntimeLog.Resumed(rows, DowntimeStore.Micros(context.Message.At)));
}

/// <summary>A lease's downtime rows, read and rewritten whole under the lease's downtime lock.</summary>
internal static class DowntimeStore
{
    /// <summary>
    /// Three round trips: the inbox mark, the lease's lock (an interruption and a resume of one lease may be consumed at
    /// once) and its rows; the rows as <paramref name="change"/> makes them; the commit.
    /// </summary>
    public static async Task ChangeAsync(Db db, ConsumeContext context, string consumer, Guid leaseId,
        Func<IReadOnlyList<DowntimeRow>, List<DowntimeRow>> change)
    {
        var ct = context.CancellationToken;
        await using var tx = await db.BeginAsync(ct);
        List<DowntimeRow> rows;
        await using (var read = await tx.FirstDeliveryWithAsync(context, consumer, """
            SELECT pg_advisory_xact_lock(hashtextextended('billing-downtime:' || @leaseId::text, 0));
            SELECT started_at, ended_at, cause, reason FROM downtime WHERE lease_id = @leaseId;
            """, new { leaseId }))
        {
            if (read is null) return; // handled before
            await read.ReadAsync(); // the lock
            rows = (await read.ReadAsync<(DateTime StartedAt, DateTime? EndedAt, string Cause, string? Reason)>())
                .Select(r => new DowntimeRow(r.StartedAt, r.EndedAt, r.Cause, r.Reason)).ToList();
        }
        rows = change(rows);
        await tx.Connection.ExecuteAsync(new CommandDefinition("""
            DELETE FROM downtime WHERE lease_id = @leaseId;
            INSERT INTO downtime (lease_id, started_at, ended_at, cause, reason)
            SELECT @leaseId, r.started_at, r.ended_at, r.cause, r.reason FROM unnest(@starts, @ends, @causes, @reasons) AS r(started_at, ended_at, cause, reason);
            """, new
        {
            leaseId,
            starts = rows.Select(r => r.StartedAt).ToArray(),
            ends = rows.Select(r => r.EndedAt).ToArray(),
            causes = rows.Select(r => r.Cause).ToArray(),
            reasons = rows.Select(r => r.Reason).ToArray(),
        }, tx.Transaction, cancellationToken: ct));
        await tx.CommitAsync(ct);
    }

    /// <summary>A message's time as PostgreSQL keeps it (microseconds, UTC), so that it compares with the stored ones.</summary>
    public static DateTime Micros(DateTimeOffset at)
    {
        var utc = at.UtcDateTime;
        return new DateTime(utc.Ticks - utc.Ticks % TimeSpan.TicksPerMicrosecond, DateTimeKind.Utc);
    }
}

internal sealed class LeaseInterruptedConsumerDefinition : ConsumerDefinition<LeaseInterruptedConsumer>
{
    protected override void ConfigureConsumer(IReceiveEndpointConfigurator endpoint,
        IConsumerConfigurator<LeaseInterruptedConsumer> consumer, IRegistrationContext context) => endpoint.ConcurrentMessageLimit = 16;
}

internal sealed class LeaseResumedConsumerDefinition : ConsumerDefinition<LeaseResumedConsumer>
{
    protected override void ConfigureConsumer(IReceiveEndpointConfigurator endpoint,
        IConsumerConfigurator<LeaseResumedConsumer> consumer, IRegistrationContext context) => endpoint.ConcurrentMessageLimit = 16;
}
