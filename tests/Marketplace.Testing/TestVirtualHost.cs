using System.Collections.Concurrent;
using System.Net.Http.Headers;
using System.Net.Http.Json;
using System.Text;
using System.Text.Json;

namespace Marketplace.Testing;

/// <summary>A RabbitMQ virtual host of its own on the real broker, made and removed through the management API.</summary>
public sealed class TestVirtualHost : IAsyncDisposable
{
    private static readonly ConcurrentDictionary<int, HttpClient> Clients = new();
    private readonly HttpClient _http;

    public string Name { get; }
    public ServerEndpoints Servers { get; }

    private TestVirtualHost(string name, ServerEndpoints servers)
    {
        Name = name;
        Servers = servers;
        _http = ClientFor(servers);
    }

    private static HttpClient ClientFor(ServerEndpoints servers) => Clients.GetOrAdd(servers.RabbitManagementPort, port =>
    {
        var http = new HttpClient { BaseAddress = new Uri($"http://127.0.0.1:{port}/api/") };
        http.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue("Basic",
            Convert.ToBase64String(Encoding.UTF8.GetBytes($"{TestServers.RabbitUser}:{TestServers.RabbitPassword}")));
        return http;
    });

    /// <summary>On the shared broker, or on <paramref name="servers"/> (a private pair).</summary>
    public static async Task<TestVirtualHost> CreateAsync(ServerEndpoints? servers = null)
    {
        servers ??= TestServers.Shared;
        var http = ClientFor(servers);
        var name = "t-" + Guid.NewGuid().ToString("N")[..16];
        (await http.PutAsync($"vhosts/{name}", null)).EnsureSuccessStatusCode();
        (await http.PutAsJsonAsync($"permissions/{name}/{TestServers.RabbitUser}",
            new { configure = ".*", write = ".*", read = ".*" })).EnsureSuccessStatusCode();
        return new TestVirtualHost(name, servers);
    }

    /// <summary>Queues of this vhost with their ready message counts (for example the <c>_error</c> queues).</summary>
    public async Task<IReadOnlyDictionary<string, long>> QueueDepthsAsync()
    {
        var queues = await _http.GetFromJsonAsync<JsonElement[]>($"queues/{Name}") ?? [];
        // The management API can list a queue twice while it is being declared: keep the larger count.
        return queues
            .GroupBy(q => q.GetProperty("name").GetString()!)
            .ToDictionary(g => g.Key, g => g.Max(q => q.TryGetProperty("messages", out var m) && m.ValueKind == JsonValueKind.Number ? m.GetInt64() : 0L));
    }

    public sealed record QueueInfo(string Name, long Messages, long Consumers);

    /// <summary>Every queue of this vhost with its message and consumer counts.</summary>
    public async Task<IReadOnlyList<QueueInfo>> QueuesAsync()
    {
        var queues = await _http.GetFromJsonAsync<JsonElement[]>($"queues/{Name}") ?? [];
        static long Count(JsonElement q, string name) => q.TryGetProperty(name, out var v) && v.ValueKind == JsonValueKind.Number ? v.GetInt64() : 0L;
        return queues.Select(q => new QueueInfo(q.GetProperty("name").GetString()!, Count(q, "messages"), Count(q, "consumers"))).ToList();
    }

    /// <summary>Closes every client connection to this vhost (the broker side of a network blip); returns how many.</summary>
    public async Task<int> CloseConnectionsAsync()
    {
        var connections = await _http.GetFromJsonAsync<JsonElement[]>($"vhosts/{Name}/connections") ?? [];
        foreach (var c in connections)
            await _http.DeleteAsync($"connections/{Uri.EscapeDataString(c.GetProperty("name").GetString()!)}");
        return connections.Length;
    }

    /// <summary>
    /// The first <paramref name="count"/> messages of a queue, left in place (fetched and requeued), as the management API
    /// shows them: headers (MassTransit's fault reason among them) and the body.
    /// </summary>
    public async Task<IReadOnlyList<JsonElement>> PeekAsync(string queue, int count = 3)
    {
        using var response = await _http.PostAsJsonAsync($"queues/{Name}/{Uri.EscapeDataString(queue)}/get",
            new { count, ackmode = "ack_requeue_true", encoding = "auto", truncate = 2000 });
        response.EnsureSuccessStatusCode();
        return await response.Content.ReadFromJsonAsync<JsonElement[]>() ?? [];
    }

    /// <summary>How many client connections this vhost has now.</summary>
    public async Task<int> ConnectionCountAsync() =>
        (await _http.GetFromJsonAsync<JsonElement[]>($"vhosts/{Name}/connections") ?? []).Length;

    /// <summary>
    /// Deletes the vhost. A broker that is no longer there (a test's own broker that a failed step left down) has nothing
    /// to delete: its refusal must not replace the exception that failed the test, which says what went wrong.
    /// </summary>
    public async ValueTask DisposeAsync()
    {
        try { await _http.DeleteAsync($"vhosts/{Name}"); }
        catch (HttpRequestException e) when (e.HttpRequestError == HttpRequestError.ConnectionError) { }
    }
}
