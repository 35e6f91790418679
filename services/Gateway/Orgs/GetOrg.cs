using Dapper;
using Marketplace.ServiceDefaults.Web;
using Microsoft.AspNetCore.Http.HttpResults;
using Npgsql;
using System.Security.Claims;
using static Marketplace.Gateway.Orgs.OrgsApi;

namespace Marketplace.Gateway.Orgs;

internal static class GetOrg
{
    public static void Map(RouteGroupBuilder orgs) =>
        orgs.MapGet("/{id:guid}", HandleAsync).WithSummary("An organisation (admin or the org itself)");

    private static async Task<Results<Ok<OrgResponse>, ProblemHttpResult>> HandleAsync(
        Guid id, ClaimsPrincipal user, NpgsqlDataSource db, CancellationToken ct)
    {
        if (!ApiKeyPrincipal.MayActOn(user, id)) return Problems.NotFound("organisation", id);
        await using var connection = db.CreateConnection();
        var org = await connection.QuerySingleOrDefaultAsync<OrgResponse>(new CommandDefinition(
            "SELECT id, name, roles, created_at FROM orgs WHERE id = @id", new { id }, cancellationToken: ct));
        return org is null ? Problems.NotFound("organisation", id) : TypedResults.Ok(org);
    }
}
