using Dapper;
using Marketplace.ServiceDefaults.Web;
using Microsoft.AspNetCore.Http.HttpResults;
using Npgsql;
using System.Security.Claims;

namespace Marketplace.Gateway.Orgs;

internal static class CreateApiKey
{
    /// <param name="NodeId">Scopes the key to one node of the org (its agent's key): it may call only /v1/agent/**.</param>
    public sealed record Request(string? Name, Guid? NodeId);

    /// <summary>The only response that ever carries the clear key.</summary>
    public sealed record Response(Guid Id, string Name, string Prefix, string Key, DateTime CreatedAt, Guid? NodeId);

    public static void Map(RouteGroupBuilder orgs) =>
        orgs.MapPost("/{id:guid}/api-keys", HandleAsync).WithMetadata(OrgsApi.AnyContentType)
            .WithSummary("Create an API key (admin or the org itself); the key is shown only in this response");

    private static async Task<Results<Created<Response>, ValidationProblem, ProblemHttpResult>> HandleAsync(
        Guid id, Request body, ClaimsPrincipal user, NpgsqlDataSource db, TimeProvider time, CancellationToken ct)
    {
        if (!ApiKeyPrincipal.MayActOn(user, id)) return Problems.NotFound("organisation", id);
        var name = body.Name?.Trim() ?? "";
        var validation = new Validation()
            .Require(name.Length is >= 1 and <= 100, "name", "Give the key a name of 1 to 100 characters (for example 'ci' or 'alice laptop').");
        validation.Require(body.NodeId != Guid.Empty, "node_id", "Give the id of one of your nodes (from POST /v1/clusters/{id}/nodes), or leave it out.");
        if (validation.Failed) return validation.Problem;

        await using var connection = db.CreateConnection();
        var roles = await connection.QuerySingleOrDefaultAsync<string[]>(new CommandDefinition(
            "SELECT roles FROM orgs WHERE id = @id", new { id }, cancellationToken: ct));
        if (roles is null) return Problems.NotFound("organisation", id);
        // The gateway does not know nodes; Listings refuses an agent whose node is not the org's on every call.
        if (body.NodeId is not null && !roles.Contains(OrgRoles.Provider))
            return validation.Add("node_id", "Only a provider organisation's nodes run agents; this organisation has no provider role.").Problem;

        var key = ApiKeys.Generate();
        var now = Clock.Now(time);
        var keyId = Guid.CreateVersion7(now);
        var inserted = await connection.ExecuteAsync(new CommandDefinition("""
            INSERT INTO api_keys (id, org_id, name, prefix, secret_hash, created_at, node_id)
            SELECT @keyId, o.id, @name, @Prefix, @SecretHash, @now, @NodeId FROM orgs o WHERE o.id = @id
            """, new { keyId, id, name, key.Prefix, key.SecretHash, now, body.NodeId }, cancellationToken: ct));
        if (inserted == 0) return Problems.NotFound("organisation", id);
        return TypedResults.Created($"/v1/orgs/{id}/api-keys/{keyId}", new Response(keyId, name, key.Prefix, key.Key, now, body.NodeId));
    }
}
