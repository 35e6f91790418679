using Dapper;
using Npgsql;

namespace Marketplace.Listings.Clusters;

// Response shapes double as Dapper rows (init properties), so each read has one type.

public sealed record ClusterResponse
{
    public Guid Id { get; init; }
    public Guid ProviderOrgId { get; init; }
    public required string Name { get; init; }
    public required string Region { get; init; }
    public required string Jurisdiction { get; init; }
    public DateTimeOffset CreatedAt { get; init; }
    /// <summary>Empty on creation; GET /v1/clusters/{id} fills it.</summary>
    public IReadOnlyList<NodeResponse> Nodes { get; init; } = [];
}

public sealed record NodeResponse
{
    public Guid Id { get; init; }
    public Guid ClusterId { get; init; }
    public required string Hostname { get; init; }
    public required string AcceleratorModel { get; init; }
    public int AcceleratorCount { get; init; }
    public IReadOnlyList<SlotResponse> Slots { get; init; } = [];
    public DateTimeOffset CreatedAt { get; init; }
}

public sealed record SlotResponse(Guid Id, int Index);

internal static class ClusterQueries
{
    /// <summary>The caller's cluster, or null if it does not exist or belongs to another org (both are a 404).</summary>
    public static Task<ClusterResponse?> FindOwnAsync(NpgsqlConnection connection, NpgsqlTransaction? tx, Guid id, Guid org,
        CancellationToken ct, bool forUpdate = false) =>
        connection.QuerySingleOrDefaultAsync<ClusterResponse>(new CommandDefinition($"""
            SELECT id, provider_org_id, name, region, jurisdiction, created_at
            FROM clusters WHERE id = @id AND provider_org_id = @org {(forUpdate ? "FOR UPDATE" : "")}
            """, new { id, org }, tx, cancellationToken: ct));
}
