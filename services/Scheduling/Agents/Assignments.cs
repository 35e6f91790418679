using Dapper;
using MassTransit;
using Marketplace.Contracts;
using Marketplace.Scheduling.Domain;
using Marketplace.Scheduling.Leases;
using Marketplace.ServiceDefaults.Data;
using Marketplace.ServiceDefaults.Messaging;
using Marketplace.ServiceDefaults.Web;
using Microsoft.AspNetCore.Http.HttpResults;
using Microsoft.Extensions.Options;

namespace Marketplace.Scheduling.Agents;

public sealed record AssignmentSlot(Guid SlotId, int Index);

/// <summary>A start or stop instruction for one node's agent.</summary>
public sealed record AssignmentResponse(
    Guid Id, Guid LeaseId, Guid NodeId, string Action, string Status, IReadOnlyList<AssignmentSlot> Slots,
    string? SshPublicKey, string? ContainerImage, DateTimeOffset Start, DateTimeOffset End, DateTimeOffset CreatedAt, DateTimeOffset? AckedAt);

public sealed record AssignmentPage(IReadOnlyList<AssignmentResponse> Data, string? NextCursor);

public sealed record AckRequest(string? Status, string? Detail);

/// <summary>
/// Lease assignments for node agents (Scheduling:RequireAgentAck). At a lease's start each node gets a start instruction
/// with the renter's SSH key or container image; the lease is active once every agent acknowledged "running". An agent
/// that answers "failed", or none within Scheduling:ProvisioningTimeoutSeconds, makes the lease fail over to other
/// capacity in the same fabric (<see cref="Replacement"/>), or end as failed with cause provider.
/// </summary>
internal static class Assignments
{
    public static void MapAgentApi(this IEndpointRouteBuilder app)
    {
        var agent = app.MapGroup("/v1/agent/assignments").WithTags("Agent");
        agent.MapGet("/", ListAsync).WithName("ListAssignments");
        agent.MapPost("/{id}/ack", AckAsync).WithName("AckAssignment");
    }

    /// <summary>scheduled → provisioning: a start instruction per booked node and a deadline for the acknowledgements.</summary>
    public static async Task ProvisionAsync(Tx tx, LockedLease lease, SchedulingOptions options, CancellationToken ct)
    {
        await tx.Connection.ExecuteAsync(new CommandDefinition(
            "UPDATE leases SET status = 'provisioning' WHERE id = @Id", new { lease.Id }, tx.Transaction, cancellationToken: ct));
        var slots = await tx.Connection.QueryAsync<(Guid NodeId, Guid SlotId)>(new CommandDefinition("""
            SELECT s.node_id, s.id FROM bookings b JOIN gpu_slots s ON s.id = b.slot_id
            WHERE b.lease_id = @Id AND NOT b.released ORDER BY s.node_id, s.index
            """, new { lease.Id }, tx.Transaction, cancellationToken: ct));
        foreach (var node in slots.GroupBy(s => s.NodeId))
            await InsertAsync(tx, lease.Id, node.Key, "start", node.Select(s => s.SlotId).ToArray(), ct);
        await tx.ScheduleAsync(LeaseLifecycle.ProvisioningTimeout, lease.Id.ToString(), tx.Now.AddSeconds(options.ProvisioningTimeoutSeconds), ct);
    }

    /// <summary>The lease left <paramref name="oldNode"/>: its instruction is superseded, the new nodes get start instructions.</summary>
    public static async Task MoveAsync(Tx tx, LockedLease lease, Guid oldNode, IReadOnlyList<SlotState> newSlots, SchedulingOptions options, CancellationToken ct)
    {
        await tx.Connection.ExecuteAsync(new CommandDefinition("""
            UPDATE assignments SET status = 'superseded'
            WHERE lease_id = @Id AND node_id = @oldNode AND action = 'start' AND status IN ('pending', 'running')
            """, new { lease.Id, oldNode }, tx.Transaction, cancellationToken: ct));
        foreach (var node in newSlots.GroupBy(s => s.NodeId))
            await InsertAsync(tx, lease.Id, node.Key, "start", node.Select(s => s.SlotId).ToArray(), ct);
        await tx.ScheduleAsync(LeaseLifecycle.ProvisioningTimeout, lease.Id.ToString(), tx.Now.AddSeconds(options.ProvisioningTimeoutSeconds), ct);
    }

    /// <summary>The lease ended: pending start instructions are withdrawn, running ones get a stop instruction.</summary>
    public static async Task StopAllAsync(Tx tx, Guid leaseId, CancellationToken ct)
    {
        var rows = (await tx.Connection.QueryAsync<(Guid NodeId, Guid[] SlotIds)>(new CommandDefinition("""
            SELECT node_id, slot_ids FROM assignments WHERE lease_id = @leaseId AND action = 'start' AND status = 'running'
            """, new { leaseId }, tx.Transaction, cancellationToken: ct))).AsList();
        await tx.Connection.ExecuteAsync(new CommandDefinition("""
            UPDATE assignments SET status = 'superseded' WHERE lease_id = @leaseId AND status = 'pending'
            """, new { leaseId }, tx.Transaction, cancellationToken: ct));
        foreach (var (nodeId, slotIds) in rows)
            await InsertAsync(tx, leaseId, nodeId, "stop", slotIds, ct);
    }

    private static Task InsertAsync(Tx tx, Guid leaseId, Guid nodeId, string action, Guid[] slotIds, CancellationToken ct) =>
        tx.Connection.ExecuteAsync(new CommandDefinition("""
            INSERT INTO assignments (id, lease_id, node_id, action, slot_ids, status, created_at)
            VALUES (@id, @leaseId, @nodeId, @action, @slotIds, 'pending', @now)
            """, new { id = NewId.NextSequentialGuid(), leaseId, nodeId, action, slotIds, now = tx.Now }, tx.Transaction, cancellationToken: ct));

    internal static async Task<Results<Ok<AssignmentPage>, ProblemHttpResult>> ListAsync(Caller caller, Db db, CancellationToken ct)
    {
        await using var tx = await db.BeginAsync(ct);
        if (await CheckAgentAsync(tx, caller, ct) is { } problem) return problem;
        var rows = await tx.Connection.QueryAsync<AssignmentRow>(new CommandDefinition($"""
            SELECT {AssignmentRow.Columns} FROM assignments a JOIN leases l ON l.id = a.lease_id
            WHERE a.node_id = @node AND a.status = 'pending'
            ORDER BY a.created_at, a.id LIMIT 100
            """, new { node = caller.NodeId }, tx.Transaction, cancellationToken: ct));
        var page = new List<AssignmentResponse>();
        foreach (var r in rows) page.Add(await r.ToResponseAsync(tx, ct));
        return TypedResults.Ok(new AssignmentPage(page, null));
    }

    internal static async Task<Results<Ok<AssignmentResponse>, ValidationProblem, ProblemHttpResult>> AckAsync(
        Caller caller, Db db, IOptions<SchedulingOptions> options, string id, AckRequest? body, CancellationToken ct)
    {
        var v = new Validation();
        v.Require(Guid.TryParse(id, out var assignmentId), "id", $"'{id}' is not an assignment id; assignment ids are UUIDs.");
        v.Require(body?.Status is "running" or "failed" or "stopped", "status", "must be running or failed (a start instruction) or stopped (a stop instruction).");
        if (v.Failed) return v.Problem;
        return await db.RunAsync(tx => AckInAsync(tx, caller, options.Value, id, assignmentId, body!, ct), ct);
    }

    private static async Task<Results<Ok<AssignmentResponse>, ValidationProblem, ProblemHttpResult>> AckInAsync(
        Tx tx, Caller caller, SchedulingOptions options, string id, Guid assignmentId, AckRequest body, CancellationToken ct)
    {
        if (await CheckAgentAsync(tx, caller, ct) is { } problem) return problem;
        var leaseId = await tx.Connection.QuerySingleOrDefaultAsync<Guid?>(new CommandDefinition(
            "SELECT lease_id FROM assignments WHERE id = @assignmentId AND node_id = @node",
            new { assignmentId, node = caller.NodeId }, tx.Transaction, cancellationToken: ct));
        if (leaseId is null) return Problems.NotFound("assignment for this node", id);
        var lease = (await LeaseLifecycle.LockAsync(tx, leaseId.Value, ct))!;
        var row = await tx.Connection.QuerySingleAsync<AssignmentRow>(new CommandDefinition($"""
            SELECT {AssignmentRow.Columns} FROM assignments a JOIN leases l ON l.id = a.lease_id WHERE a.id = @assignmentId FOR UPDATE OF a
            """, new { assignmentId }, tx.Transaction, cancellationToken: ct));

        var status = body.Status!;
        if ((row.Action == "start") != (status is "running" or "failed"))
            return Problems.Invalid(new Dictionary<string, string[]>
            {
                ["status"] = [$"a {row.Action} instruction is acknowledged with {(row.Action == "start" ? "running or failed" : "stopped")}."],
            });
        if (row.Status == status) return TypedResults.Ok(await row.ToResponseAsync(tx, ct)); // a repeated acknowledgement
        if (row.Status != "pending")
            return Problems.Conflict("assignment-settled", $"Assignment {id} is already {row.Status}; it cannot become {status}.");

        await tx.Connection.ExecuteAsync(new CommandDefinition(
            "UPDATE assignments SET status = @status, acked_at = @now, ack_detail = @detail WHERE id = @assignmentId",
            new { status, now = tx.Now, detail = body.Detail, assignmentId }, tx.Transaction, cancellationToken: ct));
        if (row.Action == "start" && !lease.IsTerminal)
        {
            if (status == "failed")
                await Replacement.MoveOffNodeAsync(tx, lease, row.NodeId, tx.Now,
                    $"the agent of node {row.NodeId} could not start the lease ({body.Detail ?? "no detail"})", options, ct);
            else
                await AllRunningAsync(tx, lease, ct);
        }
        var response = await tx.Connection.QuerySingleAsync<AssignmentRow>(new CommandDefinition($"""
            SELECT {AssignmentRow.Columns} FROM assignments a JOIN leases l ON l.id = a.lease_id WHERE a.id = @assignmentId
            """, new { assignmentId }, tx.Transaction, cancellationToken: ct));
        var result = await response.ToResponseAsync(tx, ct);
        await tx.CommitAsync(ct);
        return TypedResults.Ok(result);
    }

    /// <summary>Every current start instruction runs: a provisioning lease starts, an interrupted one resumes.</summary>
    private static async Task AllRunningAsync(Tx tx, LockedLease lease, CancellationToken ct)
    {
        var pending = await tx.Connection.ExecuteScalarAsync<long>(new CommandDefinition(
            "SELECT count(*) FROM assignments WHERE lease_id = @Id AND action = 'start' AND status = 'pending'",
            new { lease.Id }, tx.Transaction, cancellationToken: ct));
        if (pending > 0) return;
        if (lease.Status == "provisioning")
        {
            await LeaseLifecycle.StartAsync(tx, lease, ct);
            return;
        }
        var resumed = await tx.Connection.ExecuteAsync(new CommandDefinition(
            "UPDATE lease_downtime SET end_at = @now WHERE lease_id = @Id AND end_at IS NULL",
            new { lease.Id, now = tx.Now }, tx.Transaction, cancellationToken: ct));
        await tx.CancelScheduledAsync(LeaseLifecycle.ProvisioningTimeout, lease.Id.ToString(), ct);
        if (resumed > 0) await tx.PublishAsync(new LeaseResumed(lease.Id, lease.OrderId, tx.Now), ct);
    }

    /// <summary>Only a node-scoped key of the org that owns the node may read or acknowledge its instructions.</summary>
    private static async Task<ProblemHttpResult?> CheckAgentAsync(Tx tx, Caller caller, CancellationToken ct)
    {
        if (caller.NodeId is not { } node)
            return Problems.Forbidden("Assignments are read and acknowledged by a node agent with a node-scoped API key.");
        var owner = await tx.Connection.QuerySingleOrDefaultAsync<Guid?>(new CommandDefinition(
            "SELECT provider_org_id FROM nodes WHERE id = @node", new { node }, tx.Transaction, cancellationToken: ct));
        return owner == caller.OrgId ? null : Problems.NotFound("node", node);
    }

    private sealed class AssignmentRow
    {
        public const string Columns = """
            a.id, a.lease_id, a.node_id, a.action, a.status, a.slot_ids, l.ssh_public_key, l.container_image,
            l.start_at, l.end_at, a.created_at, a.acked_at
            """;

        public Guid Id { get; init; }
        public Guid LeaseId { get; init; }
        public Guid NodeId { get; init; }
        public string Action { get; init; } = "";
        public string Status { get; init; } = "";
        public Guid[] SlotIds { get; init; } = [];
        public string? SshPublicKey { get; init; }
        public string? ContainerImage { get; init; }
        public DateTimeOffset StartAt { get; init; }
        public DateTimeOffset EndAt { get; init; }
        public DateTimeOffset CreatedAt { get; init; }
        public DateTimeOffset? AckedAt { get; init; }

        public async Task<AssignmentResponse> ToResponseAsync(Tx tx, CancellationToken ct)
        {
            var slots = await tx.Connection.QueryAsync<AssignmentSlot>(new CommandDefinition(
                "SELECT id AS slot_id, index FROM gpu_slots WHERE id = ANY(@SlotIds) ORDER BY index",
                new { SlotIds }, tx.Transaction, cancellationToken: ct));
            return new AssignmentResponse(Id, LeaseId, NodeId, Action, Status, slots.AsList(), SshPublicKey, ContainerImage,
                StartAt, EndAt, CreatedAt, AckedAt);
        }
    }
}

/// <summary>lease.provisioning-timeout: agents that did not acknowledge in time lose the lease's slots to other capacity.</summary>
internal sealed class ProvisioningTimeout(IOptions<SchedulingOptions> options) : IDueWorkHandler
{
    public string Kind => LeaseLifecycle.ProvisioningTimeout;

    public async Task HandleAsync(DueItem item, Tx tx, CancellationToken ct)
    {
        var lease = await LeaseLifecycle.LockForDueWorkAsync(tx, Guid.Parse(item.Key), ct);
        if (lease is not { Status: "provisioning" or "active" }) return;
        var deadline = tx.Now.AddSeconds(-options.Value.ProvisioningTimeoutSeconds);
        var silent = (await tx.Connection.QueryAsync<Guid>(new CommandDefinition("""
            UPDATE assignments SET status = 'failed', acked_at = @now,
                   ack_detail = 'not acknowledged within ' || @seconds || ' s'
            WHERE lease_id = @Id AND action = 'start' AND status = 'pending' AND created_at <= @deadline
            RETURNING node_id
            """, new { lease.Id, now = tx.Now, seconds = options.Value.ProvisioningTimeoutSeconds, deadline },
            tx.Transaction, cancellationToken: ct))).Distinct().Order().ToList();
        foreach (var node in silent)
        {
            var reason = $"the agent of node {node} did not acknowledge its start instruction within {options.Value.ProvisioningTimeoutSeconds} s";
            if (!await Replacement.MoveOffNodeAsync(tx, lease, node, tx.Now, reason, options.Value, ct)) return;
        }
    }
}
