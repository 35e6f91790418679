using Dapper;
using Marketplace.ServiceDefaults.Data;
using Marketplace.ServiceDefaults.Web;
using Microsoft.AspNetCore.Http.HttpResults;

namespace Marketplace.Listings.Clusters;

/// <summary>An attestation as PUT gives it; the kind is in the path.</summary>
public sealed record PutAttestationRequest(int? Level, string? EvidenceRef, DateTimeOffset? ExpiresAt);

/// <summary>
/// A cluster's provider adds, renews or removes a compliance attestation after registration. Search reads attestations
/// directly, so the cluster's offers are found (or not) by it from the next search on.
/// </summary>
internal static class ClusterAttestations
{
    public static void Map(IEndpointRouteBuilder app)
    {
        app.MapPut("/v1/clusters/{id:guid}/attestations/{kind}", PutAsync).WithName("PutAttestation").WithTags("Clusters");
        app.MapDelete("/v1/clusters/{id:guid}/attestations/{kind}", DeleteAsync).WithName("DeleteAttestation").WithTags("Clusters");
    }

    /// <summary>Adds the attestation of this kind, or replaces it (a renewal: new evidence, expiry or MLPS level).</summary>
    private static async Task<Results<Ok<AttestationResponse>, ValidationProblem, ProblemHttpResult>> PutAsync(
        Guid id, string kind, PutAttestationRequest request, Caller caller, Db db, TimeProvider time, CancellationToken ct)
    {
        if (!caller.Has(OrgRoles.Provider)) return Problems.Forbidden("Only provider organisations change their clusters' attestations.");

        var now = time.GetUtcNow().ToMicroseconds();
        var v = new Validation();
        RegisterCluster.CheckAttestation(v, "", kind, new AttestationInput(kind, request.Level, request.EvidenceRef, request.ExpiresAt), now);

        await using var tx = await db.BeginAsync(ct);
        if (await ClusterQueries.FindOwnAsync(tx.Connection, tx.Transaction, id, caller.OrgId, ct) is null) return Problems.NotFound("cluster", id);
        if (v.Failed) return v.Problem;

        var attestation = new AttestationResponse
        {
            Kind = kind, Level = request.Level, EvidenceRef = request.EvidenceRef!.Trim(), ExpiresAt = request.ExpiresAt!.Value.ToMicroseconds(),
        };
        await tx.Connection.ExecuteAsync(new CommandDefinition("""
            INSERT INTO cluster_attestations (cluster_id, kind, level, evidence_ref, expires_at) VALUES (@id, @Kind, @Level, @EvidenceRef, @ExpiresAt)
            ON CONFLICT (cluster_id, kind) DO UPDATE SET level = excluded.level, evidence_ref = excluded.evidence_ref, expires_at = excluded.expires_at
            """, new { id, attestation.Kind, attestation.Level, attestation.EvidenceRef, attestation.ExpiresAt }, tx.Transaction, cancellationToken: ct));
        await tx.CommitAsync(ct);
        return TypedResults.Ok(attestation);
    }

    private static async Task<Results<NoContent, ValidationProblem, ProblemHttpResult>> DeleteAsync(
        Guid id, string kind, Caller caller, Db db, CancellationToken ct)
    {
        if (!caller.Has(OrgRoles.Provider)) return Problems.Forbidden("Only provider organisations change their clusters' attestations.");

        var v = new Validation().Require(RegisterCluster.AttestationKinds.Contains(kind), "kind",
            $"must be one of {string.Join(", ", RegisterCluster.AttestationKinds)}.");
        await using var tx = await db.BeginAsync(ct);
        if (await ClusterQueries.FindOwnAsync(tx.Connection, tx.Transaction, id, caller.OrgId, ct) is null) return Problems.NotFound("cluster", id);
        if (v.Failed) return v.Problem;

        var deleted = await tx.Connection.ExecuteAsync(new CommandDefinition(
            "DELETE FROM cluster_attestations WHERE cluster_id = @id AND kind = @kind", new { id, kind }, tx.Transaction, cancellationToken: ct));
        if (deleted == 0)
            return Problems.Of(StatusCodes.Status404NotFound, "not-found", "Not found", $"Cluster {id} has no {kind} attestation.");
        await tx.CommitAsync(ct);
        return TypedResults.NoContent();
    }
}
