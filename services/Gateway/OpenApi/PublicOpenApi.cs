using System.Text.Json.Nodes;
using Marketplace.Gateway.Proxy;
using Microsoft.AspNetCore.OpenApi;
using Microsoft.Extensions.Options;
using Microsoft.OpenApi;

namespace Marketplace.Gateway.OpenApi;

/// <summary>
/// The whole public API in one document: the gateway's own routes plus every upstream's <c>/v1</c> paths and schemas,
/// fetched live, so the description never drifts from what the services serve. An upstream that does not answer in
/// time is served from the last copy fetched from it (named in <c>info.description</c>); one never fetched is left out
/// and named there too.
/// </summary>
internal static class PublicOpenApi
{
    public const string HttpClientName = "openapi-upstreams";

    /// <summary>The last document each upstream served, for when it does not answer (restarting, slow under load).</summary>
    private static readonly System.Collections.Concurrent.ConcurrentDictionary<string, (JsonObject Doc, DateTimeOffset At)> LastGood = new();

    public static void MapPublicOpenApi(this IEndpointRouteBuilder app) =>
        // A literal route wins over MapOpenApi's /openapi/{documentName}.json, which still serves the gateway-only document.
        app.MapGet("/openapi/v1.json", GetAsync).AllowAnonymous().ExcludeFromDescription();

    private static async Task<IResult> GetAsync(
        [FromKeyedServices("v1")] IOpenApiDocumentProvider own, IHttpClientFactory http, IOptions<GatewayOptions> options,
        ILoggerFactory loggers, TimeProvider time, CancellationToken ct)
    {
        var ownJson = await (await own.GetOpenApiDocumentAsync(ct)).SerializeAsJsonAsync(OpenApiSpecVersion.OpenApi3_1, ct);
        var document = JsonNode.Parse(ownJson)!.AsObject();
        var client = http.CreateClient(HttpClientName);
        var logger = loggers.CreateLogger(typeof(PublicOpenApi));

        var fetched = await Task.WhenAll(GatewayOptions.UpstreamNames.Select(async name =>
        {
            try
            {
                var baseUrl = options.Value.Upstreams[name];
                var url = new Uri(new Uri(baseUrl), "/openapi/v1.json");
                var doc = JsonNode.Parse(await client.GetStringAsync(url, ct)) as JsonObject;
                if (doc is not null) LastGood[baseUrl] = (doc, time.GetUtcNow());
                return (name, doc, cachedAt: (DateTimeOffset?)null);
            }
            catch (Exception ex) when (ex is HttpRequestException or TaskCanceledException or System.Text.Json.JsonException && !ct.IsCancellationRequested)
            {
                logger.LogWarning(ex, "The OpenAPI document of {Upstream} could not be fetched", name);
                return LastGood.TryGetValue(options.Value.Upstreams[name], out var last)
                    ? (name, doc: last.Doc, cachedAt: last.At)
                    : (name, doc: (JsonObject?)null, cachedAt: (DateTimeOffset?)null);
            }
        }));

        var paths = Child(document, "paths");
        var schemas = Child(Child(document, "components"), "schemas");
        foreach (var (_, upstream, _) in fetched)
        {
            if (upstream is null) continue;
            foreach (var (path, item) in upstream["paths"] as JsonObject ?? [])
            {
                if (item is not JsonObject operations) continue;
                var publicPath = path == PublicRoutes.StripeWebhookUpstreamPath ? PublicRoutes.StripeWebhookPath : path;
                if (!publicPath.StartsWith("/v1/", StringComparison.Ordinal)) continue;
                var merged = Child(paths, publicPath);
                foreach (var (method, operation) in operations) merged[method] = operation?.DeepClone();
                if (publicPath == PublicRoutes.StripeWebhookPath)
                    foreach (var (_, operation) in merged) if (operation is JsonObject op) op["security"] = new JsonArray();
            }
            foreach (var (name, schema) in upstream["components"]?["schemas"] as JsonObject ?? [])
                if (!schemas.ContainsKey(name)) schemas[name] = schema?.DeepClone();
        }

        Child(Child(document, "components"), "securitySchemes")["api_key"] = new JsonObject
        {
            ["type"] = "http",
            ["scheme"] = "bearer",
            ["description"] = "An API key: Authorization: Bearer mk_<prefix>_<secret>.",
        };
        document["security"] = new JsonArray(new JsonObject { ["api_key"] = new JsonArray() });

        var down = fetched.Where(f => f.doc is null).Select(f => f.name).ToArray();
        var stale = fetched.Where(f => f.cachedAt is not null).Select(f => $"{f.name} (as fetched at {f.cachedAt:u})").ToArray();
        var info = Child(document, "info");
        info["title"] = "Marketplace API";
        info["version"] = "v1";
        info["description"] = "Rent accelerator hours: catalog, offers, orders, leases, wallet and billing. "
            + "Authenticate every /v1 call with 'Authorization: Bearer <API key>'."
            + (down.Length == 0 ? "" : $" Not included (service not reachable when this document was made): {string.Join(", ", down)}.")
            + (stale.Length == 0 ? "" : $" From the last copy (service not reachable just now): {string.Join(", ", stale)}.");
        return Results.Text(document.ToJsonString(), "application/json");
    }

    private static JsonObject Child(JsonObject parent, string name)
    {
        if (parent[name] is JsonObject existing) return existing;
        var created = new JsonObject();
        parent[name] = created;
        return created;
    }
}
