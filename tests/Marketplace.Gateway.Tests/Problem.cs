using System.Net;
using System.Text.Json;
using Xunit;

namespace Marketplace.Gateway.Tests;

internal static class Problem
{
    /// <summary>Asserts an RFC 9457 problem with the status and stable type; returns it for more checks.</summary>
    public static async Task<JsonElement> AssertAsync(HttpResponseMessage response, HttpStatusCode status, string typeSlug)
    {
        var text = await response.Content.ReadAsStringAsync();
        Assert.True(status == response.StatusCode, $"expected {status}, got {response.StatusCode}: {text}");
        Assert.Equal("application/problem+json", response.Content.Headers.ContentType?.MediaType);
        var problem = JsonDocument.Parse(text).RootElement;
        Assert.Equal("https://docs.marketplace.local/problems/" + typeSlug, problem.GetProperty("type").GetString());
        Assert.False(string.IsNullOrWhiteSpace(problem.GetProperty("detail").GetString()));
        return problem;
    }
}
