using System.Net;
using System.Text.Json;
using Xunit;

namespace Marketplace.Gateway.Tests;

/// <summary>A gateway of its own, so that stopping its upstream does not disturb the other tests.</summary>
public sealed class UpstreamStopsFixture : GatewayFixture;

public sealed class OpenApiUpstreamDownTests(UpstreamStopsFixture gateway) : IClassFixture<UpstreamStopsFixture>
{
    [Fact]
    public async Task An_upstream_that_stops_answering_keeps_its_paths_from_the_last_copy_and_is_named()
    {
        using var anonymous = gateway.Client();
        var before = await ReadAsync(anonymous);
        Assert.Contains("/v1/echo-things", Paths(before));
        Assert.DoesNotContain("last copy", Description(before));

        await gateway.Upstream.DisposeAsync(); // listings, bidding and billing stop answering

        var after = await ReadAsync(anonymous);
        Assert.Contains("/v1/echo-things", Paths(after));
        Assert.True(after.GetProperty("components").GetProperty("schemas").TryGetProperty("EchoThing", out _));
        var description = Description(after);
        Assert.Contains("From the last copy", description);
        Assert.Contains("listings (as fetched at", description);
        Assert.Contains("Not included", description); // scheduling was never reachable: still named as missing
        Assert.Contains("scheduling", description);
    }

    private static async Task<JsonElement> ReadAsync(HttpClient client)
    {
        var response = await client.GetAsync("/openapi/v1.json");
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        return JsonDocument.Parse(await response.Content.ReadAsStringAsync()).RootElement.Clone();
    }

    private static List<string> Paths(JsonElement doc) => doc.GetProperty("paths").EnumerateObject().Select(p => p.Name).ToList();

    private static string Description(JsonElement doc) => doc.GetProperty("info").GetProperty("description").GetString()!;
}
