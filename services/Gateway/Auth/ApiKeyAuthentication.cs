using System.Security.Claims;
using System.Text.Encodings.Web;
using Dapper;
using Marketplace.ServiceDefaults.Web;
using Microsoft.AspNetCore.Authentication;
using Microsoft.Extensions.Options;
using Npgsql;

namespace Marketplace.Gateway;

/// <summary>
/// <c>Authorization: Bearer mk_...</c> → the key's org and roles. Looked up on every request, so a revoked key stops
/// working at once on every gateway instance.
/// </summary>
internal sealed class ApiKeyAuthenticationHandler(
    IOptionsMonitor<AuthenticationSchemeOptions> options, ILoggerFactory logger, UrlEncoder encoder, NpgsqlDataSource db)
    : AuthenticationHandler<AuthenticationSchemeOptions>(options, logger, encoder)
{
    public const string SchemeName = "ApiKey";
    public const string OrgIdClaim = "org_id";
    public const string KeyIdClaim = "key_id";
    public const string NodeIdClaim = "node_id";

    // Properties, not a positional record: Dapper matches constructors by exact column type, and text[] reads as Array.
    private sealed class KeyRow
    {
        public Guid Id { get; init; }
        public Guid OrgId { get; init; }
        public byte[] SecretHash { get; init; } = [];
        public DateTime? RevokedAt { get; init; }
        public string[] Roles { get; init; } = [];
        public Guid? NodeId { get; init; }
    }

    protected override async Task<AuthenticateResult> HandleAuthenticateAsync()
    {
        string authorization = Request.Headers.Authorization.ToString();
        if (string.IsNullOrEmpty(authorization)) return AuthenticateResult.NoResult();
        if (!authorization.StartsWith("Bearer ", StringComparison.OrdinalIgnoreCase)
            || !ApiKeys.TryParse(authorization["Bearer ".Length..].Trim(), out var prefix, out var secret))
            return AuthenticateResult.Fail("The Authorization header is not 'Bearer mk_<prefix>_<secret>'.");

        await using var connection = db.CreateConnection();
        var row = await connection.QuerySingleOrDefaultAsync<KeyRow>(new CommandDefinition("""
            SELECT k.id, k.org_id, k.secret_hash, k.revoked_at, o.roles, k.node_id
            FROM api_keys k JOIN orgs o ON o.id = k.org_id
            WHERE k.prefix = @prefix
            """, new { prefix }, cancellationToken: Context.RequestAborted));
        // One answer for unknown, wrong and revoked keys: nothing to learn by probing.
        if (row is null || row.RevokedAt is not null || !ApiKeys.Matches(secret, row.SecretHash))
            return AuthenticateResult.Fail("The API key is not valid or has been revoked.");

        var claims = new List<Claim> { new(OrgIdClaim, row.OrgId.ToString()), new(KeyIdClaim, row.Id.ToString()) };
        claims.AddRange(row.Roles.Select(r => new Claim(ClaimTypes.Role, r)));
        if (row.NodeId is { } node) claims.Add(new Claim(NodeIdClaim, node.ToString()));
        var principal = new ClaimsPrincipal(new ClaimsIdentity(claims, SchemeName));
        return AuthenticateResult.Success(new AuthenticationTicket(principal, SchemeName));
    }

    protected override async Task HandleChallengeAsync(AuthenticationProperties properties)
    {
        var result = await HandleAuthenticateOnceSafeAsync();
        Response.Headers.WWWAuthenticate = result.Failure is null ? "Bearer" : "Bearer error=\"invalid_token\"";
        var detail = result.Failure?.Message ?? "Send your API key in the header 'Authorization: Bearer mk_<prefix>_<secret>'.";
        await Problems.Of(StatusCodes.Status401Unauthorized, "unauthenticated", "Unauthenticated", detail).ExecuteAsync(Context);
    }
}

/// <summary>Who is calling, as the API key says (never from client headers).</summary>
internal static class ApiKeyPrincipal
{
    public static Guid? OrgId(ClaimsPrincipal user) =>
        Guid.TryParse(user.FindFirstValue(ApiKeyAuthenticationHandler.OrgIdClaim), out var id) ? id : null;

    public static string? KeyId(ClaimsPrincipal user) => user.FindFirstValue(ApiKeyAuthenticationHandler.KeyIdClaim);

    /// <summary>The node a node-scoped (agent) key is bound to; null for an ordinary key.</summary>
    public static Guid? NodeId(ClaimsPrincipal user) =>
        Guid.TryParse(user.FindFirstValue(ApiKeyAuthenticationHandler.NodeIdClaim), out var id) ? id : null;

    public static IEnumerable<string> Roles(ClaimsPrincipal user) => user.FindAll(ClaimTypes.Role).Select(c => c.Value);

    /// <summary>Admins act on any org; everyone else only on their own.</summary>
    public static bool MayActOn(ClaimsPrincipal user, Guid orgId) => user.IsInRole(OrgRoles.Admin) || OrgId(user) == orgId;
}
