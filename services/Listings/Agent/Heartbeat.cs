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

    /// <summary>The node as it stands after the heartbeat's update: its health, verification and declared inventory.</summary>
    private sealed record HeartbeatNode(Guid Id, Guid ClusterId, Guid ProviderOrgId, string Health, bool Verified, string? HealthReason,
        string? VerificationReason, string AcceleratorModel, int AcceleratorCount, int GpuMemoryGb, int? CpuCores, int? RamGb, int? DiskGb,
        DateTimeOffset LastHeartbeatAt);

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
        var observed = new Inventory(inv!.AcceleratorModel!, inv.AcceleratorCount!.Value, inv.GpuMemoryGb!.Value, inv.CpuCores, inv.RamGb, inv.DiskGb);
        await using var tx = await db.BeginAsync(ct);
        // One round trip records the sign of life and reads the node as it stands, locked until the commit (the health
        // monitor and the provider's maintenance wait for it). A heartbeat that changes neither the node's health nor its
        // verification (nearly all of them: 27 a second for the load driver's 133 nodes; at most the reasons' text) need
        // not wait for the WAL flush: if it were lost in a crash, the agent's next heartbeat, seconds later, says the same.
        var node = await tx.Connection.QuerySingleOrDefaultAsync<HeartbeatNode>(new CommandDefinition("""
            SET LOCAL synchronous_commit = off;
            UPDATE nodes n SET last_heartbeat_at = greatest(n.last_heartbeat_at, @now),
                observed = CASE WHEN n.last_heartbeat_at > @now THEN n.observed ELSE @observed::jsonb END
            FROM clusters c
            WHERE n.id = @nodeId AND c.id = n.cluster_id AND c.provider_org_id = @org
            RETURNING n.id, n.cluster_id, c.provider_org_id, n.health, n.verified, n.health_reason, n.verification_reason,
                      n.accelerator_model, n.accelerator_count, n.gpu_memory_gb, n.cpu_cores, n.ram_gb, n.disk_gb, n.last_heartbeat_at
            """, new { nodeId, org = caller.OrgId, now, observed = JsonSerializer.Serialize(observed) }, tx.Transaction, cancellationToken: ct));
        if (node is null) return Problems.NotFound("node", nodeId);
        // A report older than the last one applied (it waited for a connection or the node's lock while a later one went
        // through, or another instance's clock is ahead) is news no more: it changes nothing, and the answer is the node as it stands.
        if (node.LastHeartbeatAt > now)
            return TypedResults.Ok(new HeartbeatResponse(nodeId, node.Health, node.Verified, NodeHealth.StatusReason(node.HealthReason, node.VerificationReason),
                node.LastHeartbeatAt, node.LastHeartbeatAt.AddSeconds(options.Value.HeartbeatTimeoutSeconds))
            {
                HealthReason = node.HealthReason, VerificationReason = node.VerificationReason,
            });

        var differences = InventoryCheck.Differences(
            new Inventory(node.AcceleratorModel, node.AcceleratorCount, node.GpuMemoryGb, node.CpuCores, node.RamGb, node.DiskGb), observed);
        var healthy = request.Healthy ?? true;
        var healthReason = healthy ? null
            : "the agent reports the node unhealthy" + (string.IsNullOrWhiteSpace(request.Message) ? "" : ": " + request.Message.Trim());
        var verificationReason = differences.Count == 0 ? null : "observed inventory differs from the declared one: " + string.Join("; ", differences);
        var health = healthy ? NodeHealth.Healthy : NodeHealth.Unhealthy;

        var state = new NodeState
        {
            Id = node.Id, ClusterId = node.ClusterId, ProviderOrgId = node.ProviderOrgId, Health = node.Health, Verified = node.Verified,
            HealthReason = node.HealthReason, VerificationReason = node.VerificationReason, LastHeartbeatAt = now,
        };
        // One that changes the node's health or verification (and publishes NodeHealthChanged) waits for the flush, like
        // every other commit.
        if (await HealthTransitions.ApplyAsync(tx, state, health, healthReason, differences.Count == 0, verificationReason, now, ct))
            await tx.Connection.ExecuteAsync(new CommandDefinition("SET LOCAL synchronous_commit = on", transaction: tx.Transaction, cancellationToken: ct));
        await tx.CommitAsync(ct);
        return TypedResults.Ok(new HeartbeatResponse(nodeId, health, differences.Count == 0, NodeHealth.StatusReason(healthReason, verificationReason),
            now, now.AddSeconds(options.Value.HeartbeatTimeoutSeconds)) { HealthReason = healthReason, VerificationReason = verificationReason });
    }
}
