using Dapper;
using Marketplace.Contracts;
using Marketplace.Listings.Accelerators;
using Marketplace.ServiceDefaults.Data;
using Marketplace.ServiceDefaults.Web;
using Microsoft.AspNetCore.Http.HttpResults;

namespace Marketplace.Listings.Clusters;

public sealed record RegisterNodeRequest(string? Hostname, string? AcceleratorModel, int? AcceleratorCount);

internal static class RegisterNode
{
    public const int MaxAcceleratorsPerNode = 16;

    public static void Map(IEndpointRouteBuilder app) =>
        app.MapPost("/v1/clusters/{id:guid}/nodes", HandleAsync).WithName("RegisterNode").WithTags("Clusters");

    private static async Task<Results<Created<NodeResponse>, ValidationProblem, ProblemHttpResult>> HandleAsync(
        Guid id, RegisterNodeRequest request, Caller caller, Db db, TimeProvider time, CancellationToken ct)
    {
        if (!caller.Has(OrgRoles.Provider)) return Problems.Forbidden("Only provider organisations register nodes.");

        // Host names are case-insensitive: "GPU-01" and "gpu-01" are one machine.
        var hostname = request.Hostname?.Trim().ToLowerInvariant();
        var v = new Validation()
            .Require(hostname is not null && Inputs.Hostname().IsMatch(hostname), "hostname",
                "is required: an RFC 1123 host name such as gpu-01.cn-east.example.com.")
            .Require(!string.IsNullOrWhiteSpace(request.AcceleratorModel), "accelerator_model", "is required; GET /v1/accelerators lists the models.")
            .Require(request.AcceleratorCount is >= 1 and <= MaxAcceleratorsPerNode, "accelerator_count",
                $"is required and must be between 1 and {MaxAcceleratorsPerNode}.");

        await using var tx = await db.BeginAsync(ct);
        // Locked so that two nodes registered at once cannot both pass the hostname check.
        var cluster = await ClusterQueries.FindOwnAsync(tx.Connection, tx.Transaction, id, caller.OrgId, ct, forUpdate: true);
        if (cluster is null) return Problems.NotFound("cluster", id);

        if (!string.IsNullOrWhiteSpace(request.AcceleratorModel)
            && await ListAccelerators.UnknownModelAsync(tx.Connection, tx.Transaction, request.AcceleratorModel, ct) is { } unknown)
            v.Add("accelerator_model", unknown);
        if (v.Failed) return v.Problem;

        var taken = await tx.Connection.ExecuteScalarAsync<bool>(new CommandDefinition(
            "SELECT EXISTS (SELECT 1 FROM nodes WHERE cluster_id = @id AND hostname = @hostname)",
            new { id, hostname }, tx.Transaction, cancellationToken: ct));
        if (taken)
            return Problems.Conflict("duplicate-hostname", $"Cluster {id} already has a node named {hostname}; host names are unique within a cluster.");

        var node = new NodeResponse
        {
            Id = Guid.CreateVersion7(),
            ClusterId = id,
            Hostname = hostname!,
            AcceleratorModel = request.AcceleratorModel!,
            AcceleratorCount = request.AcceleratorCount!.Value,
            CreatedAt = time.GetUtcNow().ToMicroseconds(),
        };
        node = node with { Slots = Enumerable.Range(0, node.AcceleratorCount).Select(i => new SlotResponse(Guid.CreateVersion7(), i)).ToList() };

        await tx.Connection.ExecuteAsync(new CommandDefinition("""
            INSERT INTO nodes (id, cluster_id, hostname, accelerator_model, accelerator_count, created_at)
            VALUES (@Id, @ClusterId, @Hostname, @AcceleratorModel, @AcceleratorCount, @CreatedAt)
            """, node, tx.Transaction, cancellationToken: ct));
        await tx.Connection.ExecuteAsync(new CommandDefinition("""
            INSERT INTO gpu_slots (id, node_id, index) SELECT unnest(@ids), @nodeId, unnest(@indexes)
            """, new { ids = node.Slots.Select(s => s.Id).ToArray(), nodeId = node.Id, indexes = node.Slots.Select(s => s.Index).ToArray() },
            tx.Transaction, cancellationToken: ct));
        await tx.PublishAsync(new NodeRegistered(node.Id, cluster.Id, cluster.ProviderOrgId, cluster.Region, cluster.Jurisdiction,
            node.AcceleratorModel, node.Slots.Select(s => new GpuSlotInfo(s.Id, s.Index)).ToList(), node.CreatedAt), ct);
        await tx.CommitAsync(ct);
        return TypedResults.Created($"/v1/clusters/{id}/nodes/{node.Id}", node);
    }
}
