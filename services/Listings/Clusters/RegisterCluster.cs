using Dapper;
using Marketplace.ServiceDefaults.Data;
using Marketplace.ServiceDefaults.Web;
using Microsoft.AspNetCore.Http.HttpResults;

namespace Marketplace.Listings.Clusters;

public sealed record RegisterClusterRequest(string? Name, string? Region, string? Jurisdiction);

internal static class RegisterCluster
{
    public static void Map(IEndpointRouteBuilder app) =>
        app.MapPost("/v1/clusters", HandleAsync).WithName("RegisterCluster").WithTags("Clusters");

    private static async Task<Results<Created<ClusterResponse>, ValidationProblem, ProblemHttpResult>> HandleAsync(
        RegisterClusterRequest request, Caller caller, Db db, TimeProvider time, CancellationToken ct)
    {
        if (!caller.Has(OrgRoles.Provider)) return Problems.Forbidden("Only provider organisations register clusters.");

        var name = request.Name?.Trim();
        var v = new Validation()
            .Require(!string.IsNullOrEmpty(name), "name", "is required.")
            .Require(name is not { Length: > 200 }, "name", "must be at most 200 characters.")
            .Require(Inputs.IsRegion(request.Region), "region", $"is required: {Inputs.RegionRule}.")
            .Require(Inputs.IsJurisdiction(request.Jurisdiction), "jurisdiction", $"is required: {Inputs.JurisdictionRule}.");
        if (v.Failed) return v.Problem;

        var cluster = new ClusterResponse
        {
            Id = Guid.CreateVersion7(),
            ProviderOrgId = caller.OrgId,
            Name = name!,
            Region = request.Region!,
            Jurisdiction = request.Jurisdiction!,
            CreatedAt = time.GetUtcNow().ToMicroseconds(),
        };
        await using var tx = await db.BeginAsync(ct);
        await tx.Connection.ExecuteAsync(new CommandDefinition("""
            INSERT INTO clusters (id, provider_org_id, name, region, jurisdiction, created_at)
            VALUES (@Id, @ProviderOrgId, @Name, @Region, @Jurisdiction, @CreatedAt)
            """, cluster, tx.Transaction, cancellationToken: ct));
        await tx.CommitAsync(ct);
        return TypedResults.Created($"/v1/clusters/{cluster.Id}", cluster);
    }
}
