using System.Net.Http.Json;
using System.Text.Json.Nodes;
using Xunit;

namespace Marketplace.Proof.Tests;

internal static class Api
{
    public static async Task<JsonNode> PostJsonAsync(HttpClient client, string path, object body, string? idempotencyKey = null)
    {
        using var request = new HttpRequestMessage(HttpMethod.Post, path) { Content = JsonContent.Create(body) };
        if (idempotencyKey is not null) request.Headers.Add("Idempotency-Key", idempotencyKey);
        using var response = await client.SendAsync(request);
        var text = await response.Content.ReadAsStringAsync();
        Assert.True(response.IsSuccessStatusCode, $"POST {path} → {(int)response.StatusCode}: {text}");
        return JsonNode.Parse(text)!;
    }

    public static async Task<JsonNode?> GetJsonAsync(HttpClient client, string path)
    {
        using var response = await client.GetAsync(path);
        var text = await response.Content.ReadAsStringAsync();
        Assert.True(response.IsSuccessStatusCode, $"GET {path} → {(int)response.StatusCode}: {text}");
        return JsonNode.Parse(text);
    }

    public static async Task<long> AvailableAsync(HttpClient renter, string currency)
    {
        var wallet = await GetJsonAsync(renter, "/v1/wallet");
        return wallet!["balances"]!.AsArray().Where(b => (string?)b!["currency"] == currency)
            .Select(b => (long)b!["available"]!["amount"]!).FirstOrDefault();
    }

    public static bool IsProblem(HttpResponseMessage response) =>
        response.Content.Headers.ContentType?.MediaType == "application/problem+json";
}
