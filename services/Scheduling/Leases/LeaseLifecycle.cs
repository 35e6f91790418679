using System.Text.Json;
using Dapper;
using MassTransit;
using Npgsql;
using Marketplace.Contracts;
using Marketplace.Scheduling.Agents;
using Marketplace.ServiceDefaults.Data;
using Marketplace.ServiceDefaults.Messaging;
using Microsoft.Extensions.Options;

namespace Marketplace.Scheduling.Leases;

/// <summary>
/// A lease locked for a transition; one lease's transitions are serialised by this row lock. Lock order: the lease row
/// first, then its due_work rows (<see cref="LeaseLifecycle.EndAsync"/>, an extension, a preemption, a provisioning
/// deadline all change them under the lease's lock). The due-work runner holds its item's row when a handler runs, so a
/// handler never waits for the lease: <see cref="LeaseLifecycle.LockForDueWorkAsync"/>.
/// </summary>
internal sealed class LockedLease
{
    public const string Columns = """
        id, order_id, renter_org_id, provider_org_id, status, accelerator_model, start_at, end_at, started_at, preempt_at,
        preemption_notice_seconds, ssh_public_key, container_image, verified_only, offer_id, offered_node_ids, offered_slot_ids, match_id
        """;

    public Guid Id { get; init; }
    public Guid OrderId { get; init; }
    public Guid MatchId { get; init; }
    public Guid RenterOrgId { get; init; }
    public Guid ProviderOrgId { get; init; }
    public string Status { get; init; } = "";
    public string AcceleratorModel { get; init; } = "";
    public DateTimeOffset StartAt { get; init; }
    public DateTimeOffset EndAt { get; init; }
    public DateTimeOffset? StartedAt { get; init; }
    public DateTimeOffset? PreemptAt { get; init; }
    public int PreemptionNoticeSeconds { get; init; }
    public string? SshPublicKey { get; init; }
    public string? ContainerImage { get; init; }
    public bool VerifiedOnly { get; init; }
    public Guid? OfferId { get; init; }
    public Guid[]? OfferedNodeIds { get; init; }
    public Guid[]? OfferedSlotIds { get; init; }

    public bool IsTerminal => LeaseLifecycle.Terminal.Contains(Status);

    /// <summary>Where its bookings end: the planned end, or the end of its preemption notice when it got one.</summary>
    public DateTimeOffset Until => PreemptAt is { } p && p < EndAt ? p : EndAt;
}

/// <summary>The transitions every path shares (due work, the renter's cancel, a rejected hold, node failures).</summary>
internal static class LeaseLifecycle
{
    public const string Activate = "lease.activate";
    public const string Complete = "lease.complete";
    public const string Preempt = "lease.preempt";
    public const string ProvisioningTimeout = "lease.provisioning-timeout";

    public static readonly string[] Terminal = ["completed", "cancelled", "failed", "preempted"];

    public static Task<LockedLease?> LockAsync(Tx tx, Guid leaseId, CancellationToken ct) =>
        tx.Connection.QuerySingleOrDefaultAsync<LockedLease>(new CommandDefinition(
            $"SELECT {LockedLease.Columns} FROM leases WHERE id = @leaseId FOR UPDATE",
            new { leaseId }, tx.Transaction, cancellationToken: ct));

    /// <summary>
    /// Locks the lease for a due-work handler, without waiting: the runner already holds the item's due_work row, and a
    /// transaction holding the lease (a cancel, an extension) may be waiting for that row, so waiting here deadlocked
    /// (40P01; docs/reliability.md, known issue 15). A lease locked by someone else raises 55P03, and the runner claims the
    /// item again a moment later, when the other transaction has committed (and may have cancelled or moved the item).
    /// </summary>
    public static Task<LockedLease?> LockForDueWorkAsync(Tx tx, Guid leaseId, CancellationToken ct) =>
        tx.Connection.QuerySingleOrDefaultAsync<LockedLease>(new CommandDefinition(
            $"SELECT {LockedLease.Columns} FROM leases WHERE id = @leaseId FOR UPDATE NOWAIT",
            new { leaseId }, tx.Transaction, cancellationToken: ct));

    /// <summary>
    /// Ends a lease that has not ended: its bookings shrink to end now (to nothing before the start), so the slots are
    /// free again; open downtime closes; pending due work is cancelled; agents get stop instructions; LeaseEnded goes out.
    /// </summary>
    public static async Task EndAsync(Tx tx, LockedLease lease, string status, string cause, string reason, CancellationToken ct,
        DateTimeOffset? at = null)
    {
        var now = at is { } t && t < tx.Now ? t : tx.Now;
        // The downtime counts are read before the open interruption is closed below (that close publishes no resume).
        // Distinct times, as Billing keeps them (a repeated time is one event to it).
        (int Interruptions, int Resumes) downtime;
        await using (var grid = await tx.Connection.QueryMultipleAsync(new CommandDefinition("""
            SELECT count(DISTINCT start_at)::int, count(DISTINCT end_at)::int FROM lease_downtime WHERE lease_id = @Id;
            UPDATE leases SET status = @status, cause = @cause, status_reason = @reason, ended_at = @now WHERE id = @Id;
            UPDATE bookings
            SET during = tstzrange(lower(during), greatest(lower(during), least(upper(during), @now)), '[)')
            WHERE lease_id = @Id;
            UPDATE lease_downtime SET end_at = greatest(start_at, @now) WHERE lease_id = @Id AND end_at IS NULL;
            """, new { lease.Id, status, cause, reason, now }, tx.Transaction, cancellationToken: ct)))
            downtime = await grid.ReadSingleAsync<(int, int)>();
        await Assignments.StopAllAsync(tx, lease.Id, ct);
        await using var batch = tx.NewBatch();
        tx.CancelScheduled(batch, [Activate, Complete, Preempt, ProvisioningTimeout], lease.Id.ToString());
        tx.Publish(batch, new LeaseEnded(lease.Id, lease.OrderId, status, reason, cause, now)
        {
            NeverRan = lease.StartedAt is null,
            Interruptions = downtime.Interruptions,
            Resumes = downtime.Resumes,
        });
        await batch.ExecuteNonQueryAsync(ct);
    }

    /// <summary>The lease runs from now: active, started_at, LeaseStarted with the exact time.</summary>
    public static async Task StartAsync(Tx tx, LockedLease lease, CancellationToken ct)
    {
        var now = tx.Now;
        await using var batch = tx.NewBatch(); // one round trip
        batch.BatchCommands.Add(new NpgsqlBatchCommand("UPDATE leases SET status = 'active', started_at = @now WHERE id = @id")
        {
            Parameters = { new("now", now), new("id", lease.Id) },
        });
        tx.CancelScheduled(batch, [ProvisioningTimeout], lease.Id.ToString());
        tx.Publish(batch, new LeaseStarted(lease.Id, lease.OrderId, now));
        await batch.ExecuteNonQueryAsync(ct);
    }
}

/// <summary>
/// lease.activate: the lease's start has come. Capacity that went bad since booking (unhealthy, in maintenance) is
/// replaced first; then the lease is active, or provisioning until the node agents acknowledge (Scheduling:RequireAgentAck).
/// </summary>
internal sealed class ActivateLease(IOptions<SchedulingOptions> options) : IDueWorkHandler
{
    public string Kind => LeaseLifecycle.Activate;

    public async Task HandleAsync(DueItem item, Tx tx, CancellationToken ct)
    {
        var lease = await LeaseLifecycle.LockForDueWorkAsync(tx, Guid.Parse(item.Key), ct);
        if (lease is not { Status: "scheduled" }) return; // cancelled meanwhile, or already activated
        if (tx.Now >= lease.EndAt)
        {
            // Its start is handled only after its end (this service was down or behind for the whole window): it never ran.
            // Without this it would stay scheduled for ever: the completion waits for the activation.
            await LeaseLifecycle.EndAsync(tx, lease, "failed", "platform",
                "the lease could not be started before its end (the scheduler was unavailable for its whole window); it never ran", ct);
            return;
        }
        if (!await Replacement.ReplaceUnusableNodesAsync(tx, lease, options.Value, ct)) return;
        if (options.Value.RequireAgentAck)
            await Assignments.ProvisionAsync(tx, lease, options.Value, ct);
        else
            await LeaseLifecycle.StartAsync(tx, lease, ct);
    }
}

/// <summary>lease.complete: the lease's end has come.</summary>
internal sealed class CompleteLease : IDueWorkHandler
{
    public string Kind => LeaseLifecycle.Complete;

    public async Task HandleAsync(DueItem item, Tx tx, CancellationToken ct)
    {
        var lease = await LeaseLifecycle.LockForDueWorkAsync(tx, Guid.Parse(item.Key), ct);
        if (lease is null || lease.IsTerminal) return;
        // Its start is still being retried: fail this attempt so the runner comes back after the activation.
        if (lease.Status == "scheduled")
            throw new InvalidOperationException($"lease {lease.Id} reached its end before it was activated; retrying after activation");
        if (lease.Status == "provisioning")
            await LeaseLifecycle.EndAsync(tx, lease, "failed", "provider", "the provider's node agents did not start the lease before its end", ct);
        else // at its end however late the runner (behind, or this service was down): the renter pays up to there only
            await LeaseLifecycle.EndAsync(tx, lease, "completed", "renter", "the lease reached its end", ct, lease.EndAt);
    }
}

/// <summary>lease.preempt: the notice given to an interruptible lease has run out.</summary>
internal sealed class PreemptLease : IDueWorkHandler
{
    public string Kind => LeaseLifecycle.Preempt;

    public async Task HandleAsync(DueItem item, Tx tx, CancellationToken ct)
    {
        var lease = await LeaseLifecycle.LockForDueWorkAsync(tx, Guid.Parse(item.Key), ct);
        if (lease is null || lease.IsTerminal) return;
        var reason = JsonDocument.Parse(item.Payload).RootElement.TryGetProperty("reason", out var r) ? r.GetString() : null;
        if (reason?.StartsWith("preempted: ", StringComparison.Ordinal) == true) reason = reason["preempted: ".Length..]; // Bidding's wording
        // It ends exactly when the notice ran out, where the displacing lease's bookings begin, however late the runner is.
        await LeaseLifecycle.EndAsync(tx, lease, "preempted", "market",
            $"preempted after notice: {reason ?? "the capacity was taken by a higher-priority order"}", ct, lease.PreemptAt);
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
        if (lease is not null && !lease.IsTerminal)
            await LeaseLifecycle.EndAsync(tx, lease, "cancelled", "renter", context.Message.Reason, ct);
        await tx.CommitAsync(ct);
    }
}

internal sealed class HoldRejectedConsumerDefinition : ConsumerDefinition<HoldRejectedConsumer>
{
    public HoldRejectedConsumerDefinition() => ConcurrentMessageLimit = 16;
}
