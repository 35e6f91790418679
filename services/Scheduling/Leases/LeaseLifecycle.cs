using Dapper;
using MassTransit;
using Marketplace.Contracts;
using Marketplace.ServiceDefaults.Data;
using Marketplace.ServiceDefaults.Messaging;

namespace Marketplace.Scheduling.Leases;

/// <summary>A lease locked for a transition; one lease's transitions are serialised by this row lock.</summary>
internal sealed record LockedLease(Guid Id, Guid OrderId, Guid RenterOrgId, string Status);

/// <summary>The transitions every path shares (due work, the renter's cancel, a rejected hold).</summary>
internal static class LeaseLifecycle
{
    public static readonly string[] Terminal = ["completed", "cancelled", "failed", "preempted"];

    public static Task<LockedLease?> LockAsync(Tx tx, Guid leaseId, CancellationToken ct) =>
        tx.Connection.QuerySingleOrDefaultAsync<LockedLease>(new CommandDefinition(
            "SELECT id, order_id, renter_org_id, status FROM leases WHERE id = @leaseId FOR UPDATE",
            new { leaseId }, tx.Transaction, cancellationToken: ct));

    /// <summary>
    /// Ends a scheduled or active lease now: its bookings shrink to end now (to nothing before the start), so the slots
    /// are free again; its pending start/end work is cancelled; LeaseEnded goes to the outbox.
    /// </summary>
    public static async Task EndAsync(Tx tx, LockedLease lease, string status, string cause, string reason, CancellationToken ct)
    {
        var now = tx.Now;
        await tx.Connection.ExecuteAsync(new CommandDefinition("""
            UPDATE leases SET status = @status, cause = @cause, status_reason = @reason, ended_at = @now WHERE id = @Id
            """, new { lease.Id, status, cause, reason, now }, tx.Transaction, cancellationToken: ct));
        await tx.Connection.ExecuteAsync(new CommandDefinition("""
            UPDATE bookings
            SET during = tstzrange(lower(during), greatest(lower(during), least(upper(during), @now)), '[)')
            WHERE lease_id = @Id
            """, new { lease.Id, now }, tx.Transaction, cancellationToken: ct));
        await tx.CancelScheduledAsync(OrderMatchedConsumer.Activate, lease.Id.ToString(), ct);
        await tx.CancelScheduledAsync(OrderMatchedConsumer.Complete, lease.Id.ToString(), ct);
        await tx.PublishAsync(new LeaseEnded(lease.Id, lease.OrderId, status, reason, cause, now), ct);
    }
}

/// <summary>lease.activate: the lease's start has come.</summary>
internal sealed class ActivateLease : IDueWorkHandler
{
    public string Kind => OrderMatchedConsumer.Activate;

    public async Task HandleAsync(DueItem item, Tx tx, CancellationToken ct)
    {
        var lease = await LeaseLifecycle.LockAsync(tx, Guid.Parse(item.Key), ct);
        if (lease is not { Status: "scheduled" }) return; // cancelled meanwhile, or already activated
        await tx.Connection.ExecuteAsync(new CommandDefinition(
            "UPDATE leases SET status = 'active', started_at = @now WHERE id = @Id",
            new { lease.Id, now = tx.Now }, tx.Transaction, cancellationToken: ct));
        await tx.PublishAsync(new LeaseStarted(lease.Id, lease.OrderId, tx.Now), ct);
    }
}

/// <summary>lease.complete: the lease's end has come.</summary>
internal sealed class CompleteLease : IDueWorkHandler
{
    public string Kind => OrderMatchedConsumer.Complete;

    public async Task HandleAsync(DueItem item, Tx tx, CancellationToken ct)
    {
        var lease = await LeaseLifecycle.LockAsync(tx, Guid.Parse(item.Key), ct);
        if (lease is null || LeaseLifecycle.Terminal.Contains(lease.Status)) return;
        // Its start is still being retried: fail this attempt so the runner comes back after the activation.
        if (lease.Status == "scheduled")
            throw new InvalidOperationException($"lease {lease.Id} reached its end before it was activated; retrying after activation");
        await LeaseLifecycle.EndAsync(tx, lease, "completed", "renter", "the lease reached its end", ct);
    }
}

/// <summary>Billing could not hold the lease's cost: the lease is cancelled on the renter's account.</summary>
internal sealed class HoldRejectedConsumer(Db db) : IConsumer<HoldRejected>
{
    public async Task Consume(ConsumeContext<HoldRejected> context)
    {
        var ct = context.CancellationToken;
        await using var tx = await db.BeginAsync(ct);
        if (!await tx.FirstDeliveryAsync(context, "hold-rejected")) return;
        var lease = await LeaseLifecycle.LockAsync(tx, context.Message.LeaseId, ct);
        if (lease is not null && !LeaseLifecycle.Terminal.Contains(lease.Status))
            await LeaseLifecycle.EndAsync(tx, lease, "cancelled", "renter", context.Message.Reason, ct);
        await tx.CommitAsync(ct);
    }
}

internal sealed class HoldRejectedConsumerDefinition : ConsumerDefinition<HoldRejectedConsumer>
{
    public HoldRejectedConsumerDefinition() => ConcurrentMessageLimit = 16;
}
