using Dapper;
using MassTransit;
using Marketplace.Contracts;
using Marketplace.Scheduling.Leases;
using Marketplace.ServiceDefaults.Data;
using Marketplace.ServiceDefaults.Messaging;
using Microsoft.Extensions.Options;

namespace Marketplace.Scheduling.Nodes;

/// <summary>
/// Health and verification from Listings into the node copy. Placement skips unhealthy nodes; a node that turns
/// unhealthy under a running lease has the lease's slots moved to spare capacity (or the lease fails).
/// </summary>
internal sealed class NodeHealthChangedConsumer(Db db, IOptions<SchedulingOptions> options) : IConsumer<NodeHealthChanged>
{
    public async Task Consume(ConsumeContext<NodeHealthChanged> context)
    {
        var m = context.Message;
        var ct = context.CancellationToken;
        var health = m.Health == "healthy" ? "healthy" : "unhealthy";
        await using var tx = await db.BeginAsync(ct);
        if (!await tx.FirstDeliveryAsync(context, "node-health-changed")) return;
        var known = await tx.Connection.QuerySingleOrDefaultAsync<(Guid Id, DateTime? HealthAt)>(new CommandDefinition(
            "SELECT id, health_at FROM nodes WHERE id = @NodeId FOR UPDATE", new { m.NodeId }, tx.Transaction, cancellationToken: ct));
        if (known.Id == Guid.Empty) throw new NodesNotKnownYetException($"node {m.NodeId} of a health change is not registered here yet");
        if (known.HealthAt is { } last && new DateTimeOffset(last, TimeSpan.Zero) > m.At)
        {
            await tx.CommitAsync(ct); // an older report arriving late: the newer one stands
            return;
        }
        await tx.Connection.ExecuteAsync(new CommandDefinition("""
            UPDATE nodes SET health = @health, verified = @Verified, health_reason = @Reason, health_at = @At WHERE id = @NodeId
            """, new { health, m.Verified, m.Reason, At = m.At.ToUniversalTime(), m.NodeId }, tx.Transaction, cancellationToken: ct));
        if (health == "unhealthy")
            await NodeOutage.MoveRunningLeasesAsync(tx, m.NodeId, m.At, $"node {m.NodeId} became unhealthy ({m.Reason})", options.Value, ct);
        await tx.CommitAsync(ct);
    }
}

internal sealed class NodeHealthChangedConsumerDefinition : ConsumerDefinition<NodeHealthChangedConsumer>
{
    public NodeHealthChangedConsumerDefinition() => ConcurrentMessageLimit = 8;

    protected override void ConfigureConsumer(IReceiveEndpointConfigurator endpointConfigurator,
        IConsumerConfigurator<NodeHealthChangedConsumer> consumerConfigurator, IRegistrationContext context) =>
        // The node's registration may still be on its way; a lost race with a placement (23P01) is retried on fresh data.
        consumerConfigurator.UseMessageRetry(r => r.Intervals(
            TimeSpan.FromMilliseconds(200), TimeSpan.FromSeconds(1), TimeSpan.FromSeconds(3), TimeSpan.FromSeconds(10), TimeSpan.FromSeconds(30)));
}

/// <summary>A maintenance window: placement avoids the node over it; leases still on the node when it starts move.</summary>
internal sealed class NodeMaintenanceScheduledConsumer(Db db) : IConsumer<NodeMaintenanceScheduled>
{
    public const string Kind = "node.maintenance-start";

    public async Task Consume(ConsumeContext<NodeMaintenanceScheduled> context)
    {
        var m = context.Message;
        var ct = context.CancellationToken;
        await using var tx = await db.BeginAsync(ct);
        if (!await tx.FirstDeliveryAsync(context, "node-maintenance-scheduled")) return;
        var inserted = await tx.Connection.ExecuteAsync(new CommandDefinition("""
            INSERT INTO node_maintenance (id, node_id, during) VALUES (@MaintenanceId, @NodeId, tstzrange(@Start, @End, '[)'))
            ON CONFLICT (id) DO NOTHING
            """, new { m.MaintenanceId, m.NodeId, Start = m.Start.ToUniversalTime(), End = m.End.ToUniversalTime() },
            tx.Transaction, cancellationToken: ct));
        if (inserted == 1 && m.End > m.Start)
            await tx.ScheduleAsync(Kind, m.MaintenanceId.ToString(), m.Start, ct);
        await tx.CommitAsync(ct);
    }
}

internal sealed class NodeMaintenanceScheduledConsumerDefinition : ConsumerDefinition<NodeMaintenanceScheduledConsumer>
{
    public NodeMaintenanceScheduledConsumerDefinition() => ConcurrentMessageLimit = 8;
}

internal sealed class NodeMaintenanceCancelledConsumer(Db db) : IConsumer<NodeMaintenanceCancelled>
{
    public async Task Consume(ConsumeContext<NodeMaintenanceCancelled> context)
    {
        var m = context.Message;
        var ct = context.CancellationToken;
        await using var tx = await db.BeginAsync(ct);
        if (!await tx.FirstDeliveryAsync(context, "node-maintenance-cancelled")) return;
        var updated = await tx.Connection.ExecuteAsync(new CommandDefinition(
            "UPDATE node_maintenance SET cancelled_at = @At WHERE id = @MaintenanceId AND cancelled_at IS NULL",
            new { m.MaintenanceId, At = m.At.ToUniversalTime() }, tx.Transaction, cancellationToken: ct));
        // The cancellation overtook its schedule: record it cancelled so the late schedule changes nothing.
        if (updated == 0)
            await tx.Connection.ExecuteAsync(new CommandDefinition("""
                INSERT INTO node_maintenance (id, node_id, during, cancelled_at) VALUES (@MaintenanceId, @NodeId, 'empty', @At)
                ON CONFLICT (id) DO NOTHING
                """, new { m.MaintenanceId, m.NodeId, At = m.At.ToUniversalTime() }, tx.Transaction, cancellationToken: ct));
        await tx.CancelScheduledAsync(NodeMaintenanceScheduledConsumer.Kind, m.MaintenanceId.ToString(), ct);
        await tx.CommitAsync(ct);
    }
}

internal sealed class NodeMaintenanceCancelledConsumerDefinition : ConsumerDefinition<NodeMaintenanceCancelledConsumer>
{
    public NodeMaintenanceCancelledConsumerDefinition() => ConcurrentMessageLimit = 8;
}

/// <summary>
/// node.maintenance-start: the window opens; running leases on the node move to spare capacity. It waits for the leases'
/// locks, unlike the lease handlers (<see cref="LeaseLifecycle.LockForDueWorkAsync"/>): its own item is keyed by the
/// maintenance, and no transaction that holds a lease changes a maintenance's due work.
/// </summary>
internal sealed class MaintenanceStart(IOptions<SchedulingOptions> options) : IDueWorkHandler
{
    public string Kind => NodeMaintenanceScheduledConsumer.Kind;

    public async Task HandleAsync(DueItem item, Tx tx, CancellationToken ct)
    {
        var nodeId = await tx.Connection.QuerySingleOrDefaultAsync<Guid?>(new CommandDefinition(
            "SELECT node_id FROM node_maintenance WHERE id = @id AND cancelled_at IS NULL",
            new { id = Guid.Parse(item.Key) }, tx.Transaction, cancellationToken: ct));
        if (nodeId is null) return;
        await NodeOutage.MoveRunningLeasesAsync(tx, nodeId.Value, tx.Now, $"node {nodeId} entered scheduled maintenance", options.Value, ct);
    }
}

internal static class NodeOutage
{
    /// <summary>Every lease running (or provisioning) on the node moves off it, in lease id order so concurrent outages never deadlock.</summary>
    public static async Task MoveRunningLeasesAsync(Tx tx, Guid nodeId, DateTimeOffset at, string reason, SchedulingOptions options, CancellationToken ct)
    {
        var leaseIds = await tx.Connection.QueryAsync<Guid>(new CommandDefinition("""
            SELECT DISTINCT b.lease_id FROM bookings b
            JOIN gpu_slots s ON s.id = b.slot_id JOIN leases l ON l.id = b.lease_id
            WHERE s.node_id = @nodeId AND NOT b.released AND upper(b.during) > @now AND l.status IN ('active', 'provisioning')
            ORDER BY b.lease_id
            """, new { nodeId, now = tx.Now }, tx.Transaction, cancellationToken: ct));
        foreach (var leaseId in leaseIds)
        {
            var lease = await LeaseLifecycle.LockAsync(tx, leaseId, ct);
            if (lease is { Status: "active" or "provisioning" })
                await Replacement.MoveOffNodeAsync(tx, lease, nodeId, at, reason, options, ct);
        }
    }
}
