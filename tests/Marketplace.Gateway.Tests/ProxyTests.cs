using System.Net;
using System.Net.Http.Json;
using System.Text;
using System.Text.Json;
using Xunit;

namespace Marketplace.Gateway.Tests;

public sealed class ProxyTests(GatewayFixture gateway) : IClassFixture<GatewayFixture>
{
    private static async Task<JsonElement> EchoAsync(HttpResponseMessage response)
    {
        var text = await response.Content.ReadAsStringAsync();
        Assert.True(response.StatusCode == HttpStatusCode.OK, $"{response.StatusCode}: {text}");
        return JsonDocument.Parse(text).RootElement;
    }

    private static string? Header(JsonElement echo, string name) =>
        echo.GetProperty("headers").TryGetProperty(name, out var v) ? v.GetString() : null;

    [Fact]
    public async Task A_spoofed_identity_is_replaced_by_the_one_the_key_proves()
    {
        var (orgId, key, _) = await gateway.NewOrgAsync("renter", "provider");
        using var client = gateway.Client(key);
        using var request = new HttpRequestMessage(HttpMethod.Get, "/v1/clusters/42?x=1");
        request.Headers.Add("X-Marketplace-Org", Guid.NewGuid().ToString());
        request.Headers.Add("X-Marketplace-Roles", "admin,finance");
        request.Headers.Add("X-Marketplace-Gateway-Token", "forged");
        request.Headers.Add("X-Marketplace-Anything", "forged");

        var echo = await EchoAsync(await client.SendAsync(request));

        Assert.Equal("/v1/clusters/42", echo.GetProperty("path").GetString());
        Assert.Equal(orgId.ToString(), Header(echo, "x-marketplace-org"));
        Assert.Equal("renter,provider", Header(echo, "x-marketplace-roles"));
        Assert.Equal(GatewayFixture.InternalToken, Header(echo, "x-marketplace-gateway-token"));
        Assert.Null(Header(echo, "x-marketplace-anything"));
        Assert.Null(Header(echo, "authorization")); // the API key stays at the gateway
    }

    [Fact]
    public async Task The_idempotency_key_and_the_body_reach_the_upstream_unchanged()
    {
        var (_, key, _) = await gateway.NewOrgAsync("renter");
        using var client = gateway.Client(key);
        const string body = """{"type":"on_demand",  "accelerator_model":"h100-sxm","accelerator_count":8}""";
        using var request = new HttpRequestMessage(HttpMethod.Post, "/v1/orders") { Content = new StringContent(body, Encoding.UTF8, "application/json") };
        request.Headers.Add("Idempotency-Key", "order-7f3a");

        var echo = await EchoAsync(await client.SendAsync(request));

        Assert.Equal("POST", echo.GetProperty("method").GetString());
        Assert.Equal("order-7f3a", Header(echo, "idempotency-key"));
        Assert.Equal(body, echo.GetProperty("body").GetString());
    }

    [Fact]
    public async Task The_trace_context_reaches_the_upstream_and_the_trace_id_comes_back()
    {
        var (_, key, _) = await gateway.NewOrgAsync("renter");
        using var client = gateway.Client(key);
        const string traceId = "4bf92f3577b34da6a3ce929d0e0e4736";
        using var request = new HttpRequestMessage(HttpMethod.Get, "/v1/market/h100-sxm/prices");
        request.Headers.Add("traceparent", $"00-{traceId}-00f067aa0ba902b7-01");

        var response = await client.SendAsync(request);
        var echo = await EchoAsync(response);

        var traceparent = Header(echo, "traceparent");
        Assert.NotNull(traceparent);
        Assert.Equal(traceId, traceparent!.Split('-')[1]);
        Assert.NotEqual("00f067aa0ba902b7", traceparent.Split('-')[2]); // the gateway's own span is the parent now
        Assert.Equal(traceId, response.Headers.GetValues("X-Trace-Id").Single());
    }

    [Fact]
    public async Task Every_response_carries_a_trace_id_even_a_rejection()
    {
        using var anonymous = gateway.Client();
        var response = await anonymous.GetAsync("/v1/orders/1");
        Assert.Equal(HttpStatusCode.Unauthorized, response.StatusCode);
        Assert.Matches("^[0-9a-f]{32}$", response.Headers.GetValues("X-Trace-Id").Single());
    }

    [Theory]
    [InlineData("GET", "/v1/orders/1", "renter")]
    [InlineData("POST", "/v1/clusters", "provider")]
    [InlineData("POST", "/v1/offers", "provider")]
    [InlineData("DELETE", "/v1/offers/1", "provider")]
    [InlineData("POST", "/v1/billing/periods/2026-11/runs", "finance")]
    [InlineData("GET", "/v1/ledger/trial-balance", "finance")]
    [InlineData("GET", "/v1/statements", "provider or finance")]
    public async Task A_wrong_role_is_a_403_that_names_the_role_needed(string method, string path, string needed)
    {
        var (_, key, _) = await gateway.NewOrgAsync(method == "GET" && path.StartsWith("/v1/orders") ? "provider" : "renter");
        using var client = gateway.Client(key);
        var response = await client.SendAsync(new HttpRequestMessage(new HttpMethod(method), path) { Content = JsonContent.Create(new { }) });
        var problem = await Problem.AssertAsync(response, HttpStatusCode.Forbidden, "forbidden");
        Assert.Contains($"needs the {needed} role", problem.GetProperty("detail").GetString());
    }

    [Theory]
    [InlineData("GET", "/v1/accelerators", "/v1/accelerators")]
    [InlineData("GET", "/v1/offers", "/v1/offers")]
    [InlineData("GET", "/v1/market/h100-sxm/prices", "/v1/market/h100-sxm/prices")]
    [InlineData("GET", "/v1/invoices", "/v1/invoices")]
    public async Task Routes_open_to_the_callers_role_are_relayed(string method, string path, string upstreamPath)
    {
        var (_, key, _) = await gateway.NewOrgAsync("renter");
        using var client = gateway.Client(key);
        var echo = await EchoAsync(await client.SendAsync(new HttpRequestMessage(new HttpMethod(method), path)));
        Assert.Equal(upstreamPath, echo.GetProperty("path").GetString());
    }

    [Fact]
    public async Task An_unknown_v1_route_is_a_404_problem()
    {
        using var admin = gateway.Client(GatewayFixture.AdminKey);
        await Problem.AssertAsync(await admin.GetAsync("/v1/no-such-thing"), HttpStatusCode.NotFound, "not-found");
        await Problem.AssertAsync(await admin.PutAsync("/v1/orgs", null), HttpStatusCode.NotFound, "not-found");
    }

    [Theory]
    [InlineData("//v1/orders")] // a base URL with a trailing slash joined to "/v1/orders"
    [InlineData("/v2/orders")]
    [InlineData("/favicon.ico")]
    public async Task A_path_outside_the_api_is_a_404_problem_with_its_stable_type(string path)
    {
        var (_, key, _) = await gateway.NewOrgAsync("renter");
        using var client = gateway.Client(key);
        var response = await client.GetAsync(new Uri(client.BaseAddress!.GetLeftPart(UriPartial.Authority) + path));
        var problem = await Problem.AssertAsync(response, HttpStatusCode.NotFound, "not-found");
        Assert.Contains(path, problem.GetProperty("detail").GetString());
    }

    [Fact]
    public async Task The_stripe_webhook_is_anonymous_and_relayed_to_billing_with_its_raw_body()
    {
        using var anonymous = gateway.Client();
        const string payload = """{ "id": "evt_1", "type":"payment_intent.succeeded" }""";
        using var request = new HttpRequestMessage(HttpMethod.Post, "/v1/webhooks/stripe") { Content = new StringContent(payload, Encoding.UTF8, "application/json") };
        request.Headers.Add("Stripe-Signature", "t=1,v1=abc");
        request.Headers.Add("X-Marketplace-Org", Guid.NewGuid().ToString());

        var echo = await EchoAsync(await anonymous.SendAsync(request));

        Assert.Equal("/webhooks/stripe", echo.GetProperty("path").GetString());
        Assert.Equal(payload, echo.GetProperty("body").GetString());
        Assert.Equal("t=1,v1=abc", Header(echo, "stripe-signature"));
        Assert.Null(Header(echo, "x-marketplace-org"));
    }

    [Fact]
    public async Task An_upstream_that_is_down_is_a_503_problem()
    {
        var (_, key, _) = await gateway.NewOrgAsync("renter");
        using var client = gateway.Client(key);
        var response = await client.GetAsync("/v1/leases");
        var problem = await Problem.AssertAsync(response, HttpStatusCode.ServiceUnavailable, "upstream-unavailable");
        Assert.Contains("scheduling", problem.GetProperty("detail").GetString());
    }
}
