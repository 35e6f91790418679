using Dapper;
using Marketplace.Contracts;
using Marketplace.ServiceDefaults.Data;
using MassTransit;

namespace Marketplace.Billing.Usage;

/// <summary>
/// Downtime intervals from Scheduling: LeaseInterrupted opens one, LeaseResumed closes the open one. Never charged to
/// the renter; what the provider or the platform caused counts against the SLA. Either may arrive first.
/// </summary>
internal sealed class LeaseInterruptedConsumer(Db db) : IConsumer<LeaseInterrupted>
{
    public async Task Consume(ConsumeContext<LeaseInterrupted> context)
    {
        var m = context.Message;
        var ct = context.CancellationToken;
        await using var tx = await db.BeginAsync(ct);
        if (!await tx.FirstDeliveryAsync(context, "lease-interrupted")) return;
        await LockLeaseAsync(tx, m.LeaseId, ct);
        await tx.Connection.ExecuteAsync(new CommandDefinition("""
            INSERT INTO downtime (lease_id, started_at, ended_at, cause, reason)
            VALUES (@LeaseId, @At,
                    -- a resume that overtook this message already waits as a closed zero-cause stub; adopt its end
                    (SELECT min(ended_at) FROM downtime WHERE lease_id = @LeaseId AND cause = '' AND ended_at >= @At),
                    @Cause, @Reason)
            ON CONFLICT (lease_id, started_at) DO NOTHING;
            DELETE FROM downtime WHERE lease_id = @LeaseId AND cause = ''
              AND ended_at = (SELECT ended_at FROM downtime WHERE lease_id = @LeaseId AND started_at = @At);
            """, new { m.LeaseId, At = m.At.ToUniversalTime(), Cause = StoredCause(m.Cause), m.Reason }, tx.Transaction, cancellationToken: ct));
        await tx.CommitAsync(ct);
    }

    /// <summary>
    /// The cause as stored: a billing run joins a lease's causes with the unit separator (U+001F) to read them, so a cause
    /// never holds one (the causes are one word each; a stray separator becomes a space rather than refusing the downtime).
    /// </summary>
    private static string StoredCause(string cause) => cause.Replace(Runs.BillingRunner.CauseSeparator, ' ');

    /// <summary>An interruption and its resume may be consumed at once; one lease's downtime rows change one at a time.</summary>
    internal static Task LockLeaseAsync(Tx tx, Guid leaseId, CancellationToken ct) =>
        tx.Connection.ExecuteAsync(new CommandDefinition("SELECT pg_advisory_xact_lock(hashtextextended('billing-downtime:' || @leaseId::text, 0))",
            new { leaseId }, tx.Transaction, cancellationToken: ct));
}

internal sealed class LeaseResumedConsumer(Db db) : IConsumer<LeaseResumed>
{
    public async Task Consume(ConsumeContext<LeaseResumed> context)
    {
        var m = context.Message;
        var ct = context.CancellationToken;
        await using var tx = await db.BeginAsync(ct);
        if (!await tx.FirstDeliveryAsync(context, "lease-resumed")) return;
        await LeaseInterruptedConsumer.LockLeaseAsync(tx, m.LeaseId, ct);
        var closed = await tx.Connection.ExecuteAsync(new CommandDefinition("""
            UPDATE downtime SET ended_at = @At
            WHERE lease_id = @LeaseId AND started_at = (SELECT max(started_at) FROM downtime
                                                        WHERE lease_id = @LeaseId AND ended_at IS NULL AND started_at <= @At)
            """, new { m.LeaseId, At = m.At.ToUniversalTime() }, tx.Transaction, cancellationToken: ct));
        if (closed == 0)
        {
            // The interruption has not arrived yet (messages are not ordered across queues): keep the end as a stub
            // (empty cause, zero length) that LeaseInterrupted adopts. A stub alone never counts as downtime.
            await tx.Connection.ExecuteAsync(new CommandDefinition("""
                INSERT INTO downtime (lease_id, started_at, ended_at, cause, reason) VALUES (@LeaseId, @At, @At, '', 'resume before interruption')
                ON CONFLICT (lease_id, started_at) DO NOTHING
                """, new { m.LeaseId, At = m.At.ToUniversalTime() }, tx.Transaction, cancellationToken: ct));
        }
        await tx.CommitAsync(ct);
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
