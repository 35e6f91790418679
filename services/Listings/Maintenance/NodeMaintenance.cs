using Dapper;
using Marketplace.Contracts;
using Marketplace.Listings.Clusters;
using Marketplace.ServiceDefaults.Data;
using Marketplace.ServiceDefaults.Web;
using Microsoft.AspNetCore.Http.HttpResults;

namespace Marketplace.Listings.Maintenance;

public sealed record ScheduleMaintenanceRequest(DateTimeOffset? Start, DateTimeOffset? End, string? Reason);

/// <summary>
/// A provider's planned maintenance: the node's capacity is unavailable (Scheduling places nothing there, Billing bills
/// nothing) and the time counts neither for nor against its reliability.
/// </summary>
internal static class NodeMaintenance
{
    public static readonly TimeSpan MaxLength = TimeSpan.FromDays(31);

    public static void Map(IEndpointRouteBuilder app)
    {
        app.MapPost("/v1/clusters/{id:guid}/nodes/{nodeId:guid}/maintenance", ScheduleAsync).WithName("ScheduleMaintenance").WithTags("Clusters");
        app.MapDelete("/v1/clusters/{id:guid}/nodes/{nodeId:guid}/maintenance/{maintenanceId:guid}", CancelAsync)
            .WithName("CancelMaintenance").WithTags("Clusters");
    }

    private static async Task<Results<Created<MaintenanceResponse>, ValidationProblem, ProblemHttpResult>> ScheduleAsync(
        Guid id, Guid nodeId, ScheduleMaintenanceRequest request, Caller caller, Db db, TimeProvider time, CancellationToken ct)
    {
        if (!caller.Has(OrgRoles.Provider)) return Problems.Forbidden("Only provider organisations schedule maintenance.");

        var now = time.GetUtcNow().ToMicroseconds();
        var (start, end) = (request.Start?.ToMicroseconds(), request.End?.ToMicroseconds());
        var reason = request.Reason?.Trim();
        var v = new Validation()
            .Require(start is not null, "start", "is required (ISO-8601 UTC).")
            .Require(end is not null, "end", "is required (ISO-8601 UTC).")
            .Require(reason is not { Length: > 500 }, "reason", "must be at most 500 characters.");
        if (start is not null && end is not null)
            v.Require(end > start, "end", "must be after start.")
             .Require(end > now, "end", "must be in the future; maintenance that is over cannot be planned.")
             .Require(end - start <= MaxLength, "end", $"makes a window longer than {MaxLength.TotalDays} days; withdraw the node's offers instead.");

        await using var tx = await db.BeginAsync(ct);
        if (!await OwnNodeAsync(tx, id, nodeId, caller.OrgId, ct)) return Problems.NotFound("node", nodeId);
        if (v.Failed) return v.Problem;

        var overlap = await tx.Connection.QueryFirstOrDefaultAsync<Guid?>(new CommandDefinition("""
            SELECT id FROM node_maintenance WHERE node_id = @nodeId AND cancelled_at IS NULL AND during && tstzrange(@start, @end) LIMIT 1
            """, new { nodeId, start, end }, tx.Transaction, cancellationToken: ct));
        if (overlap is not null)
            return Problems.Conflict("maintenance-overlap", $"Node {nodeId} already has maintenance {overlap} overlapping this window; cancel it or extend that one.");

        var m = new MaintenanceResponse { Id = Guid.CreateVersion7(), NodeId = nodeId, Start = start!.Value, End = end!.Value, Reason = reason, CreatedAt = now };
        await tx.Connection.ExecuteAsync(new CommandDefinition("""
            INSERT INTO node_maintenance (id, node_id, during, reason, created_at) VALUES (@Id, @NodeId, tstzrange(@Start, @End), @Reason, @CreatedAt)
            """, m, tx.Transaction, cancellationToken: ct));
        await tx.PublishAsync(new NodeMaintenanceScheduled(m.Id, nodeId, caller.OrgId, m.Start, m.End, now), ct);
        await tx.CommitAsync(ct);
        return TypedResults.Created($"/v1/clusters/{id}/nodes/{nodeId}/maintenance/{m.Id}", m);
    }

    /// <summary>Cancelling twice answers the cancelled window again and publishes nothing more.</summary>
    private static async Task<Results<Ok<MaintenanceResponse>, ProblemHttpResult>> CancelAsync(
        Guid id, Guid nodeId, Guid maintenanceId, Caller caller, Db db, TimeProvider time, CancellationToken ct)
    {
        if (!caller.Has(OrgRoles.Provider)) return Problems.Forbidden("Only provider organisations cancel maintenance.");

        var now = time.GetUtcNow().ToMicroseconds();
        await using var tx = await db.BeginAsync(ct);
        if (!await OwnNodeAsync(tx, id, nodeId, caller.OrgId, ct)) return Problems.NotFound("node", nodeId);
        var m = await tx.Connection.QuerySingleOrDefaultAsync<MaintenanceResponse>(new CommandDefinition($"""
            SELECT {ClusterQueries.MaintenanceColumns} FROM node_maintenance m WHERE m.id = @maintenanceId AND m.node_id = @nodeId FOR UPDATE
            """, new { maintenanceId, nodeId }, tx.Transaction, cancellationToken: ct));
        if (m is null) return Problems.NotFound("maintenance window", maintenanceId);
        if (m.CancelledAt is not null) return TypedResults.Ok(m);
        if (m.End <= now) return Problems.Conflict("maintenance-over", $"Maintenance {maintenanceId} ended at {m.End:O}; there is nothing left to cancel.");

        await tx.Connection.ExecuteAsync(new CommandDefinition(
            "UPDATE node_maintenance SET cancelled_at = @now WHERE id = @maintenanceId", new { now, maintenanceId }, tx.Transaction, cancellationToken: ct));
        await tx.PublishAsync(new NodeMaintenanceCancelled(maintenanceId, nodeId, now), ct);
        await tx.CommitAsync(ct);
        return TypedResults.Ok(m with { CancelledAt = now });
    }

    // Locks the node so that two overlapping windows scheduled at once are decided one after the other.
    private static async Task<bool> OwnNodeAsync(Tx tx, Guid clusterId, Guid nodeId, Guid org, CancellationToken ct) =>
        await tx.Connection.QuerySingleOrDefaultAsync<Guid?>(new CommandDefinition("""
            SELECT n.id FROM nodes n JOIN clusters c ON c.id = n.cluster_id
            WHERE n.id = @nodeId AND n.cluster_id = @clusterId AND c.provider_org_id = @org FOR UPDATE OF n
            """, new { nodeId, clusterId, org }, tx.Transaction, cancellationToken: ct)) is not null;
}
