using System.Text.Json.Serialization;
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
    /// <summary>The scale-out network between nodes: infiniband, roce or ethernet, and its bandwidth per node.</summary>
    public string Fabric { get; init; } = Fabrics.Ethernet;
    public int FabricGbps { get; init; }
    public int? DatacenterTier { get; init; }
    public IReadOnlyList<AttestationResponse> Compliance { get; init; } = [];
    [JsonIgnore] public int? ReliabilityPpm { get; init; }
    /// <summary>Healthy node-time / observed node-time over the rolling 30 days; null until a node has reported.</summary>
    public decimal? Reliability => Reliabilities.FromPpm(ReliabilityPpm);
    public DateTimeOffset CreatedAt { get; init; }
    public int NodeCount { get; init; }
    /// <summary>Empty on creation; GET /v1/clusters/{id} fills it; null in the list of clusters (GET /v1/clusters/{id}/nodes pages them).</summary>
    public IReadOnlyList<NodeResponse>? Nodes { get; init; } = [];
}

/// <summary>A compliance attestation; it counts (in search) only until it expires.</summary>
public sealed record AttestationResponse
{
    public required string Kind { get; init; }
    public int? Level { get; init; }
    public required string EvidenceRef { get; init; }
    public DateTimeOffset ExpiresAt { get; init; }
}

public sealed record NodeResponse
{
    public Guid Id { get; init; }
    public Guid ClusterId { get; init; }
    public required string Hostname { get; init; }
    public required string AcceleratorModel { get; init; }
    public int AcceleratorCount { get; init; }
    public int GpuMemoryGb { get; init; }
    public int? CpuCores { get; init; }
    public int? RamGb { get; init; }
    public int? DiskGb { get; init; }
    public string? NvlinkDomain { get; init; }
    public IReadOnlyList<SlotResponse> Slots { get; init; } = [];
    /// <summary>unknown (no heartbeat yet), healthy or unhealthy.</summary>
    public string Health { get; init; } = NodeHealth.Unknown;
    /// <summary>True while the agent's observed inventory equals the declared one.</summary>
    public bool Verified { get; init; }
    /// <summary>Why the node is unhealthy (the agent's verdict, or its silence); null while healthy.</summary>
    public string? HealthReason { get; init; }
    /// <summary>Why the node is unverified (how the observed inventory differs from the declared one); null while verified.</summary>
    public string? VerificationReason { get; init; }
    /// <summary>Both reasons in one sentence, health first.</summary>
    public string? StatusReason => NodeHealth.StatusReason(HealthReason, VerificationReason);
    public DateTimeOffset? LastHeartbeatAt { get; init; }
    [JsonIgnore] public int? ReliabilityPpm { get; init; }
    public decimal? Reliability => Reliabilities.FromPpm(ReliabilityPpm);
    /// <summary>Maintenance windows not yet over and not cancelled.</summary>
    public IReadOnlyList<MaintenanceResponse> Maintenance { get; init; } = [];
    public DateTimeOffset CreatedAt { get; init; }
}

/// <param name="NvlinkIsland">Slots of a node with the same island share NVLink (or the vendor's equivalent); null: PCIe only.</param>
public sealed record SlotResponse(Guid Id, int Index, int? NvlinkIsland = null);

public sealed record MaintenanceResponse
{
    public Guid Id { get; init; }
    public Guid NodeId { get; init; }
    public DateTimeOffset Start { get; init; }
    public DateTimeOffset End { get; init; }
    public string? Reason { get; init; }
    public DateTimeOffset CreatedAt { get; init; }
    public DateTimeOffset? CancelledAt { get; init; }
}

internal static class Fabrics
{
    public const string Infiniband = "infiniband";
    public const string Roce = "roce";
    public const string Ethernet = "ethernet";
    public static readonly string[] All = [Infiniband, Roce, Ethernet];
}

internal static class NodeHealth
{
    public const string Unknown = "unknown";
    public const string Healthy = "healthy";
    public const string Unhealthy = "unhealthy";

    /// <summary>Both reasons in one sentence (health first), as NodeHealthChanged and status_reason carry them; null when there is none.</summary>
    public static string? StatusReason(string? healthReason, string? verificationReason) =>
        (healthReason, verificationReason) switch
        {
            (null, null) => null,
            ({ } h, null) => h,
            (null, { } v) => v,
            ({ } h, { } v) => h + ". " + v,
        };
}

internal static class Reliabilities
{
    public static decimal? FromPpm(int? ppm) => ppm is null ? null : ppm.Value / 1_000_000m;
}

internal static class ClusterQueries
{
    public const string Columns = "id, provider_org_id, name, region, jurisdiction, fabric, fabric_gbps, datacenter_tier, reliability_ppm, created_at";

    public const string NodeColumns = """
        id, cluster_id, hostname, accelerator_model, accelerator_count, gpu_memory_gb, cpu_cores, ram_gb, disk_gb, nvlink_domain,
        health, health_reason, verified, verification_reason, last_heartbeat_at, reliability_ppm, created_at
        """;

    /// <summary>The caller's cluster, or null if it does not exist or belongs to another org (both are a 404).</summary>
    public static Task<ClusterResponse?> FindOwnAsync(NpgsqlConnection connection, NpgsqlTransaction? tx, Guid id, Guid org,
        CancellationToken ct, bool forUpdate = false) =>
        connection.QuerySingleOrDefaultAsync<ClusterResponse>(new CommandDefinition($"""
            SELECT {Columns} FROM clusters WHERE id = @id AND provider_org_id = @org {(forUpdate ? "FOR UPDATE" : "")}
            """, new { id, org }, tx, cancellationToken: ct));

    /// <summary>
    /// The nodes of a cluster (all, one, or a page after <paramref name="after"/>) with their slots and coming maintenance,
    /// in registration order.
    /// </summary>
    public static async Task<List<NodeResponse>> NodesAsync(NpgsqlConnection connection, Guid clusterId, Guid? nodeId, DateTimeOffset now,
        CancellationToken ct, (DateTimeOffset CreatedAt, Guid Id)? after = null, int? limit = null)
    {
        var nodes = (await connection.QueryAsync<NodeResponse>(new CommandDefinition($"""
            SELECT {NodeColumns} FROM nodes
            WHERE cluster_id = @clusterId AND (@nodeId::uuid IS NULL OR id = @nodeId)
              AND (@afterAt::timestamptz IS NULL OR (created_at, id) > (@afterAt, @afterId))
            ORDER BY created_at, id LIMIT @limit
            """, new { clusterId, nodeId, afterAt = after?.CreatedAt, afterId = after?.Id, limit }, cancellationToken: ct))).AsList();
        var args = new { ids = nodes.Select(n => n.Id).ToArray(), now };
        var slots = (await connection.QueryAsync<(Guid NodeId, Guid Id, int Index, int? Island)>(new CommandDefinition("""
            SELECT node_id, id, index, nvlink_island FROM gpu_slots WHERE node_id = ANY(@ids) ORDER BY node_id, index
            """, args, cancellationToken: ct))).ToLookup(s => s.NodeId, s => new SlotResponse(s.Id, s.Index, s.Island));
        var maintenance = (await connection.QueryAsync<MaintenanceResponse>(new CommandDefinition($"""
            SELECT {MaintenanceColumns} FROM node_maintenance m
            WHERE m.node_id = ANY(@ids) AND m.cancelled_at IS NULL AND upper(m.during) > @now
            ORDER BY lower(m.during), m.id
            """, args, cancellationToken: ct))).ToLookup(m => m.NodeId);
        return nodes.Select(n => n with { Slots = slots[n.Id].ToList(), Maintenance = maintenance[n.Id].ToList() }).ToList();
    }

    public const string MaintenanceColumns =
        "m.id, m.node_id, lower(m.during) AS start, upper(m.during) AS \"end\", m.reason, m.created_at, m.cancelled_at";

    public static async Task<List<AttestationResponse>> AttestationsAsync(NpgsqlConnection connection, Guid clusterId, CancellationToken ct) =>
        (await connection.QueryAsync<AttestationResponse>(new CommandDefinition("""
            SELECT kind, level, evidence_ref, expires_at FROM cluster_attestations WHERE cluster_id = @clusterId ORDER BY kind
            """, new { clusterId }, cancellationToken: ct))).AsList();
}
