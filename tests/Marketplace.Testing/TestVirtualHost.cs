using System.Net.Http.Headers;
using System.Net.Http.Json;
using System.Text;
using System.Text.Json;

namespace Marketplace.Testing;

/// <summary>A RabbitMQ virtual host of its own on the real broker, made and removed through the management API.</summary>
public sealed class TestVirtualHost : IAsyncDisposable
{
    private static readonly HttpClient Http = CreateClient();

    public string Name { get; }

    private TestVirtualHost(string name) => Name = name;

    private static HttpClient CreateClient()
    {
        var http = new HttpClient { BaseAddress = new Uri($"http://127.0.0.1:{TestServers.RabbitManagementPort}/api/") };
        http.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue("Basic",
            Convert.ToBase64String(Encoding.UTF8.GetBytes($"{TestServers.RabbitUser}:{TestServers.RabbitPassword}")));
        return http;
    }

    public static async Task<TestVirtualHost> CreateAsync()
    {
        var name = "t-" + Guid.NewGuid().ToString("N")[..16];
        (await Http.PutAsync($"vhosts/{name}", null)).EnsureSuccessStatusCode();
        (await Http.PutAsJsonAsync($"permissions/{name}/{TestServers.RabbitUser}",
            new { configure = ".*", write = ".*", read = ".*" })).EnsureSuccessStatusCode();
        return new TestVirtualHost(name);
    }

    /// <summary>Queues of this vhost with their ready message counts (for example the <c>_error</c> queues).</summary>
    public async Task<IReadOnlyDictionary<string, long>> QueueDepthsAsync()
    {
        var queues = await Http.GetFromJsonAsync<JsonElement[]>($"queues/{Name}") ?? [];
        // The management API can list a queue twice while it is being declared: keep the larger count.
        return queues
            .GroupBy(q => q.GetProperty("name").GetString()!)
            .ToDictionary(g => g.Key, g => g.Max(q => q.TryGetProperty("messages", out var m) && m.ValueKind == JsonValueKind.Number ? m.GetInt64() : 0L));
    }

    /// <summary>Closes every client connection to this vhost (the broker side of a network blip).</summary>
    public async Task CloseConnectionsAsync()
    {
        var connections = await Http.GetFromJsonAsync<JsonElement[]>($"vhosts/{Name}/connections") ?? [];
        foreach (var c in connections)
            await Http.DeleteAsync($"connections/{Uri.EscapeDataString(c.GetProperty("name").GetString()!)}");
    }

    public async ValueTask DisposeAsync() => await Http.DeleteAsync($"vhosts/{Name}");
}
