using Dapper;
using Marketplace.ServiceDefaults.Web;
using Microsoft.AspNetCore.Http.HttpResults;
using Npgsql;
using System.Security.Claims;

namespace Marketplace.Gateway.Orgs;

internal static class RevokeApiKey
{
    public static void Map(RouteGroupBuilder orgs) =>
        orgs.MapDelete("/{id:guid}/api-keys/{keyId:guid}", HandleAsync)
            .WithSummary("Revoke an API key at once (admin or the org itself)");

    private static async Task<Results<NoContent, ProblemHttpResult>> HandleAsync(
        Guid id, Guid keyId, ClaimsPrincipal user, NpgsqlDataSource db, TimeProvider time, CancellationToken ct)
    {
        if (!ApiKeyPrincipal.MayActOn(user, id)) return Problems.NotFound("API key", keyId);
        await using var connection = db.CreateConnection();
        // Revoking twice is fine and keeps the first revocation time.
        var found = await connection.ExecuteAsync(new CommandDefinition("""
            UPDATE api_keys SET revoked_at = coalesce(revoked_at, @now) WHERE id = @keyId AND org_id = @id
            """, new { keyId, id, now = Clock.Now(time) }, cancellationToken: ct));
        return found == 0 ? Problems.NotFound("API key", keyId) : TypedResults.NoContent();
    }
}
