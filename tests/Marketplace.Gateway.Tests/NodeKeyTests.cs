using System.Net;
using System.Net.Http.Json;
using System.Text.Json;
using Xunit;

namespace Marketplace.Gateway.Tests;

public sealed class NodeKeyTests(GatewayFixture gateway) : IClassFixture<GatewayFixture>
{
    private async Task<(Guid OrgId, string OrgKey, Guid NodeId, string NodeKey, Guid NodeKeyId)> ProviderWithNodeKeyAsync()
    {
        var (orgId, orgKey, _) = await gateway.NewOrgAsync("provider");
        var nodeId = Guid.NewGuid();
        using var own = gateway.Client(orgKey);
        var response = await own.PostAsJsonAsync($"/v1/orgs/{orgId}/api-keys", new { name = "agent gpu-01", node_id = nodeId });
        Assert.Equal(HttpStatusCode.Created, response.StatusCode);
        var key = await response.Content.ReadFromJsonAsync<JsonElement>();
        Assert.Equal(nodeId, key.GetProperty("node_id").GetGuid());
        return (orgId, orgKey, nodeId, key.GetProperty("key").GetString()!, key.GetProperty("id").GetGuid());
    }

    private static async Task<JsonElement> EchoAsync(HttpResponseMessage response)
    {
        var text = await response.Content.ReadAsStringAsync();
        Assert.True(response.StatusCode == HttpStatusCode.OK, $"{response.StatusCode}: {text}");
        return JsonDocument.Parse(text).RootElement;
    }

    private static string? Header(JsonElement echo, string name) =>
        echo.GetProperty("headers").TryGetProperty(name, out var v) ? v.GetString() : null;

    [Fact]
    public async Task A_node_key_reaches_the_agent_routes_with_its_node_and_a_forged_node_header_is_replaced()
    {
        var (orgId, _, nodeId, nodeKey, _) = await ProviderWithNodeKeyAsync();
        using var agent = gateway.Client(nodeKey);
        using var request = new HttpRequestMessage(HttpMethod.Post, "/v1/agent/heartbeats") { Content = JsonContent.Create(new { healthy = true }) };
        request.Headers.Add("X-Marketplace-Node", Guid.NewGuid().ToString());

        var echo = await EchoAsync(await agent.SendAsync(request));

        Assert.Equal("/v1/agent/heartbeats", echo.GetProperty("path").GetString());
        Assert.Equal(nodeId.ToString(), Header(echo, "x-marketplace-node"));
        Assert.Equal(orgId.ToString(), Header(echo, "x-marketplace-org"));
        Assert.Equal("provider", Header(echo, "x-marketplace-roles"));
    }

    [Fact]
    public async Task An_ordinary_key_never_carries_a_node_even_when_the_client_sends_one()
    {
        var (_, orgKey, _, _, _) = await ProviderWithNodeKeyAsync();
        using var client = gateway.Client(orgKey);
        using var request = new HttpRequestMessage(HttpMethod.Get, "/v1/clusters");
        request.Headers.Add("X-Marketplace-Node", Guid.NewGuid().ToString());

        var echo = await EchoAsync(await client.SendAsync(request));

        Assert.Null(Header(echo, "x-marketplace-node"));
    }

    [Theory]
    [InlineData("GET", "/v1/clusters")]
    [InlineData("POST", "/v1/offers")]
    [InlineData("GET", "/v1/offers")]
    [InlineData("GET", "/v1/accelerators")]
    [InlineData("POST", "/v1/orgs/{org}/api-keys")]
    [InlineData("GET", "/v1/orgs/{org}")]
    [InlineData("GET", "/v1/no-such-thing")]
    public async Task A_node_key_is_forbidden_everywhere_but_the_agent_routes(string method, string path)
    {
        var (orgId, _, _, nodeKey, _) = await ProviderWithNodeKeyAsync();
        using var agent = gateway.Client(nodeKey);

        var response = await agent.SendAsync(new HttpRequestMessage(new HttpMethod(method), path.Replace("{org}", orgId.ToString()))
            { Content = JsonContent.Create(new { name = "escalate" }) });

        var problem = await Problem.AssertAsync(response, HttpStatusCode.Forbidden, "forbidden");
        Assert.Contains("scoped to one node", problem.GetProperty("detail").GetString());
    }

    [Fact]
    public async Task An_ordinary_provider_key_is_refused_on_agent_routes_with_how_to_get_a_node_key()
    {
        var (_, orgKey, _, _, _) = await ProviderWithNodeKeyAsync();
        using var client = gateway.Client(orgKey);

        var response = await client.PostAsJsonAsync("/v1/agent/heartbeats", new { healthy = true });

        var problem = await Problem.AssertAsync(response, HttpStatusCode.Forbidden, "forbidden");
        Assert.Contains("node_id", problem.GetProperty("detail").GetString());
    }

    [Fact]
    public async Task Agent_assignments_go_to_scheduling_and_the_rest_of_the_agent_routes_to_listings()
    {
        var (_, _, _, nodeKey, _) = await ProviderWithNodeKeyAsync();
        using var agent = gateway.Client(nodeKey);

        // Scheduling is the upstream that is down in this fixture; listings is the echo.
        var assignments = await agent.GetAsync("/v1/agent/assignments");
        var problem = await Problem.AssertAsync(assignments, HttpStatusCode.ServiceUnavailable, "upstream-unavailable");
        Assert.Contains("scheduling", problem.GetProperty("detail").GetString());
        await EchoAsync(await agent.GetAsync("/v1/agent/nodes/self"));
    }

    [Fact]
    public async Task A_revoked_node_key_stops_working_at_once()
    {
        var (orgId, orgKey, _, nodeKey, keyId) = await ProviderWithNodeKeyAsync();
        using var agent = gateway.Client(nodeKey);
        await EchoAsync(await agent.PostAsJsonAsync("/v1/agent/heartbeats", new { }));

        using var own = gateway.Client(orgKey);
        Assert.Equal(HttpStatusCode.NoContent, (await own.DeleteAsync($"/v1/orgs/{orgId}/api-keys/{keyId}")).StatusCode);

        await Problem.AssertAsync(await agent.PostAsJsonAsync("/v1/agent/heartbeats", new { }), HttpStatusCode.Unauthorized, "unauthenticated");
    }

    [Fact]
    public async Task Only_a_provider_org_gets_node_keys_and_another_org_cannot_make_one_for_you()
    {
        var (renterOrg, renterKey, _) = await gateway.NewOrgAsync("renter");
        using var renter = gateway.Client(renterKey);
        var refused = await renter.PostAsJsonAsync($"/v1/orgs/{renterOrg}/api-keys", new { name = "agent", node_id = Guid.NewGuid() });
        var problem = await Problem.AssertAsync(refused, HttpStatusCode.BadRequest, "validation");
        Assert.Contains("node_id", problem.GetProperty("detail").GetString());

        var (providerOrg, _, _) = await gateway.NewOrgAsync("provider");
        await Problem.AssertAsync(await renter.PostAsJsonAsync($"/v1/orgs/{providerOrg}/api-keys", new { name = "agent", node_id = Guid.NewGuid() }),
            HttpStatusCode.NotFound, "not-found");
        await Problem.AssertAsync(await renter.PostAsJsonAsync($"/v1/orgs/{renterOrg}/api-keys", new { name = "agent", node_id = Guid.Empty }),
            HttpStatusCode.BadRequest, "validation");
    }

    [Theory]
    [InlineData("POST", "/v1/accelerators")]
    [InlineData("PATCH", "/v1/accelerators/h100-sxm")]
    public async Task Changing_the_catalog_needs_the_admin_role(string method, string path)
    {
        var (_, key, _) = await gateway.NewOrgAsync("provider");
        using var client = gateway.Client(key);
        var response = await client.SendAsync(new HttpRequestMessage(new HttpMethod(method), path) { Content = JsonContent.Create(new { }) });
        var problem = await Problem.AssertAsync(response, HttpStatusCode.Forbidden, "forbidden");
        Assert.Contains("needs the admin role", problem.GetProperty("detail").GetString());

        using var admin = gateway.Client(GatewayFixture.AdminKey);
        var relayed = await EchoAsync(await admin.SendAsync(new HttpRequestMessage(new HttpMethod(method), path) { Content = JsonContent.Create(new { }) }));
        Assert.Equal(path, relayed.GetProperty("path").GetString());
    }
}
