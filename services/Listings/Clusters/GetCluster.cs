using Dapper;
using Marketplace.ServiceDefaults.Web;
using Microsoft.AspNetCore.Http.HttpResults;
using Npgsql;

namespace Marketplace.Listings.Clusters;

internal static class GetCluster
{
    public static void Map(IEndpointRouteBuilder app) =>
        app.MapGet("/v1/clusters/{id:guid}", HandleAsync).WithName("GetCluster").WithTags("Clusters");

    private static async Task<Results<Ok<ClusterResponse>, ProblemHttpResult>> HandleAsync(
        Guid id, Caller caller, NpgsqlDataSource dataSource, CancellationToken ct)
    {
        if (!caller.Has(OrgRoles.Provider)) return Problems.Forbidden("Only provider organisations read clusters.");

        await using var connection = await dataSource.OpenConnectionAsync(ct);
        var cluster = await ClusterQueries.FindOwnAsync(connection, null, id, caller.OrgId, ct);
        if (cluster is null) return Problems.NotFound("cluster", id);

        var nodes = (await connection.QueryAsync<NodeResponse>(new CommandDefinition("""
            SELECT id, cluster_id, hostname, accelerator_model, accelerator_count, created_at
            FROM nodes WHERE cluster_id = @id ORDER BY created_at, id
            """, new { id }, cancellationToken: ct))).AsList();
        var slots = (await connection.QueryAsync<(Guid NodeId, Guid Id, int Index)>(new CommandDefinition("""
            SELECT s.node_id, s.id, s.index FROM gpu_slots s JOIN nodes n ON n.id = s.node_id
            WHERE n.cluster_id = @id ORDER BY s.node_id, s.index
            """, new { id }, cancellationToken: ct))).ToLookup(s => s.NodeId, s => new SlotResponse(s.Id, s.Index));

        return TypedResults.Ok(cluster with { Nodes = nodes.Select(n => n with { Slots = slots[n.Id].ToList() }).ToList() });
    }
}
