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
}
