using Dapper;
using Marketplace.ServiceDefaults.Web;
using Microsoft.AspNetCore.Http.HttpResults;
using Microsoft.AspNetCore.Mvc;
using Npgsql;

namespace Marketplace.Listings.Clusters;

public sealed record ClusterList(IReadOnlyList<ClusterResponse> Data, string? NextCursor);

public sealed record NodeList(IReadOnlyList<NodeResponse> Data, string? NextCursor);

/// <summary>A provider's own clusters (newest first) and the nodes of one (in registration order), a page at a time.</summary>
internal static class ListClusters
{
    private const string ClustersCursor = "clusters";
    private const string NodesCursor = "nodes";

    public static void Map(IEndpointRouteBuilder app)
    {
        app.MapGet("/v1/clusters", ListAsync).WithName("ListClusters").WithTags("Clusters");
        app.MapGet("/v1/clusters/{id:guid}/nodes", ListNodesAsync).WithName("ListNodes").WithTags("Clusters");
    }

    /// <summary>Each cluster with its compliance, reliability and node_count; nodes are paged by GET /v1/clusters/{id}/nodes.</summary>
    private static async Task<Results<Ok<ClusterList>, ValidationProblem, ProblemHttpResult>> ListAsync(
        [FromQuery(Name = "cursor")] string? cursorText, [FromQuery(Name = "limit")] int? limit, Caller caller, NpgsqlDataSource dataSource,
        CancellationToken ct)
    {
        if (!caller.Has(OrgRoles.Provider)) return Problems.Forbidden("Only provider organisations list clusters.");
        var (cursor, take, v) = Page(cursorText, limit, ClustersCursor);
        if (v.Failed) return v.Problem;

        await using var connection = await dataSource.OpenConnectionAsync(ct);
        var rows = (await connection.QueryAsync<ClusterResponse>(new CommandDefinition($"""
            SELECT {ClusterQueries.Columns}, (SELECT count(*) FROM nodes n WHERE n.cluster_id = c.id)::int AS node_count
            FROM clusters c
            WHERE provider_org_id = @org AND (@afterAt::timestamptz IS NULL OR (created_at, id) < (@afterAt, @afterId))
            ORDER BY created_at DESC, id DESC LIMIT @take
            """, new { org = caller.OrgId, afterAt = At(cursor), afterId = cursor?.Id, take = take + 1 }, cancellationToken: ct))).AsList();
        var next = NextCursor(rows, take, ClustersCursor, c => (c.CreatedAt, c.Id));

        var compliance = (await connection.QueryAsync<(Guid ClusterId, string Kind, int? Level, string EvidenceRef, DateTimeOffset ExpiresAt)>(
            new CommandDefinition("""
                SELECT cluster_id, kind, level, evidence_ref, expires_at FROM cluster_attestations WHERE cluster_id = ANY(@ids) ORDER BY kind
                """, new { ids = rows.Select(c => c.Id).ToArray() }, cancellationToken: ct)))
            .ToLookup(a => a.ClusterId, a => new AttestationResponse { Kind = a.Kind, Level = a.Level, EvidenceRef = a.EvidenceRef, ExpiresAt = a.ExpiresAt });
        return TypedResults.Ok(new ClusterList(rows.Select(c => c with { Compliance = compliance[c.Id].ToList(), Nodes = null }).ToList(), next));
    }

    private static async Task<Results<Ok<NodeList>, ValidationProblem, ProblemHttpResult>> ListNodesAsync(
        Guid id, [FromQuery(Name = "cursor")] string? cursorText, [FromQuery(Name = "limit")] int? limit, Caller caller,
        NpgsqlDataSource dataSource, TimeProvider time, CancellationToken ct)
    {
        if (!caller.Has(OrgRoles.Provider)) return Problems.Forbidden("Only provider organisations read nodes.");
        var (cursor, take, v) = Page(cursorText, limit, NodesCursor);

        await using var connection = await dataSource.OpenConnectionAsync(ct);
        if (await ClusterQueries.FindOwnAsync(connection, null, id, caller.OrgId, ct) is null) return Problems.NotFound("cluster", id);
        if (v.Failed) return v.Problem;

        var rows = await ClusterQueries.NodesAsync(connection, id, null, time.GetUtcNow(), ct,
            after: cursor is null ? null : (At(cursor)!.Value, cursor.Id), limit: take + 1);
        return TypedResults.Ok(new NodeList(rows, NextCursor(rows, take, NodesCursor, n => (n.CreatedAt, n.Id))));
    }

    private static (Cursor? Cursor, int Take, Validation V) Page(string? cursorText, int? limit, string kind)
    {
        var cursor = cursorText is null ? null : Cursor.Decode(cursorText);
        var v = new Validation()
            .Require(cursorText is null || (cursor is not null && cursor.Kind == kind && cursor.Key >= 0), "cursor",
                "is not a cursor of this listing; pass next_cursor from the previous page.")
            .Require(limit is null or (>= 1 and <= Cursor.MaxLimit), "limit", $"must be between 1 and {Cursor.MaxLimit}.");
        return (cursor, limit ?? Cursor.DefaultLimit, v);
    }

    private static DateTimeOffset? At(Cursor? c) => c is null ? null : new DateTimeOffset(c.Key, TimeSpan.Zero);

    /// <summary>Drops the look-ahead row and returns the cursor after the last kept one, or null on the last page.</summary>
    private static string? NextCursor<T>(List<T> rows, int take, string kind, Func<T, (DateTimeOffset CreatedAt, Guid Id)> key)
    {
        if (rows.Count <= take) return null;
        rows.RemoveAt(take);
        var (at, id) = key(rows[^1]);
        return new Cursor(kind, at.UtcTicks, id).Encode();
    }
}
