using Marketplace.ServiceDefaults.Web;
using Microsoft.AspNetCore.Http.Features;
using Microsoft.Extensions.Options;
using Yarp.ReverseProxy.Configuration;
using Yarp.ReverseProxy.Forwarder;
using Yarp.ReverseProxy.Model;
using Yarp.ReverseProxy.Transforms;

namespace Marketplace.Gateway.Proxy;

/// <summary>
/// One public route: which paths (and methods), which upstream answers, which roles may call it (none = any org), and
/// whether it needs a node-scoped agent key.
/// </summary>
internal sealed record PublicRoute(string Id, string Path, string Upstream, string[] Roles, string[]? Methods = null, bool NodeKey = false)
{
    public string Policy => NodeKey ? Policies.NodeAgent : Policies.ForRoles(Roles);
}

/// <summary>The public API's route table and the reverse proxy (YARP) that serves it.</summary>
internal static class PublicRoutes
{
    private const string Any = "";
    private static readonly string[] AnyOrg = [];
    private static readonly string[] Renter = [OrgRoles.Renter];
    private static readonly string[] Provider = [OrgRoles.Provider];
    private static readonly string[] Finance = [OrgRoles.Finance];
    private static readonly string[] Admin = [OrgRoles.Admin];

    public const string StripeWebhookPath = "/v1/webhooks/stripe";
    public const string StripeWebhookUpstreamPath = "/webhooks/stripe";

    public static readonly PublicRoute[] All =
    [
        new("accelerators", "/v1/accelerators/{**rest}", "listings", AnyOrg, ["GET"]),
        new("accelerators-admin", "/v1/accelerators/{**rest}", "listings", Admin, ["POST", "PATCH"]),
        new("clusters", "/v1/clusters/{**rest}", "listings", Provider),
        // Node agents: only node-scoped keys (an ordinary provider key is refused, so a leaked agent key is the
        // only thing that can speak for a node, and an ordinary key never poses as one). Assignments are Scheduling's.
        new("agent-assignments", "/v1/agent/assignments/{**rest}", "scheduling", Provider, NodeKey: true),
        new("agent", "/v1/agent/{**rest}", "listings", Provider, NodeKey: true),
        new("offers-read", "/v1/offers/{**rest}", "listings", AnyOrg, ["GET"]),
        new("offers-write", "/v1/offers/{**rest}", "listings", Provider, ["POST", "PATCH", "DELETE"]),
        new("orders", "/v1/orders/{**rest}", "bidding", Renter),
        new("market", "/v1/market/{**rest}", "bidding", AnyOrg),
        new("leases", "/v1/leases/{**rest}", "scheduling", [OrgRoles.Renter, OrgRoles.Provider]),
        new("wallet", "/v1/wallet/{**rest}", "billing", Renter),
        new("billing", "/v1/billing/{**rest}", "billing", Finance),
        new("invoices", "/v1/invoices/{**rest}", "billing", [OrgRoles.Renter, OrgRoles.Finance]),
        new("statements", "/v1/statements/{**rest}", "billing", [OrgRoles.Provider, OrgRoles.Finance]),
        new("payout-accounts", "/v1/payout-accounts/{**rest}", "billing", [OrgRoles.Provider, OrgRoles.Finance]),
        new("ledger", "/v1/ledger/{**rest}", "billing", Finance),
    ];

    public static IEnumerable<IReadOnlyCollection<string>> RoleSets => All.Select(r => (IReadOnlyCollection<string>)r.Roles);

    public static IReverseProxyBuilder AddPublicRoutes(this IServiceCollection services)
    {
        services.AddSingleton<IProxyConfigProvider>(sp => Config(sp.GetRequiredService<IOptions<GatewayOptions>>().Value));
        return services.AddReverseProxy().AddTransforms(context =>
        {
            var token = context.Services.GetRequiredService<IOptions<GatewayOptions>>().Value.InternalToken;
            context.AddRequestTransform(t =>
            {
                SetIdentity(t.HttpContext, t.ProxyRequest, token);
                return ValueTask.CompletedTask;
            });
        });
    }

    private static InMemoryConfigProvider Config(GatewayOptions options)
    {
        var routes = All.Select(r => new RouteConfig
        {
            RouteId = r.Id,
            ClusterId = r.Upstream,
            AuthorizationPolicy = r.Policy,
            Match = new RouteMatch { Path = r.Path, Methods = r.Methods },
        }).Append(new RouteConfig
        {
            // Stripe cannot hold an API key; it signs the raw body, which Billing verifies. The body passes untouched.
            RouteId = "stripe-webhook",
            ClusterId = "billing",
            AuthorizationPolicy = "anonymous",
            Match = new RouteMatch { Path = StripeWebhookPath, Methods = ["POST"] },
        }.WithTransformPathSet(StripeWebhookUpstreamPath)).ToList();

        var clusters = GatewayOptions.UpstreamNames.Select(name => new ClusterConfig
        {
            ClusterId = name,
            Destinations = new Dictionary<string, DestinationConfig> { [name] = new() { Address = options.Upstreams[name] } },
        }).ToList();
        return new InMemoryConfigProvider(routes, clusters);
    }

    /// <summary>
    /// The services trust X-Marketplace-* only with the internal token, so whatever a client sent under those names is
    /// dropped and replaced by what the API key proved. The key itself stays at the gateway.
    /// </summary>
    private static void SetIdentity(HttpContext context, HttpRequestMessage proxy, string token)
    {
        foreach (var name in proxy.Headers.Select(h => h.Key).Where(IsMarketplaceHeader).ToList()) proxy.Headers.Remove(name);
        if (proxy.Content is not null)
            foreach (var name in proxy.Content.Headers.Select(h => h.Key).Where(IsMarketplaceHeader).ToList()) proxy.Content.Headers.Remove(name);
        proxy.Headers.Authorization = null;

        if (ApiKeyPrincipal.OrgId(context.User) is { } org)
        {
            proxy.Headers.TryAddWithoutValidation(Caller.OrgHeader, org.ToString());
            proxy.Headers.TryAddWithoutValidation(Caller.RolesHeader, string.Join(',', ApiKeyPrincipal.Roles(context.User)));
            if (ApiKeyPrincipal.NodeId(context.User) is { } node) proxy.Headers.TryAddWithoutValidation(Caller.NodeHeader, node.ToString());
        }
        proxy.Headers.TryAddWithoutValidation(Caller.GatewayTokenHeader, token);
    }

    private static IEnumerable<Exception> Unwrap(Exception? exception) => exception switch
    {
        null => [],
        AggregateException all => all.InnerExceptions.SelectMany(Unwrap),
        _ => Unwrap(exception.InnerException).Prepend(exception),
    };

    private static bool IsMarketplaceHeader(string name) => name.StartsWith("X-Marketplace-", StringComparison.OrdinalIgnoreCase);

    /// <summary>The reverse proxy, with an upstream that cannot be reached answered as a problem, not an empty 502.</summary>
    public static void MapPublicRoutes(this IEndpointRouteBuilder app) => app.MapReverseProxy(proxy => proxy.Use(async (context, next) =>
    {
        await next();
        var error = context.GetForwarderErrorFeature();
        if (error is null || context.Response.HasStarted || context.RequestAborted.IsCancellationRequested) return;
        if (context.Response.StatusCode == StatusCodes.Status413PayloadTooLarge)
        {
            // A body of undeclared size (chunked) found over the limit only while it was relayed.
            var limit = context.Features.Get<IHttpMaxRequestBodySizeFeature>()?.MaxRequestBodySize;
            await OversizedBodies.TooLarge($"more than {limit} bytes", limit).ExecuteAsync(context);
            return;
        }
        if (error.Error == ForwarderError.RequestBodyClient && context.Response.StatusCode < 500)
        {
            // A chunked body whose encoding breaks mid-way: Kestrel says why (the client may also have gone away).
            var reason = Unwrap(error.Exception).OfType<BadHttpRequestException>().FirstOrDefault()?.Message ?? "the client stopped sending it";
            await Problems.Of(context.Response.StatusCode, "malformed-request", "The request body could not be read",
                $"The request body could not be read ({reason}). Send it again with a valid body.").ExecuteAsync(context);
            return;
        }
        if (context.Response.StatusCode < 500) return;
        var upstream = context.GetReverseProxyFeature().Route.Cluster?.ClusterId ?? "upstream";
        var result = error.Error switch
        {
            ForwarderError.RequestTimedOut => Problems.Of(StatusCodes.Status504GatewayTimeout, "upstream-timeout", "Upstream timed out",
                $"The {upstream} service did not answer in time. Retry later (with the same Idempotency-Key for a POST)."),
            ForwarderError.Request or ForwarderError.NoAvailableDestinations => Problems.Of(StatusCodes.Status503ServiceUnavailable,
                "upstream-unavailable", "Upstream unavailable",
                $"The {upstream} service cannot be reached right now. Retry later (with the same Idempotency-Key for a POST)."),
            _ => Problems.Of(StatusCodes.Status502BadGateway, "bad-gateway", "Bad gateway",
                $"The {upstream} service answered in a way the gateway could not relay. Retry later."),
        };
        if (result.StatusCode == StatusCodes.Status503ServiceUnavailable) context.Response.Headers.RetryAfter = "5";
        await result.ExecuteAsync(context);
    }));
}
