using Dapper;
using Marketplace.Billing.Domain;
using Marketplace.Billing.Ledger;
using Marketplace.Contracts;
using Marketplace.ServiceDefaults.Data;
using MassTransit;
using Npgsql;

namespace Marketplace.Billing.Usage;

/// <summary>Usage starts when the lease becomes active.</summary>
internal sealed class LeaseStartedConsumer(Db db) : IConsumer<LeaseStarted>
{
    public async Task Consume(ConsumeContext<LeaseStarted> context)
    {
        var m = context.Message;
        var ct = context.CancellationToken;
        await using var tx = await db.BeginAsync(ct);
        await using (var read = await tx.FirstDeliveryWithAsync(context, "lease-started", """
            INSERT INTO usage (lease_id, started_at) VALUES (@LeaseId, @At)
            ON CONFLICT (lease_id) DO UPDATE SET started_at = COALESCE(usage.started_at, excluded.started_at)
            """, new { m.LeaseId, At = m.At.ToUniversalTime() }))
            if (read is null) return; // handled before
        await tx.CommitAsync(ct);
    }
}

/// <summary>
/// Usage ends when the lease reaches a terminal state. A lease that never ran gets its whole hold back now rather than
/// at the billing run: when Scheduling's record says so (<see cref="LeaseEnded.NeverRan"/>, read under the lease's lock,
/// so no LeaseStarted can still be on its way), or when it ended before its scheduled start (publishers that do not say).
/// Without either, a LeaseEnded that overtook its LeaseStarted must not release money the lease used: the run settles it.
/// Scheduling's downtime counts are kept for the run, which waits until Billing holds as many interruptions and resumes.
/// </summary>
internal sealed class LeaseEndedConsumer(Db db) : IConsumer<LeaseEnded>
{
    public async Task Consume(ConsumeContext<LeaseEnded> context)
    {
        var m = context.Message;
        var ct = context.CancellationToken;
        await using var tx = await db.BeginAsync(ct);
        (DateTime? StartedAt, DateTime? EndedAt) usage;
        HoldRow? hold;
        // One round trip: the inbox mark, the lease's lock, the usage's end and the pending hold (locked).
        await using (var read = await tx.FirstDeliveryWithAsync(context, "lease-ended", $"""
            {LockLeaseSql};
            INSERT INTO usage (lease_id, ended_at, end_status, end_reason, end_cause, never_ran, interruptions, resumes)
            VALUES (@LeaseId, @At, @Status, @Reason, @Cause, @NeverRan, @Interruptions, @Resumes)
            ON CONFLICT (lease_id) DO UPDATE SET ended_at = COALESCE(usage.ended_at, excluded.ended_at),
                end_status = COALESCE(usage.end_status, excluded.end_status), end_reason = COALESCE(usage.end_reason, excluded.end_reason),
                end_cause = COALESCE(usage.end_cause, excluded.end_cause), never_ran = usage.never_ran OR excluded.never_ran,
                interruptions = COALESCE(usage.interruptions, excluded.interruptions), resumes = COALESCE(usage.resumes, excluded.resumes)
            RETURNING started_at, ended_at;
            SELECT h.id, h.renter_org_id, h.amount, h.currency, l.start_at
            FROM holds h JOIN leases l USING (lease_id)
            WHERE h.lease_id = @LeaseId AND h.status = 'pending' FOR UPDATE OF h;
            """, new { m.LeaseId, At = m.At.ToUniversalTime(), m.Status, m.Reason, m.Cause, m.NeverRan, m.Interruptions, m.Resumes }))
        {
            if (read is null) return; // handled before
            await read.ReadAsync(); // the lease's lock
            usage = await read.ReadSingleAsync<(DateTime? StartedAt, DateTime? EndedAt)>();
            hold = await read.ReadSingleOrDefaultAsync<HoldRow>();
        }
        if (hold is not null && usage.StartedAt is null && (m.NeverRan || m.At.UtcDateTime <= hold.StartAt))
            await VoidAsync(tx, m.LeaseId, hold, ct);
        await tx.CommitAsync(ct);
    }

    /// <summary>
    /// Serialises this consumer and the hold's placement for one lease (taken before the wallet's lock), so whichever
    /// comes second sees what the first wrote: a never-run lease's hold is released whatever order the events arrive in.
    /// </summary>
    internal const string LockLeaseSql = "SELECT pg_advisory_xact_lock(hashtextextended('billing-lease:' || @LeaseId::text, 0))";

    internal sealed record HoldRow(Guid Id, Guid RenterOrgId, long Amount, string Currency, DateTime StartAt);

    /// <summary>Releases a pending hold (locked by the caller) whole: the release the billing run would post, under the same key.</summary>
    internal static async Task VoidAsync(Tx tx, Guid leaseId, HoldRow hold, CancellationToken ct)
    {
        await using var batch = tx.NewBatch();
        if (hold.Amount > 0)
            batch.BatchCommands.Add(LedgerStore.PostCommand([LedgerTransaction.Transfer($"release:{leaseId}", "release",
                Accounts.RenterHeld(hold.RenterOrgId), Accounts.RenterAvailable(hold.RenterOrgId), hold.Currency, hold.Amount)], tx.Now));
        batch.BatchCommands.Add(new NpgsqlBatchCommand("UPDATE holds SET status = 'voided', settled_at = @now WHERE id = @id")
        {
            Parameters = { new("now", tx.Now), new("id", hold.Id) },
        });
        await batch.ExecuteNonQueryAsync(ct);
    }
}

internal sealed class LeaseStartedConsumerDefinition : ConsumerDefinition<LeaseStartedConsumer>
{
    protected override void ConfigureConsumer(IReceiveEndpointConfigurator endpoint,
        IConsumerConfigurator<LeaseStartedConsumer> consumer, IRegistrationContext context) => endpoint.ConcurrentMessageLimit = 16;
}

internal sealed class LeaseEndedConsumerDefinition : ConsumerDefinition<LeaseEndedConsumer>
{
    protected override void ConfigureConsumer(IReceiveEndpointConfigurator endpoint,
        IConsumerConfigurator<LeaseEndedConsumer> consumer, IRegistrationContext context) => endpoint.ConcurrentMessageLimit = 16;
}
