using System.Net;
using System.Text.Json;
using Xunit;

namespace Marketplace.Gateway.Tests;

public sealed class OpenApiTests(GatewayFixture gateway) : IClassFixture<GatewayFixture>
{
    [Fact]
    public async Task The_public_document_merges_the_gateways_and_the_upstreams_v1_paths()
    {
        using var anonymous = gateway.Client();
        var response = await anonymous.GetAsync("/openapi/v1.json");
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        var doc = JsonDocument.Parse(await response.Content.ReadAsStringAsync()).RootElement;

        var paths = doc.GetProperty("paths").EnumerateObject().Select(p => p.Name).ToList();
        Assert.Contains("/v1/orgs", paths);
        Assert.Contains("/v1/orgs/{id}/api-keys", paths);
        Assert.Contains("/v1/echo-things", paths);
        Assert.DoesNotContain("/internal/echo", paths);
        Assert.True(doc.GetProperty("components").GetProperty("schemas").TryGetProperty("EchoThing", out _));
        Assert.Equal("bearer", doc.GetProperty("components").GetProperty("securitySchemes").GetProperty("api_key").GetProperty("scheme").GetString());
        Assert.Contains("scheduling", doc.GetProperty("info").GetProperty("description").GetString()); // down in this fixture
    }

    [Fact]
    public async Task The_browsable_docs_are_served_without_a_key()
    {
        using var anonymous = gateway.Client();
        var response = await anonymous.GetAsync("/docs");
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        // Scalar writes the document URL relative to the app's base path.
        Assert.Contains("\"openapi/v1.json\"", await response.Content.ReadAsStringAsync());
        Assert.Equal(HttpStatusCode.OK, (await anonymous.GetAsync("/docs/scalar.js")).StatusCode);
    }

    [Fact]
    public async Task Health_is_anonymous_and_checks_the_database_and_the_broker()
    {
        using var anonymous = gateway.Client();
        Assert.Equal(HttpStatusCode.OK, (await anonymous.GetAsync("/health/live")).StatusCode);
        var ready = await anonymous.GetAsync("/health/ready");
        var body = await ready.Content.ReadAsStringAsync();
        Assert.True(ready.StatusCode == HttpStatusCode.OK, body);
        Assert.Contains("postgres", body);
        Assert.Contains("masstransit", body);
    }
}
