using System.Net;
using System.Net.Http.Headers;
using System.Net.Http.Json;
using System.Net.Sockets;
using System.Text.Json;
using Marketplace.Testing;
using Xunit;

namespace Marketplace.Gateway.Tests;

/// <summary>The gateway in-process on a fresh database and vhost, with an echo upstream for listings, bidding and billing,
/// and scheduling pointed at a closed port (an upstream that is down).</summary>
public class GatewayFixture : IAsyncLifetime
{
    public const string AdminKey = "mk_bootstrap_0123456789abcdefghijklmnopqrstuvwxyz";
    public const string InternalToken = "test-gateway-token";

    public TestDatabase Database { get; private set; } = null!;
    public TestVirtualHost VirtualHost { get; private set; } = null!;
    public EchoUpstream Upstream { get; private set; } = null!;
    public ServiceFactory<Program> Factory { get; private set; } = null!;

    protected virtual IDictionary<string, string?> ExtraSettings => new Dictionary<string, string?>
    {
        ["Gateway:RateLimit:PermitsPerSecond"] = "1000",
        ["Gateway:RateLimit:Burst"] = "1000",
    };

    public async Task InitializeAsync()
    {
        Database = await TestDatabase.CreateAsync();
        VirtualHost = await TestVirtualHost.CreateAsync();
        Upstream = await EchoUpstream.StartAsync();
        var settings = new Dictionary<string, string?>
        {
            ["Gateway:BootstrapAdminKey"] = AdminKey,
            ["Gateway:InternalToken"] = InternalToken,
            ["Gateway:Upstreams:listings"] = Upstream.Url,
            ["Gateway:Upstreams:bidding"] = Upstream.Url,
            ["Gateway:Upstreams:billing"] = Upstream.Url,
            ["Gateway:Upstreams:scheduling"] = $"http://127.0.0.1:{ClosedPort()}",
        };
        foreach (var (k, v) in ExtraSettings) settings[k] = v;
        Factory = new ServiceFactory<Program>("gateway", Database, VirtualHost, settings: settings);
        if (RealServer) Factory.UseKestrel(0); // a loopback port: what Kestrel itself does with a request can be tested
        Factory.CreateClient().Dispose(); // start it: migrations and the bootstrap key
    }

    /// <summary>Run the gateway on Kestrel rather than the in-memory test server.</summary>
    protected virtual bool RealServer => false;

    public HttpClient Client(string? apiKey = null)
    {
        var client = Factory.CreateClient();
        if (apiKey is not null) client.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue("Bearer", apiKey);
        return client;
    }

    /// <summary>Creates an org with the roles through the admin key and returns it with a fresh key of its own.</summary>
    public async Task<(Guid OrgId, string Key, Guid KeyId)> NewOrgAsync(params string[] roles)
    {
        using var admin = Client(AdminKey);
        var created = await admin.PostAsJsonAsync("/v1/orgs", new { name = "org " + Guid.NewGuid().ToString("N")[..6], roles });
        Assert.Equal(HttpStatusCode.Created, created.StatusCode);
        var orgId = (await created.Content.ReadFromJsonAsync<JsonElement>()).GetProperty("id").GetGuid();
        var keyResponse = await admin.PostAsJsonAsync($"/v1/orgs/{orgId}/api-keys", new { name = "test" });
        Assert.Equal(HttpStatusCode.Created, keyResponse.StatusCode);
        var key = await keyResponse.Content.ReadFromJsonAsync<JsonElement>();
        return (orgId, key.GetProperty("key").GetString()!, key.GetProperty("id").GetGuid());
    }

    public async Task DisposeAsync()
    {
        await Factory.DisposeAsync();
        await Upstream.DisposeAsync();
        await VirtualHost.DisposeAsync();
        await Database.DisposeAsync();
    }

    private static int ClosedPort()
    {
        using var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        return ((IPEndPoint)listener.LocalEndpoint).Port;
    }
}

/// <summary>A bucket of one request that refills once a second: the second of a burst is rejected.</summary>
public sealed class TinyRateLimitFixture : GatewayFixture
{
    protected override IDictionary<string, string?> ExtraSettings => new Dictionary<string, string?>
    {
        ["Gateway:RateLimit:PermitsPerSecond"] = "1",
        ["Gateway:RateLimit:Burst"] = "1",
    };
}

/// <summary>The gateway on Kestrel, on a free loopback port.</summary>
public sealed class KestrelGatewayFixture : GatewayFixture
{
    protected override bool RealServer => true;

    public Uri Address
    {
        get
        {
            using var client = Factory.CreateClient();
            return client.BaseAddress!;
        }
    }
}
