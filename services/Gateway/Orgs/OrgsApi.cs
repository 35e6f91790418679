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

    internal sealed record OrgResponse(Guid Id, string Name, string[] Roles, DateTime CreatedAt);
}
