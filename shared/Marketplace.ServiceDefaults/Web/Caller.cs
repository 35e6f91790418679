using Microsoft.AspNetCore.Http;

namespace Marketplace.ServiceDefaults.Web;

/// <summary>
/// The authenticated organisation behind a request, as the gateway established it from the API key.
/// Services trust these headers only on requests that carry the gateway's internal token.
/// </summary>
public sealed record Caller(Guid OrgId, IReadOnlySet<string> Roles)
{
    /// <summary>Set when the API key is scoped to one node (a node agent's key): such a key may only call /v1/agent/**.</summary>
    public Guid? NodeId { get; init; }

    public const string NodeHeader = "X-Marketplace-Node";
    public const string OrgHeader = "X-Marketplace-Org";
    public const string RolesHeader = "X-Marketplace-Roles";
    public const string GatewayTokenHeader = "X-Marketplace-Gateway-Token";

    public bool Has(string role) => Roles.Contains(role);

    public bool IsFinanceOrAdmin => Has(OrgRoles.Finance) || Has(OrgRoles.Admin);

    public static ValueTask<Caller?> BindAsync(HttpContext context) => ValueTask.FromResult(From(context));

    public static Caller? From(HttpContext context)
    {
        if (!Guid.TryParse(context.Request.Headers[OrgHeader], out var org)) return null;
        var roles = context.Request.Headers[RolesHeader].ToString()
            .Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
        return new Caller(org, roles.ToHashSet(StringComparer.Ordinal))
        {
            NodeId = Guid.TryParse(context.Request.Headers[NodeHeader], out var node) ? node : null,
        };
    }
}

/// <summary>The roles an organisation can hold.</summary>
public static class OrgRoles
{
    public const string Renter = "renter";
    public const string Provider = "provider";
    public const string Finance = "finance";
    public const string Admin = "admin";
    public static readonly string[] All = [Renter, Provider, Finance, Admin];
}
