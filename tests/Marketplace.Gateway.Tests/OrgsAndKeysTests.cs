using System.Net;
using System.Net.Http.Json;
using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using Dapper;
using Marketplace.Testing;
using Xunit;

namespace Marketplace.Gateway.Tests;

public sealed class OrgsAndKeysTests(GatewayFixture gateway) : IClassFixture<GatewayFixture>
{
    [Fact]
    public async Task The_bootstrap_admin_creates_an_org_and_a_key_that_authenticates_as_that_org()
    {
        using var admin = gateway.Client(GatewayFixture.AdminKey);
        var created = await admin.PostAsJsonAsync("/v1/orgs", new { name = "  Acme GPUs ", roles = new[] { "provider", "renter" } });
        Assert.Equal(HttpStatusCode.Created, created.StatusCode);
        var org = await created.Content.ReadFromJsonAsync<JsonElement>();
        var orgId = org.GetProperty("id").GetGuid();
        Assert.Equal("Acme GPUs", org.GetProperty("name").GetString());
        Assert.Equal(["provider", "renter"], org.GetProperty("roles").EnumerateArray().Select(r => r.GetString()));
        Assert.Equal($"/v1/orgs/{orgId}", created.Headers.Location?.ToString());

        var keyResponse = await admin.PostAsJsonAsync($"/v1/orgs/{orgId}/api-keys", new { name = "ci" });
        Assert.Equal(HttpStatusCode.Created, keyResponse.StatusCode);
        var key = await keyResponse.Content.ReadFromJsonAsync<JsonElement>();
        Assert.Equal("ci", key.GetProperty("name").GetString());
        Assert.StartsWith($"mk_{key.GetProperty("prefix").GetString()}_", key.GetProperty("key").GetString());
        Assert.True(key.TryGetProperty("created_at", out _));

        using var own = gateway.Client(key.GetProperty("key").GetString());
        var read = await own.GetFromJsonAsync<JsonElement>($"/v1/orgs/{orgId}");
        Assert.Equal(orgId, read.GetProperty("id").GetGuid());
        Assert.Equal(org.GetProperty("created_at").GetString(), read.GetProperty("created_at").GetString());
    }

    [Fact]
    public async Task A_key_is_shown_once_and_stored_only_as_the_hash_of_its_secret()
    {
        var (orgId, key, keyId) = await gateway.NewOrgAsync("renter");

        await using var db = gateway.Database.OpenAdmin();
        var rows = (await db.QueryAsync("SELECT * FROM gateway.api_keys WHERE id = @keyId", new { keyId })).Cast<IDictionary<string, object?>>().ToList();
        var row = Assert.Single(rows);
        var secret = key[(key.IndexOf('_', 3) + 1)..];
        Assert.DoesNotContain(row.Values, v => v?.ToString()?.Contains(secret, StringComparison.Ordinal) == true);
        Assert.DoesNotContain(row.Values, v => v is byte[] b && Encoding.UTF8.GetString(b).Contains(secret, StringComparison.Ordinal));
        Assert.Equal(SHA256.HashData(Encoding.UTF8.GetBytes(secret)), (byte[])row["secret_hash"]!);

        using var own = gateway.Client(key);
        var org = await own.GetStringAsync($"/v1/orgs/{orgId}");
        Assert.DoesNotContain(secret, org, StringComparison.Ordinal);
    }

    [Fact]
    public async Task A_request_without_a_key_is_401_with_a_bearer_challenge()
    {
        using var anonymous = gateway.Client();
        var response = await anonymous.GetAsync("/v1/accelerators");
        await Problem.AssertAsync(response, HttpStatusCode.Unauthorized, "unauthenticated");
        Assert.Equal("Bearer", response.Headers.WwwAuthenticate.Single().Scheme);
        Assert.Equal(HttpStatusCode.Unauthorized, (await anonymous.PostAsJsonAsync("/v1/orgs", new { name = "x", roles = new[] { "renter" } })).StatusCode);
    }

    [Theory]
    [InlineData("mk_nosuchprefix_c2VjcmV0c2VjcmV0c2VjcmV0")]
    [InlineData("not-an-api-key")]
    [InlineData("mk_bootstrap_wrong-secret")]
    public async Task An_unknown_or_wrong_key_is_401(string key)
    {
        using var client = gateway.Client(key);
        var response = await client.GetAsync("/v1/accelerators");
        await Problem.AssertAsync(response, HttpStatusCode.Unauthorized, "unauthenticated");
        Assert.Contains("invalid_token", response.Headers.WwwAuthenticate.ToString());
    }

    [Fact]
    public async Task A_revoked_key_is_rejected_at_once()
    {
        var (orgId, key, keyId) = await gateway.NewOrgAsync("renter");
        using var own = gateway.Client(key);
        Assert.Equal(HttpStatusCode.OK, (await own.GetAsync($"/v1/orgs/{orgId}")).StatusCode);

        Assert.Equal(HttpStatusCode.NoContent, (await own.DeleteAsync($"/v1/orgs/{orgId}/api-keys/{keyId}")).StatusCode);

        await Problem.AssertAsync(await own.GetAsync($"/v1/orgs/{orgId}"), HttpStatusCode.Unauthorized, "unauthenticated");
        await Problem.AssertAsync(await own.GetAsync("/v1/accelerators"), HttpStatusCode.Unauthorized, "unauthenticated");
        await using var db = gateway.Database.OpenAdmin();
        Assert.NotNull(await db.ExecuteScalarAsync<DateTime?>("SELECT revoked_at FROM gateway.api_keys WHERE id = @keyId", new { keyId }));
    }

    [Fact]
    public async Task Another_orgs_org_and_keys_are_404()
    {
        var (orgA, keyA, _) = await gateway.NewOrgAsync("renter");
        var (orgB, keyB, keyIdB) = await gateway.NewOrgAsync("renter");
        using var a = gateway.Client(keyA);

        await Problem.AssertAsync(await a.GetAsync($"/v1/orgs/{orgB}"), HttpStatusCode.NotFound, "not-found");
        await Problem.AssertAsync(await a.PostAsJsonAsync($"/v1/orgs/{orgB}/api-keys", new { name = "mine now" }), HttpStatusCode.NotFound, "not-found");
        await Problem.AssertAsync(await a.DeleteAsync($"/v1/orgs/{orgB}/api-keys/{keyIdB}"), HttpStatusCode.NotFound, "not-found");
        // B's key, addressed through A's own org, is not A's either.
        await Problem.AssertAsync(await a.DeleteAsync($"/v1/orgs/{orgA}/api-keys/{keyIdB}"), HttpStatusCode.NotFound, "not-found");

        using var b = gateway.Client(keyB);
        Assert.Equal(HttpStatusCode.OK, (await b.GetAsync($"/v1/orgs/{orgB}")).StatusCode);
        await using var db = gateway.Database.OpenAdmin();
        Assert.Equal(1, await db.ExecuteScalarAsync<int>("SELECT count(*) FROM gateway.api_keys WHERE org_id = @orgB", new { orgB }));
    }

    [Fact]
    public async Task Only_an_admin_creates_orgs()
    {
        var (_, key, _) = await gateway.NewOrgAsync("renter", "provider", "finance");
        using var client = gateway.Client(key);
        var problem = await Problem.AssertAsync(await client.PostAsJsonAsync("/v1/orgs", new { name = "x", roles = new[] { "admin" } }),
            HttpStatusCode.Forbidden, "forbidden");
        Assert.Contains("admin", problem.GetProperty("detail").GetString());
    }

    [Theory]
    [InlineData("""{"name": "", "roles": ["renter"]}""", "name")]
    [InlineData("""{"name": "x", "roles": []}""", "roles")]
    [InlineData("""{"name": "x"}""", "roles")]
    [InlineData("""{"name": "x", "roles": ["renter", "superuser"]}""", "roles")]
    public async Task Bad_org_input_is_a_400_problem_and_writes_nothing(string body, string field)
    {
        using var admin = gateway.Client(GatewayFixture.AdminKey);
        await using var db = gateway.Database.OpenAdmin();
        var before = await db.ExecuteScalarAsync<long>("SELECT count(*) FROM gateway.orgs");

        var response = await admin.PostAsync("/v1/orgs", new StringContent(body, Encoding.UTF8, "application/json"));

        var problem = await Problem.AssertAsync(response, HttpStatusCode.BadRequest, "validation");
        Assert.True(problem.GetProperty("errors").TryGetProperty(field, out _));
        Assert.Equal(before, await db.ExecuteScalarAsync<long>("SELECT count(*) FROM gateway.orgs"));
    }

    [Fact]
    public async Task A_key_without_a_name_is_a_400_problem_and_writes_nothing()
    {
        var (orgId, key, _) = await gateway.NewOrgAsync("renter");
        using var own = gateway.Client(key);

        await Problem.AssertAsync(await own.PostAsJsonAsync($"/v1/orgs/{orgId}/api-keys", new { name = " " }), HttpStatusCode.BadRequest, "validation");
        await Problem.AssertAsync(await own.PostAsync($"/v1/orgs/{orgId}/api-keys", new StringContent("{not json", Encoding.UTF8, "application/json")),
            HttpStatusCode.BadRequest, "malformed-request");

        await using var db = gateway.Database.OpenAdmin();
        Assert.Equal(1, await db.ExecuteScalarAsync<int>("SELECT count(*) FROM gateway.api_keys WHERE org_id = @orgId", new { orgId }));
    }

    [Theory]
    [InlineData("application/x-www-form-urlencoded")] // what curl -d sends unless told otherwise
    [InlineData("text/plain")]
    [InlineData(null)]
    public async Task A_body_that_is_not_declared_json_is_a_415_problem_that_says_so_not_a_missing_route(string? contentType)
    {
        var (orgId, key, _) = await gateway.NewOrgAsync("renter");
        using var admin = gateway.Client(GatewayFixture.AdminKey);
        using var own = gateway.Client(key);
        await using var db = gateway.Database.OpenAdmin();
        var orgs = await db.ExecuteScalarAsync<long>("SELECT count(*) FROM gateway.orgs");
        HttpContent Body(string json)
        {
            var content = new ByteArrayContent(Encoding.UTF8.GetBytes(json));
            if (contentType is not null) content.Headers.ContentType = new System.Net.Http.Headers.MediaTypeHeaderValue(contentType);
            return content;
        }

        // It used to fall through to the catch-all: "There is no POST /v1/orgs in the public API".
        var org = await Problem.AssertAsync(await admin.PostAsync("/v1/orgs", Body("""{"name": "x", "roles": ["renter"]}""")),
            HttpStatusCode.UnsupportedMediaType, "malformed-request");
        Assert.Contains("JSON media type", org.GetProperty("detail").GetString());
        var apiKey = await Problem.AssertAsync(await own.PostAsync($"/v1/orgs/{orgId}/api-keys", Body("""{"name": "ci"}""")),
            HttpStatusCode.UnsupportedMediaType, "malformed-request");
        Assert.Contains("JSON media type", apiKey.GetProperty("detail").GetString());

        Assert.Equal(orgs, await db.ExecuteScalarAsync<long>("SELECT count(*) FROM gateway.orgs"));
        Assert.Equal(1, await db.ExecuteScalarAsync<int>("SELECT count(*) FROM gateway.api_keys WHERE org_id = @orgId", new { orgId }));
    }

    [Fact]
    public async Task The_bootstrap_key_is_registered_once_however_many_instances_start()
    {
        await using var second = new ServiceFactory<Program>("gateway", gateway.Database, gateway.VirtualHost, settings: new Dictionary<string, string?>
        {
            ["Gateway:BootstrapAdminKey"] = GatewayFixture.AdminKey,
            ["Gateway:Upstreams:listings"] = gateway.Upstream.Url,
            ["Gateway:Upstreams:bidding"] = gateway.Upstream.Url,
            ["Gateway:Upstreams:billing"] = gateway.Upstream.Url,
            ["Gateway:Upstreams:scheduling"] = gateway.Upstream.Url,
        });
        using var client = second.CreateClient();
        client.DefaultRequestHeaders.Authorization = new("Bearer", GatewayFixture.AdminKey);
        Assert.Equal(HttpStatusCode.OK, (await client.GetAsync("/v1/orgs/00000000-0000-0000-0000-000000000001")).StatusCode);

        await using var db = gateway.Database.OpenAdmin();
        Assert.Equal(1, await db.ExecuteScalarAsync<int>("SELECT count(*) FROM gateway.orgs WHERE name = 'platform'"));
        Assert.Equal(1, await db.ExecuteScalarAsync<int>("SELECT count(*) FROM gateway.api_keys WHERE prefix = 'bootstrap'"));
    }
}
