using Dapper;
using Marketplace.ServiceDefaults.Web;
using Microsoft.AspNetCore.Http.HttpResults;
using Npgsql;
using static Marketplace.Gateway.Orgs.OrgsApi;

namespace Marketplace.Gateway.Orgs;

internal static class CreateOrg
{
    public sealed record Request(string? Name, string[]? Roles);

    public static void Map(RouteGroupBuilder orgs) =>
        orgs.MapPost("/", HandleAsync).RequireAuthorization(Policies.Admin).WithMetadata(OrgsApi.AnyContentType)
            .WithSummary("Create an organisation (admin)");

    private static async Task<Results<Created<OrgResponse>, ValidationProblem>> HandleAsync(
        Request body, NpgsqlDataSource db, TimeProvider time, CancellationToken ct)
    {
        var name = body.Name?.Trim() ?? "";
        var roles = body.Roles ?? [];
        var validation = new Validation()
            .Require(name.Length is >= 1 and <= 200, "name", "Give the organisation a name of 1 to 200 characters.")
            .Require(roles.Length > 0, "roles", $"Give at least one role: {string.Join(", ", OrgRoles.All)}.");
        foreach (var unknown in roles.Where(r => !OrgRoles.All.Contains(r)))
            validation.Add("roles", $"'{unknown}' is not a role; use {string.Join(", ", OrgRoles.All)}.");
        if (validation.Failed) return validation.Problem;

        var org = new OrgResponse { Id = Guid.CreateVersion7(), Name = name, Roles = roles.Distinct().ToArray(), CreatedAt = Clock.Now(time) };
        await using var connection = db.CreateConnection();
        await connection.ExecuteAsync(new CommandDefinition("""
            INSERT INTO orgs (id, name, roles, created_at) VALUES (@Id, @Name, @Roles, @CreatedAt)
            """, org, cancellationToken: ct));
        return TypedResults.Created($"/v1/orgs/{org.Id}", org);
    }
}
