using Marketplace.ServiceDefaults.Web;
using Microsoft.AspNetCore.Http.HttpResults;
using Npgsql;

namespace Marketplace.Listings.Clusters;

internal static class GetCluster
{
    public static void Map(IEndpointRouteBuilder app)
    {
        app.MapGet("/v1/clusters/{id:guid}", HandleAsync).WithName("GetCluster").WithTags("Clusters");
        app.MapGet("/v1/clusters/{id:guid}/nodes/{nodeId:guid}", GetNodeAsync).WithName("GetNode").WithTags("Clusters");
    }

    private static async Task<Results<Ok<ClusterResponse>, ProblemHttpResult>> HandleAsync(
        Guid id, Caller caller, NpgsqlDataSource dataSource, TimeProvider time, CancellationToken ct)
    {
        if (!caller.Has(OrgRoles.Provider)) return Problems.Forbidden("Only provider organisations read clusters.");

        await using var connection = await dataSource.OpenConnectionAsync(ct);
        var cluster = await ClusterQueries.FindOwnAsync(connection, null, id, caller.OrgId, ct);
        if (cluster is null) return Problems.NotFound("cluster", id);

        var nodes = await ClusterQueries.NodesAsync(connection, id, null, time.GetUtcNow(), ct);
        return TypedResults.Ok(cluster with
        {
            Compliance = await ClusterQueries.AttestationsAsync(connection, id, ct),
            NodeCount = nodes.Count,
            Nodes = nodes,
        });
    }

    private static async Task<Results<Ok<NodeResponse>, ProblemHttpResult>> GetNodeAsync(
        Guid id, Guid nodeId, Caller caller, NpgsqlDataSource dataSource, TimeProvider time, CancellationToken ct)
    {
        if (!caller.Has(OrgRoles.Provider)) return Problems.Forbidden("Only provider organisations read nodes.");

        await using var connection = await dataSource.OpenConnectionAsync(ct);
        if (await ClusterQueries.FindOwnAsync(connection, null, id, caller.OrgId, ct) is null) return Problems.NotFound("cluster", id);
        var node = (await ClusterQueries.NodesAsync(connection, id, nodeId, time.GetUtcNow(), ct)).SingleOrDefault();
        return node is null ? Problems.NotFound("node", nodeId) : TypedResults.Ok(node);
    }
}
