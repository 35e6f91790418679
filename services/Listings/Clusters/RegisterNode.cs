using Dapper;
using Marketplace.Contracts;
using Marketplace.Listings.Accelerators;
using Marketplace.ServiceDefaults.Data;
using Marketplace.ServiceDefaults.Web;
using Microsoft.AspNetCore.Http.HttpResults;
using Microsoft.AspNetCore.Mvc;

namespace Marketplace.Listings.Clusters;

/// <param name="GpusPerNvlinkIsland">
/// How many accelerators share one NVLink island (e.g. 4 on a board of two 4-GPU islands); by default every accelerator of
/// a model with a scale-up link shares one island and PCIe-only models have none.
/// </param>
public sealed record RegisterNodeRequest(
    string? Hostname,
    string? AcceleratorModel,
    int? AcceleratorCount,
    int? CpuCores,
    int? RamGb,
    int? DiskGb,
    string? NvlinkDomain,
    int? GpusPerNvlinkIsland);

internal static class RegisterNode
{
    public const int MaxAcceleratorsPerNode = 16;

    public static void Map(IEndpointRouteBuilder app) =>
        app.MapPost("/v1/clusters/{id:guid}/nodes", HandleAsync).WithName("RegisterNode").WithTags("Clusters");

    /// <summary>With an Idempotency-Key (optional, recommended): the same key, cluster and body again answer 200 with the node (see <see cref="Idempotency"/>).</summary>
    private static async Task<Results<Created<NodeResponse>, Ok<NodeResponse>, ValidationProblem, ProblemHttpResult>> HandleAsync(
        Guid id, [FromHeader(Name = Idempotency.Header)] string? idempotencyKey,
        RegisterNodeRequest request, Caller caller, Db db, TimeProvider time, CancellationToken ct)
    {
        if (!caller.Has(OrgRoles.Provider)) return Problems.Forbidden("Only provider organisations register nodes.");
        if (Idempotency.Invalid(idempotencyKey, "node") is { } badKey) return badKey;

        // Host names are case-insensitive: "GPU-01" and "gpu-01" are one machine.
        var hostname = request.Hostname?.Trim().ToLowerInvariant();
        var count = request.AcceleratorCount;
        var v = new Validation()
            .Require(hostname is not null && Inputs.Hostname().IsMatch(hostname), "hostname",
                "is required: an RFC 1123 host name such as gpu-01.cn-east.example.com.")
            .Require(!string.IsNullOrWhiteSpace(request.AcceleratorModel), "accelerator_model", "is required; GET /v1/accelerators lists the models.")
            .Require(count is >= 1 and <= MaxAcceleratorsPerNode, "accelerator_count",
                $"is required and must be between 1 and {MaxAcceleratorsPerNode}.")
            .Require(request.CpuCores is null or (>= 1 and <= 4096), "cpu_cores", "must be between 1 and 4096.")
            .Require(request.RamGb is null or (>= 1 and <= 1048576), "ram_gb", "must be between 1 and 1048576 (GB).")
            .Require(request.DiskGb is null or (>= 1 and <= 10485760), "disk_gb", "must be between 1 and 10485760 (GB).")
            .Require(request.NvlinkDomain is null || (request.NvlinkDomain.Length <= 100 && Inputs.Hostname().IsMatch(request.NvlinkDomain)),
                "nvlink_domain", "must be a label of lower-case letters, digits, dashes and dots (e.g. rack-07), at most 100 characters.")
            .Require(request.GpusPerNvlinkIsland is null || (request.GpusPerNvlinkIsland >= 1 && count is >= 1 && count % request.GpusPerNvlinkIsland == 0),
                "gpus_per_nvlink_island", "must divide accelerator_count (e.g. 4 for two islands of 4 on an 8-accelerator node).");

        await using var tx = await db.BeginAsync(ct);
        // The cluster is part of the request: the same key and body sent to another cluster is another request.
        var requestHash = Idempotency.Hash(new { ClusterId = id, Request = request });
        if (await Idempotency.FindAsync(tx, caller.OrgId, Idempotency.Scope.Nodes, idempotencyKey, ct) is { } earlier)
        {
            if (earlier.RequestHash != requestHash) return Idempotency.Reused(idempotencyKey!, "node", earlier.ObjectId);
            return TypedResults.Ok((await ClusterQueries.NodesAsync(tx.Connection, id, earlier.ObjectId, time.GetUtcNow(), ct)).Single());
        }
        // Locked so that two nodes registered at once cannot both pass the hostname check.
        var cluster = await ClusterQueries.FindOwnAsync(tx.Connection, tx.Transaction, id, caller.OrgId, ct, forUpdate: true);
        if (cluster is null) return Problems.NotFound("cluster", id);

        Accelerator? model = null;
        if (!string.IsNullOrWhiteSpace(request.AcceleratorModel))
        {
            model = await ListAccelerators.FindAsync(tx.Connection, tx.Transaction, request.AcceleratorModel, ct);
            if (model is null) v.Add("accelerator_model", (await ListAccelerators.UnknownModelAsync(tx.Connection, tx.Transaction, request.AcceleratorModel, ct))!);
            else if (model.Retired) v.Add("accelerator_model", $"{model.Id} is retired from the catalog; new nodes cannot be registered with it.");
        }
        if (v.Failed) return v.Problem;

        var taken = await tx.Connection.ExecuteScalarAsync<bool>(new CommandDefinition(
            "SELECT EXISTS (SELECT 1 FROM nodes WHERE cluster_id = @id AND hostname = @hostname)",
            new { id, hostname }, tx.Transaction, cancellationToken: ct));
        if (taken)
            return Problems.Conflict("duplicate-hostname", $"Cluster {id} already has a node named {hostname}; host names are unique within a cluster.");

        var island = request.GpusPerNvlinkIsland ?? (model!.HasScaleUpLink ? count!.Value : (int?)null);
        var node = new NodeResponse
        {
            Id = Guid.CreateVersion7(),
            ClusterId = id,
            Hostname = hostname!,
            AcceleratorModel = model!.Id,
            AcceleratorCount = count!.Value,
            GpuMemoryGb = model.MemoryGb,
            CpuCores = request.CpuCores,
            RamGb = request.RamGb,
            DiskGb = request.DiskGb,
            NvlinkDomain = request.NvlinkDomain,
            CreatedAt = time.GetUtcNow().ToMicroseconds(),
        };
        node = node with { Slots = Enumerable.Range(0, node.AcceleratorCount).Select(i => new SlotResponse(Guid.CreateVersion7(), i, i / island)).ToList() };

        await tx.Connection.ExecuteAsync(new CommandDefinition("""
            INSERT INTO nodes (id, cluster_id, hostname, accelerator_model, accelerator_count, gpu_memory_gb, cpu_cores, ram_gb, disk_gb,
                               nvlink_domain, created_at)
            VALUES (@Id, @ClusterId, @Hostname, @AcceleratorModel, @AcceleratorCount, @GpuMemoryGb, @CpuCores, @RamGb, @DiskGb,
                    @NvlinkDomain, @CreatedAt)
            """, node, tx.Transaction, cancellationToken: ct));
        await tx.Connection.ExecuteAsync(new CommandDefinition("""
            INSERT INTO gpu_slots (id, node_id, index, nvlink_island) SELECT unnest(@ids), @nodeId, unnest(@indexes), unnest(@islands)
            """, new
            {
                ids = node.Slots.Select(s => s.Id).ToArray(), nodeId = node.Id, indexes = node.Slots.Select(s => s.Index).ToArray(),
                islands = node.Slots.Select(s => s.NvlinkIsland).ToArray(),
            }, tx.Transaction, cancellationToken: ct));
        await tx.PublishAsync(new NodeRegistered(node.Id, cluster.Id, cluster.ProviderOrgId, cluster.Region, cluster.Jurisdiction,
            node.AcceleratorModel, node.Slots.Select(s => new GpuSlotInfo(s.Id, s.Index)).ToList(), node.CreatedAt)
        {
            NvlinkDomain = node.NvlinkDomain,
            Fabric = cluster.Fabric,
            FabricGbps = cluster.FabricGbps,
        }, ct);
        await Idempotency.RememberAsync(tx, caller.OrgId, Idempotency.Scope.Nodes, idempotencyKey, requestHash, node.Id, ct);
        await tx.CommitAsync(ct);
        return TypedResults.Created($"/v1/clusters/{id}/nodes/{node.Id}", node);
    }
}
