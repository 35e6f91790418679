using Xunit;
using System.Net;
using System.Net.Http.Json;
using System.Text;
using System.Text.Json.Nodes;
using Dapper;
using Marketplace.Testing;
using static Marketplace.EndToEnd.Tests.ThinPathTests;

namespace Marketplace.EndToEnd.Tests;

/// <summary>Authentication, roles, ownership and bad input on the thin path, through the gateway.</summary>
[Collection(StackCollection.Name)]
public sealed class AccessAndInputTests(StackFixture fixture) : IAsyncLifetime
{
    private HttpClient _admin = null!;
    private World _a = null!;
    private World _b = null!;

    /// <summary>One provider + renter + their objects; two of them, so each can try the other's.</summary>
    private sealed record World(HttpClient Provider, HttpClient Renter, HttpClient Finance, string ClusterId, string NodeId, string OfferId, string OrderId);

    public async Task InitializeAsync()
    {
        _admin = fixture.Stack.Client(MarketplaceStack.AdminKey);
        _a = await CreateWorldAsync("a");
        _b = await CreateWorldAsync("b");
    }

    public Task DisposeAsync() => Task.CompletedTask;

    private async Task<HttpClient> OrgClientAsync(string name, string role)
    {
        var org = await PostJson(_admin, "/v1/orgs", new { name, roles = new[] { role } });
        var key = await PostJson(_admin, $"/v1/orgs/{org["id"]}/api-keys", new { name = "test" });
        return fixture.Stack.Client((string)key["key"]!);
    }

    private async Task<World> CreateWorldAsync(string tag)
    {
        var provider = await OrgClientAsync($"provider {tag}", "provider");
        var renter = await OrgClientAsync($"renter {tag}", "renter");
        var finance = await OrgClientAsync($"finance {tag}", "finance");
        var cluster = await PostJson(provider, "/v1/clusters", new { name = $"c-{tag}", region = "eu-west", jurisdiction = "DE" });
        var node = await PostJson(provider, $"/v1/clusters/{cluster["id"]}/nodes", new { hostname = $"n-{tag}", accelerator_model = "mi300x", accelerator_count = 8 });
        var now = DateTimeOffset.UtcNow;
        var offer = await PostJson(provider, "/v1/offers", new
        {
            cluster_id = cluster["id"], node_ids = new[] { node["id"] }, window_start = now, window_end = now.AddHours(3),
            ask_per_hour = new { amount = 9000, currency = "EUR" }, min_lease_seconds = StackFixture.LeaseSeconds, interruptible_allowed = false,
        });
        using var order = new HttpRequestMessage(HttpMethod.Post, "/v1/orders")
        {
            // Below the ask: the order rests in the book, so it is an object of the renter's that stays put.
            Content = JsonContent.Create(new
            {
                type = "on_demand", accelerator_model = "mi300x", accelerator_count = 1, duration_seconds = StackFixture.LeaseSeconds,
                max_price_per_hour = new { amount = 100, currency = "EUR" },
            }),
        };
        order.Headers.Add("Idempotency-Key", Guid.NewGuid().ToString());
        using var placed = await renter.SendAsync(order);
        var orderJson = JsonNode.Parse(await placed.Content.ReadAsStringAsync())!;
        Assert.True(placed.IsSuccessStatusCode, orderJson.ToJsonString());
        return new World(provider, renter, finance, (string)cluster["id"]!, (string)node["id"]!, (string)offer["id"]!, (string)orderJson["id"]!);
    }

    public static TheoryData<string, string> ThinPathRoutes => new()
    {
        { "GET", "/v1/accelerators" }, { "POST", "/v1/clusters" }, { "GET", $"/v1/clusters/{Guid.NewGuid()}" },
        { "POST", $"/v1/clusters/{Guid.NewGuid()}/nodes" }, { "POST", "/v1/offers" }, { "GET", "/v1/offers" },
        { "POST", "/v1/orders" }, { "GET", $"/v1/orders/{Guid.NewGuid()}" }, { "GET", "/v1/leases" },
        { "GET", "/v1/wallet" }, { "POST", "/v1/wallet/top-ups" }, { "POST", "/v1/billing/periods/2026-11/runs" },
        { "GET", "/v1/invoices" }, { "GET", "/v1/statements" }, { "POST", "/v1/orgs" },
    };

    [Theory]
    [MemberData(nameof(ThinPathRoutes))]
    public async Task Every_route_without_an_api_key_is_401(string method, string path)
    {
        using var anonymous = fixture.Stack.Client();
        using var response = await anonymous.SendAsync(new HttpRequestMessage(new HttpMethod(method), path) { Content = JsonContent.Create(new { }) });
        Assert.Equal(HttpStatusCode.Unauthorized, response.StatusCode);
        Assert.Equal("application/problem+json", response.Content.Headers.ContentType?.MediaType);

        using var forged = fixture.Stack.Client("mk_forged_key_that_does_not_exist");
        using var response2 = await forged.SendAsync(new HttpRequestMessage(new HttpMethod(method), path) { Content = JsonContent.Create(new { }) });
        Assert.Equal(HttpStatusCode.Unauthorized, response2.StatusCode);
    }

    [Fact]
    public async Task The_wrong_role_is_403()
    {
        await AssertStatus(HttpStatusCode.Forbidden, _a.Renter, HttpMethod.Post, "/v1/clusters", new { name = "x", region = "eu-west", jurisdiction = "DE" });
        await AssertStatus(HttpStatusCode.Forbidden, _a.Provider, HttpMethod.Post, "/v1/orders", new { }, idempotencyKey: "k");
        await AssertStatus(HttpStatusCode.Forbidden, _a.Renter, HttpMethod.Post, "/v1/billing/periods/2026-11/runs", new { });
        await AssertStatus(HttpStatusCode.Forbidden, _a.Provider, HttpMethod.Get, "/v1/wallet");
        await AssertStatus(HttpStatusCode.Forbidden, _a.Renter, HttpMethod.Post, "/v1/orgs", new { name = "x", roles = new[] { "renter" } });
        await AssertStatus(HttpStatusCode.Forbidden, _a.Finance, HttpMethod.Post, "/v1/offers", new { });
    }

    [Fact]
    public async Task Another_orgs_objects_are_404()
    {
        await AssertStatus(HttpStatusCode.NotFound, _b.Provider, HttpMethod.Get, $"/v1/clusters/{_a.ClusterId}");
        await AssertStatus(HttpStatusCode.NotFound, _b.Provider, HttpMethod.Post, $"/v1/clusters/{_a.ClusterId}/nodes",
            new { hostname = "intruder", accelerator_model = "mi300x", accelerator_count = 8 });
        await AssertStatus(HttpStatusCode.NotFound, _b.Provider, HttpMethod.Delete, $"/v1/offers/{_a.OfferId}");
        await AssertStatus(HttpStatusCode.NotFound, _b.Renter, HttpMethod.Get, $"/v1/orders/{_a.OrderId}");
        await AssertStatus(HttpStatusCode.NotFound, _b.Renter, HttpMethod.Delete, $"/v1/orders/{_a.OrderId}");
        // The owner still sees its objects, unchanged.
        var order = await (await _a.Renter.GetAsync($"/v1/orders/{_a.OrderId}")).Content.ReadFromJsonAsync<JsonNode>();
        Assert.Equal("open", (string?)order!["status"]);
        using var cluster = await _a.Provider.GetAsync($"/v1/clusters/{_a.ClusterId}");
        Assert.Equal(HttpStatusCode.OK, cluster.StatusCode);
    }

    [Fact]
    public async Task Bad_input_on_every_thin_path_route_is_a_4xx_problem_and_writes_nothing()
    {
        var now = DateTimeOffset.UtcNow;
        var cases = new List<(HttpClient Client, HttpMethod Method, string Path, object? Body, string? Raw, bool IdempotencyKey)>
        {
            (_admin, HttpMethod.Post, "/v1/orgs", new { name = "", roles = new[] { "renter" } }, null, false),
            (_admin, HttpMethod.Post, "/v1/orgs", new { name = "x", roles = new[] { "emperor" } }, null, false),
            (_admin, HttpMethod.Post, "/v1/orgs", null, "{\"name\": ", false),
            (_admin, HttpMethod.Post, $"/v1/orgs/{Guid.NewGuid()}/api-keys", new { name = "k" }, null, false),
            (_a.Provider, HttpMethod.Post, "/v1/clusters", new { name = "c", region = "", jurisdiction = "DE" }, null, false),
            (_a.Provider, HttpMethod.Post, "/v1/clusters", null, "{\"name\": 5, \"region\": [], \"jurisdiction\": {}}", false),
            (_a.Provider, HttpMethod.Post, $"/v1/clusters/{_a.ClusterId}/nodes", new { hostname = "n", accelerator_model = "h900-imaginary", accelerator_count = 8 }, null, false),
            (_a.Provider, HttpMethod.Post, $"/v1/clusters/{_a.ClusterId}/nodes", new { hostname = "n", accelerator_model = "mi300x", accelerator_count = 0 }, null, false),
            (_a.Provider, HttpMethod.Post, $"/v1/clusters/{_a.ClusterId}/nodes", new { hostname = "n", accelerator_model = "mi300x", accelerator_count = 100000 }, null, false),
            (_a.Provider, HttpMethod.Post, "/v1/offers", new { cluster_id = _a.ClusterId, node_ids = new[] { _a.NodeId }, window_start = now.AddHours(2), window_end = now.AddHours(1),
                ask_per_hour = new { amount = 100, currency = "EUR" }, min_lease_seconds = 3600, interruptible_allowed = false }, null, false),
            (_a.Provider, HttpMethod.Post, "/v1/offers", new { cluster_id = _a.ClusterId, node_ids = new[] { _a.NodeId }, window_start = now, window_end = now.AddHours(1),
                ask_per_hour = new { amount = -5, currency = "EUR" }, min_lease_seconds = 3600, interruptible_allowed = false }, null, false),
            (_a.Provider, HttpMethod.Post, "/v1/offers", new { cluster_id = _a.ClusterId, node_ids = new[] { _b.NodeId }, window_start = now, window_end = now.AddHours(1),
                ask_per_hour = new { amount = 100, currency = "EUR" }, min_lease_seconds = 3600, interruptible_allowed = false }, null, false),
            (_a.Renter, HttpMethod.Post, "/v1/orders", new { type = "on_demand", accelerator_model = "mi300x", accelerator_count = 1, duration_seconds = 3600,
                max_price_per_hour = new { amount = 100, currency = "EUR" } }, null, false),
            (_a.Renter, HttpMethod.Post, "/v1/orders", new { type = "on_demand", accelerator_model = "mi300x", accelerator_count = 0, duration_seconds = 3600,
                max_price_per_hour = new { amount = 100, currency = "EUR" } }, null, true),
            (_a.Renter, HttpMethod.Post, "/v1/orders", new { type = "on_demand", accelerator_model = "mi300x", accelerator_count = 1, duration_seconds = -60,
                max_price_per_hour = new { amount = 100, currency = "EUR" } }, null, true),
            (_a.Renter, HttpMethod.Post, "/v1/orders", new { type = "on_demand", accelerator_model = "mi300x", accelerator_count = 1, duration_seconds = 3600,
                max_price_per_hour = new { amount = 100, currency = "euro" } }, null, true),
            (_a.Renter, HttpMethod.Post, "/v1/orders", null, "not json at all", true),
            (_a.Renter, HttpMethod.Delete, $"/v1/orders/{Guid.NewGuid()}", null, null, false),
            (_a.Renter, HttpMethod.Get, $"/v1/leases/{Guid.NewGuid()}", null, null, false),
            (_a.Renter, HttpMethod.Post, $"/v1/leases/{Guid.NewGuid()}/cancel", new { }, null, false),
            (_a.Renter, HttpMethod.Post, "/v1/wallet/top-ups", new { amount = new { amount = 0, currency = "EUR" } }, null, true),
            (_a.Renter, HttpMethod.Post, "/v1/wallet/top-ups", new { amount = new { amount = 1000, currency = "EUR" } }, null, false),
            (_a.Finance, HttpMethod.Post, "/v1/billing/periods/last-tuesday/runs", new { }, null, false),
            (_a.Renter, HttpMethod.Get, $"/v1/invoices/{Guid.NewGuid()}", null, null, false),
        };

        await QuiesceAsync();
        var before = await SnapshotAsync();
        foreach (var (client, method, path, body, raw, withKey) in cases)
        {
            using var request = new HttpRequestMessage(method, path);
            if (body is not null) request.Content = JsonContent.Create(body);
            if (raw is not null) request.Content = new StringContent(raw, Encoding.UTF8, "application/json");
            if (withKey) request.Headers.Add("Idempotency-Key", Guid.NewGuid().ToString());
            using var response = await client.SendAsync(request);
            var text = await response.Content.ReadAsStringAsync();
            Assert.True((int)response.StatusCode is >= 400 and < 500, $"{method} {path} → {(int)response.StatusCode}: {text}");
            Assert.True(response.Content.Headers.ContentType?.MediaType == "application/problem+json", $"{method} {path} → not problem+json: {text}");
            var problem = JsonNode.Parse(text)!;
            Assert.False(string.IsNullOrEmpty((string?)problem["type"]), $"{method} {path}: problem without type: {text}");
            Assert.False(string.IsNullOrEmpty((string?)problem["detail"] ?? (string?)problem["title"]), $"{method} {path}: problem without detail: {text}");
        }
        await Task.Delay(500);
        Assert.Equal(before, await SnapshotAsync());
    }

    private async Task QuiesceAsync()
    {
        using var db = fixture.Stack.Database.OpenAdmin();
        foreach (var schema in new[] { "gateway", "listings", "bidding", "scheduling", "billing" })
            await Eventually.True(async () => await db.ExecuteScalarAsync<long>($"SELECT count(*) FROM {schema}.outbox") == 0);
        await Task.Delay(1000);
    }

    /// <summary>Row counts of every business table of every service (the messaging bookkeeping left out).</summary>
    private async Task<string> SnapshotAsync()
    {
        using var db = fixture.Stack.Database.OpenAdmin();
        var tables = await db.QueryAsync<(string Schema, string Table)>("""
            SELECT table_schema, table_name FROM information_schema.tables
            WHERE table_schema IN ('gateway','listings','bidding','scheduling','billing') AND table_type = 'BASE TABLE'
              AND table_name NOT IN ('outbox','inbox','due_work','schema_history')
            ORDER BY 1, 2
            """);
        var counts = new List<string>();
        foreach (var (schema, table) in tables)
            counts.Add($"{schema}.{table}={await db.ExecuteScalarAsync<long>($"SELECT count(*) FROM {schema}.\"{table}\"")}");
        return string.Join("\n", counts);
    }

    private static async Task AssertStatus(HttpStatusCode expected, HttpClient client, HttpMethod method, string path, object? body = null, string? idempotencyKey = null)
    {
        using var request = new HttpRequestMessage(method, path);
        if (body is not null) request.Content = JsonContent.Create(body);
        if (idempotencyKey is not null) request.Headers.Add("Idempotency-Key", idempotencyKey);
        using var response = await client.SendAsync(request);
        var text = await response.Content.ReadAsStringAsync();
        Assert.True(expected == response.StatusCode, $"{method} {path}: expected {(int)expected}, got {(int)response.StatusCode}: {text}");
        Assert.Equal("application/problem+json", response.Content.Headers.ContentType?.MediaType);
    }
}
