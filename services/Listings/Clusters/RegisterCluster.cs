using Dapper;
using Marketplace.ServiceDefaults.Data;
using Marketplace.ServiceDefaults.Web;
using Microsoft.AspNetCore.Http.HttpResults;
using Microsoft.AspNetCore.Mvc;

namespace Marketplace.Listings.Clusters;

public sealed record RegisterClusterRequest(
    string? Name,
    string? Region,
    string? Jurisdiction,
    string? Fabric,
    int? FabricGbps,
    int? DatacenterTier,
    AttestationInput[]? Compliance);

public sealed record AttestationInput(string? Kind, int? Level, string? EvidenceRef, DateTimeOffset? ExpiresAt);

internal static class RegisterCluster
{
    public static readonly string[] AttestationKinds = ["data-residency", "iso27001", "mlps", "soc2"];

    public static void Map(IEndpointRouteBuilder app) =>
        app.MapPost("/v1/clusters", HandleAsync).WithName("RegisterCluster").WithTags("Clusters");

    /// <summary>The rules of one attestation, at registration and when it is added or renewed later; fields named from <paramref name="prefix"/>.</summary>
    public static void CheckAttestation(Validation v, string prefix, string? kind, AttestationInput a, DateTimeOffset now) =>
        v.Require(kind is not null && AttestationKinds.Contains(kind), prefix + "kind", $"must be one of {string.Join(", ", AttestationKinds)}.")
         .Require(kind != "mlps" || a.Level is >= 1 and <= 5, prefix + "level", "is required for mlps: China's MLPS level, 1 to 5.")
         .Require(kind == "mlps" || a.Level is null, prefix + "level", "is only for mlps; leave it out.")
         .Require(!string.IsNullOrWhiteSpace(a.EvidenceRef) && a.EvidenceRef.Length <= 500, prefix + "evidence_ref",
             "is required: where the certificate or audit report can be checked (a URL or document id), at most 500 characters.")
         .Require(a.ExpiresAt > now, prefix + "expires_at", "is required and must be in the future (an expired attestation proves nothing).");

    /// <summary>With an Idempotency-Key (optional, recommended): the same key and body again answer 200 with the cluster (see <see cref="Idempotency"/>).</summary>
    private static async Task<Results<Created<ClusterResponse>, Ok<ClusterResponse>, ValidationProblem, ProblemHttpResult>> HandleAsync(
        [FromHeader(Name = Idempotency.Header)] string? idempotencyKey,
        RegisterClusterRequest request, Caller caller, Db db, TimeProvider time, CancellationToken ct)
    {
        if (!caller.Has(OrgRoles.Provider)) return Problems.Forbidden("Only provider organisations register clusters.");
        if (Idempotency.Invalid(idempotencyKey, "cluster") is { } badKey) return badKey;

        var now = time.GetUtcNow().ToMicroseconds();
        var name = request.Name?.Trim();
        var fabric = request.Fabric ?? Fabrics.Ethernet;
        var v = new Validation()
            .Require(!string.IsNullOrEmpty(name), "name", "is required.")
            .Require(name is not { Length: > 200 }, "name", "must be at most 200 characters.")
            .Require(Inputs.IsRegion(request.Region), "region", $"is required: {Inputs.RegionRule}.")
            .Require(Inputs.IsJurisdiction(request.Jurisdiction), "jurisdiction", $"is required: {Inputs.JurisdictionRule}.")
            .Require(Fabrics.All.Contains(fabric), "fabric", $"must be one of {string.Join(", ", Fabrics.All)} (the network between nodes).")
            .Require(request.FabricGbps is null or (>= 0 and <= 12800), "fabric_gbps", "must be the per-node fabric bandwidth in Gbit/s, 0 to 12800.")
            .Require(request.DatacenterTier is null or (>= 1 and <= 4), "datacenter_tier", "must be the Uptime Institute tier, 1 to 4.");
        var compliance = request.Compliance ?? [];
        for (var i = 0; i < compliance.Length; i++)
        {
            var a = compliance[i];
            CheckAttestation(v, $"compliance[{i}].", a.Kind, a, now);
        }
        v.Require(compliance.Select(a => a.Kind).Distinct().Count() == compliance.Length, "compliance", "lists a kind more than once.");
        if (v.Failed) return v.Problem;

        var cluster = new ClusterResponse
        {
            Id = Guid.CreateVersion7(),
            ProviderOrgId = caller.OrgId,
            Name = name!,
            Region = request.Region!,
            Jurisdiction = request.Jurisdiction!,
            Fabric = fabric,
            FabricGbps = request.FabricGbps ?? 0,
            DatacenterTier = request.DatacenterTier,
            Compliance = compliance.Select(a => new AttestationResponse
            {
                Kind = a.Kind!, Level = a.Level, EvidenceRef = a.EvidenceRef!.Trim(), ExpiresAt = a.ExpiresAt!.Value.ToMicroseconds(),
            }).OrderBy(a => a.Kind, StringComparer.Ordinal).ToList(),
            CreatedAt = now,
        };
        await using var tx = await db.BeginAsync(ct);
        var requestHash = Idempotency.Hash(request);
        if (await Idempotency.FindAsync(tx, caller.OrgId, Idempotency.Scope.Clusters, idempotencyKey, ct) is { } earlier)
        {
            if (earlier.RequestHash != requestHash) return Idempotency.Reused(idempotencyKey!, "cluster", earlier.ObjectId);
            var existing = await ClusterQueries.FindOwnAsync(tx.Connection, tx.Transaction, earlier.ObjectId, caller.OrgId, ct);
            return TypedResults.Ok(existing! with { Compliance = await ClusterQueries.AttestationsAsync(tx.Connection, earlier.ObjectId, ct) });
        }
        await tx.Connection.ExecuteAsync(new CommandDefinition("""
            INSERT INTO clusters (id, provider_org_id, name, region, jurisdiction, fabric, fabric_gbps, datacenter_tier, created_at)
            VALUES (@Id, @ProviderOrgId, @Name, @Region, @Jurisdiction, @Fabric, @FabricGbps, @DatacenterTier, @CreatedAt)
            """, cluster, tx.Transaction, cancellationToken: ct));
        foreach (var a in cluster.Compliance)
            await tx.Connection.ExecuteAsync(new CommandDefinition("""
                INSERT INTO cluster_attestations (cluster_id, kind, level, evidence_ref, expires_at)
                VALUES (@Id, @Kind, @Level, @EvidenceRef, @ExpiresAt)
                """, new { cluster.Id, a.Kind, a.Level, a.EvidenceRef, a.ExpiresAt }, tx.Transaction, cancellationToken: ct));
        await Idempotency.RememberAsync(tx, caller.OrgId, Idempotency.Scope.Clusters, idempotencyKey, requestHash, cluster.Id, ct);
        await tx.CommitAsync(ct);
        return TypedResults.Created($"/v1/clusters/{cluster.Id}", cluster);
    }
}
