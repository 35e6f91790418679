using Marketplace.ServiceDefaults.Web;
using Microsoft.AspNetCore.Authorization;
using Microsoft.AspNetCore.Authorization.Infrastructure;
using Microsoft.AspNetCore.Authorization.Policy;

namespace Marketplace.Gateway;

/// <summary>Authorization policies are named after the roles they accept: "roles:renter|provider"; "any-org" for any key.</summary>
internal static class Policies
{
    public const string AnyOrg = "any-org";
    /// <summary>A provider's node-scoped key: the only credential a node agent route accepts.</summary>
    public const string NodeAgent = "node-agent";
    public static readonly string Admin = ForRoles([OrgRoles.Admin]);

    public static string ForRoles(IReadOnlyCollection<string> roles) => roles.Count == 0 ? AnyOrg : "roles:" + string.Join('|', roles);

    public static void Register(AuthorizationOptions options, IEnumerable<IReadOnlyCollection<string>> roleSets)
    {
        options.DefaultPolicy = new AuthorizationPolicyBuilder(ApiKeyAuthenticationHandler.SchemeName).RequireAuthenticatedUser().Build();
        options.AddPolicy(AnyOrg, options.DefaultPolicy);
        options.AddPolicy(NodeAgent, p => p.AddAuthenticationSchemes(ApiKeyAuthenticationHandler.SchemeName)
            .RequireAuthenticatedUser().RequireRole(OrgRoles.Provider).RequireClaim(ApiKeyAuthenticationHandler.NodeIdClaim));
        foreach (var roles in roleSets.Where(r => r.Count > 0).DistinctBy(ForRoles))
            options.AddPolicy(ForRoles(roles), p => p.AddAuthenticationSchemes(ApiKeyAuthenticationHandler.SchemeName)
                .RequireAuthenticatedUser().RequireRole(roles));
    }
}

/// <summary>A wrong role is a 403 problem that names the role the route needs.</summary>
internal sealed class ProblemAuthorizationResultHandler : IAuthorizationMiddlewareResultHandler
{
    private readonly AuthorizationMiddlewareResultHandler _default = new();

    public async Task HandleAsync(RequestDelegate next, HttpContext context, AuthorizationPolicy policy, PolicyAuthorizationResult result)
    {
        if (!result.Forbidden)
        {
            await _default.HandleAsync(next, context, policy, result);
            return;
        }
        var needed = policy.Requirements.OfType<RolesAuthorizationRequirement>().SelectMany(r => r.AllowedRoles).ToArray();
        var has = ApiKeyPrincipal.Roles(context.User).ToArray();
        var needsNodeKey = policy.Requirements.OfType<ClaimsAuthorizationRequirement>().Any(r => r.ClaimType == ApiKeyAuthenticationHandler.NodeIdClaim);
        var detail = needsNodeKey && needed.All(has.Contains)
            ? $"{context.Request.Method} {context.Request.Path} is a node agent's route and needs a node-scoped key; create one with "
              + "POST /v1/orgs/{org_id}/api-keys {\"name\": ..., \"node_id\": ...} and give it to the node's agent."
            : $"{context.Request.Method} {context.Request.Path} needs the {string.Join(" or ", needed)} role; "
              + $"your organisation has {(has.Length == 0 ? "no role" : string.Join(", ", has))}.";
        await Problems.Forbidden(detail).ExecuteAsync(context);
    }
}
