using System.Net.Http.Json;
using System.Text.Json.Nodes;
using Marketplace.Testing;

namespace Marketplace.Proof.Tests;

internal static class PublicDocument
{
    /// <summary>
    /// The gateway's merged OpenAPI document, once it holds every service: the gateway gives each upstream 3 s and leaves
    /// out (naming it) one that is slower, which a service's first document on a busy machine can be. Each is warmed first.
    /// </summary>
    public static async Task<JsonObject> GetAsync(MarketplaceStack stack)
    {
        using var http = new HttpClient { Timeout = TimeSpan.FromSeconds(60) };
        foreach (var service in new[] { "Listings", "Bidding", "Scheduling", "Billing" })
            await http.GetStringAsync(new Uri(stack.UrlOf(service), "/openapi/v1.json"));
        using var anonymous = stack.Client();
        JsonObject? document = null;
        await Eventually.True(async () =>
        {
            document = await anonymous.GetFromJsonAsync<JsonObject>("/openapi/v1.json");
            return document?["info"]?["description"]?.ToString().Contains("Not included", StringComparison.Ordinal) == false;
        }, TimeSpan.FromSeconds(60), "the OpenAPI document to include every service");
        return document!;
    }
}
