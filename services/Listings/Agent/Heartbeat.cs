using System.Text.Json;
using Dapper;
using Marketplace.Listings.Clusters;
using Marketplace.Listings.Health;
using Marketplace.ServiceDefaults.Data;
using Marketplace.ServiceDefaults.Web;
using Microsoft.AspNetCore.Http.HttpResults;
using Microsoft.Extensions.Options;

namespace Marketplace.Listings.Agent;

public sealed record InventoryInput(string? AcceleratorModel, int? AcceleratorCount, int? GpuMemoryGb, int? CpuCores, int? RamGb, int? DiskGb);

/// <param name="Healthy">The agent's own verdict (its health checks); true when left out.</param>
/// <param name="Message">Why the agent thinks the node is unhealthy, if it does.</param>
public sealed record HeartbeatRequest(InventoryInput? Inventory, bool? Healthy, string? Message);

/// <param name="NextHeartbeatBy">The node is marked unhealthy if no heartbeat arrives by then.</param>
/// <param name="StatusReason">health_reason and verification_reason in one sentence.</param>
public sealed record HeartbeatResponse(Guid NodeId, string Health, bool Verified, string? StatusReason, DateTimeOffset LastHeartbeatAt,
    DateTimeOffset NextHeartbeatBy)
{
    public string? HealthReason { get; init; }
    public string? VerificationReason { get; init; }
}

/// <summary>
/// A node's agent reports what it sees. Called with the node-scoped key of that node only: the gateway vouches for the
/// key's node, this service checks that the node belongs to the key's org (another org's node is a 404, like any other object).
/// </summary>
internal static class Heartbeat
{
    public static void Map(IEndpointRouteBuilder app) =>
        app.MapPost("/v1/agent/heartbeats", HandleAsync).WithName("Heartbeat").WithTags("Agent");

    private sealed record DeclaredRow(string AcceleratorModel, int AcceleratorCount, int GpuMemoryGb, int? CpuCores, int? RamGb, int? DiskGb);

    private static async Task<Results<Ok<HeartbeatResponse>, ValidationProblem, ProblemHttpResult>> HandleAsync(
        HeartbeatRequest request, Caller caller, Db db, TimeProvider time, IOptions<ListingsOptions> options, CancellationToken ct)
    {
        if (caller.NodeId is not { } nodeId || !caller.Has(OrgRoles.Provider))
            return Problems.Forbidden("Heartbeats come from a node's agent with that node's key (POST /v1/orgs/{org_id}/api-keys with node_id).");

        var inv = request.Inventory;
        var v = new Validation()
            .Require(inv is not null, "inventory", "is required: what the agent sees (accelerator_model, accelerator_count, gpu_memory_gb, ...).");
        if (inv is not null)
            v.Require(!string.IsNullOrWhiteSpace(inv.AcceleratorModel) && inv.AcceleratorModel.Length <= 100, "inventory.accelerator_model",
                    "is required: the catalog id of the accelerators the agent sees (GET /v1/accelerators), e.g. h100-sxm.")
             .Require(inv.AcceleratorCount is >= 0 and <= 64, "inventory.accelerator_count", "is required: how many accelerators the agent sees, 0 to 64.")
             .Require(inv.GpuMemoryGb is >= 0 and <= 100_000, "inventory.gpu_memory_gb", "is required: memory per accelerator in GB.")
             .Require(inv.CpuCores is null or >= 0, "inventory.cpu_cores", "must be 0 or more.")
             .Require(inv.RamGb is null or >= 0, "inventory.ram_gb", "must be 0 or more.")
             .Require(inv.DiskGb is null or >= 0, "inventory.disk_gb", "must be 0 or more.");
        v.Require(request.Message is not { Length: > 500 }, "message", "must be at most 500 characters.");
        if (v.Failed) return v.Problem;

        var now = time.GetUtcNow().ToMicroseconds();
        await using var tx = await db.BeginAsync(ct);
        var node = await tx.Connection.QuerySingleOrDefaultAsync<NodeState>(new CommandDefinition(
            HealthTransitions.SelectForUpdate + " WHERE n.id = @nodeId AND c.provider_org_id = @org FOR UPDATE OF n",
            new { nodeId, org = caller.OrgId }, tx.Transaction, cancellationToken: ct));
        if (node is null) return Problems.NotFound("node", nodeId);
        var declared = await tx.Connection.QuerySingleAsync<DeclaredRow>(new CommandDefinition(
            "SELECT accelerator_model, accelerator_count, gpu_memory_gb, cpu_cores, ram_gb, disk_gb FROM nodes WHERE id = @nodeId",
            new { nodeId }, tx.Transaction, cancellationToken: ct));

        var observed = new Inventory(inv!.AcceleratorModel!, inv.AcceleratorCount!.Value, inv.GpuMemoryGb!.Value, inv.CpuCores, inv.RamGb, inv.DiskGb);
        var differences = InventoryCheck.Differences(
            new Inventory(declared.AcceleratorModel, declared.AcceleratorCount, declared.GpuMemoryGb, declared.CpuCores, declared.RamGb, declared.DiskGb),
            observed);
        var healthy = request.Healthy ?? true;
        var healthReason = healthy ? null
            : "the agent reports the node unhealthy" + (string.IsNullOrWhiteSpace(request.Message) ? "" : ": " + request.Message.Trim());
        var verificationReason = differences.Count == 0 ? null : "observed inventory differs from the declared one: " + string.Join("; ", differences);
        var health = healthy ? NodeHealth.Healthy : NodeHealth.Unhealthy;

        var transition = await HealthTransitions.ApplyAsync(tx, node, health, healthReason, differences.Count == 0, verificationReason, now, ct);
        // A heartbeat that changes neither the node's health nor its verification (nearly all of them: 27 a second for the
        // load driver's 133 nodes; at most the last sign of life and the reasons' text) need not wait for the WAL flush:
        // if it were lost in a crash, the agent's next heartbeat, seconds later, says the same. One that changes the node's
        // health or verification (and publishes NodeHealthChanged) waits, like every other commit.
        await tx.Connection.ExecuteAsync(new CommandDefinition($"""
            UPDATE nodes SET last_heartbeat_at = @now, observed = @observed::jsonb WHERE id = @nodeId;
            {(transition ? "" : "SET LOCAL synchronous_commit = off;")}
            """, new { now, nodeId, observed = JsonSerializer.Serialize(observed) }, tx.Transaction, cancellationToken: ct));
        await tx.CommitAsync(ct);
        return TypedResults.Ok(new HeartbeatResponse(nodeId, health, differences.Count == 0, NodeHealth.StatusReason(healthReason, verificationReason),
            now, now.AddSeconds(options.Value.HeartbeatTimeoutSeconds)) { HealthReason = healthReason, VerificationReason = verificationReason });
    }
}
