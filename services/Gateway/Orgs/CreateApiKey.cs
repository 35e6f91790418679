using Dapper;
using Marketplace.ServiceDefaults.Web;
using Microsoft.AspNetCore.Http.HttpResults;
using Npgsql;
using System.Security.Claims;

namespace Marketplace.Gateway.Orgs;

internal static class CreateApiKey
{
    public sealed record Request(string? Name);

    /// <summary>The only response that ever carries the clear key.</summary>
    public sealed record Response(Guid Id, string Name, string Prefix, string Key, DateTime CreatedAt);

    public static void Map(RouteGroupBuilder orgs) =>
        orgs.MapPost("/{id:guid}/api-keys", HandleAsync)
            .WithSummary("Create an API key (admin or the org itself); the key is shown only in this response");

    private static async Task<Results<Created<Response>, ValidationProblem, ProblemHttpResult>> HandleAsync(
        Guid id, Request body, ClaimsPrincipal user, NpgsqlDataSource db, TimeProvider time, CancellationToken ct)
    {
        if (!ApiKeyPrincipal.MayActOn(user, id)) return Problems.NotFound("organisation", id);
        var name = body.Name?.Trim() ?? "";
        var validation = new Validation()
            .Require(name.Length is >= 1 and <= 100, "name", "Give the key a name of 1 to 100 characters (for example 'ci' or 'alice laptop').");
        if (validation.Failed) return validation.Problem;

        var key = ApiKeys.Generate();
        var now = Clock.Now(time);
        var keyId = Guid.CreateVersion7(now);
        await using var connection = db.CreateConnection();
        var inserted = await connection.ExecuteAsync(new CommandDefinition("""
            INSERT INTO api_keys (id, org_id, name, prefix, secret_hash, created_at)
            SELECT @keyId, o.id, @name, @Prefix, @SecretHash, @now FROM orgs o WHERE o.id = @id
            """, new { keyId, id, name, key.Prefix, key.SecretHash, now }, cancellationToken: ct));
        if (inserted == 0) return Problems.NotFound("organisation", id);
        return TypedResults.Created($"/v1/orgs/{id}/api-keys/{keyId}", new Response(keyId, name, key.Prefix, key.Key, now));
    }
}
