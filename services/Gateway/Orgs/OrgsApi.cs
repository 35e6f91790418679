using Microsoft.AspNetCore.Http.Metadata;

namespace Marketplace.Gateway.Orgs;

internal static class OrgsApi
{
    public static IEndpointRouteBuilder MapOrgsApi(this IEndpointRouteBuilder app)
    {
        var orgs = app.MapGroup("/v1/orgs").WithTags("Organisations").RequireAuthorization(Policies.AnyOrg);
        CreateOrg.Map(orgs);
        GetOrg.Map(orgs);
        CreateApiKey.Map(orgs);
        RevokeApiKey.Map(orgs);
        return app;
    }

    // Init properties rather than a positional record: Dapper matches constructors by exact column type (text[] is Array).
    internal sealed record OrgResponse
    {
        public required Guid Id { get; init; }
        public required string Name { get; init; }
        public required string[] Roles { get; init; }
        public required DateTime CreatedAt { get; init; }
    }

    /// <summary>
    /// On an endpoint with a JSON body: routing selects it whatever the request's content type, and the JSON binding
    /// answers 415 with the reason. Otherwise routing skips it for a body not declared JSON (curl -d sends a form type)
    /// and the /v1 catch-all answers "there is no POST /v1/orgs".
    /// </summary>
    public static readonly IAcceptsMetadata AnyContentType = new AnyContentTypeRoutes();

    private sealed class AnyContentTypeRoutes : IAcceptsMetadata
    {
        public IReadOnlyList<string> ContentTypes => [];
        public Type? RequestType => null;
        public bool IsOptional => true;
    }
}
