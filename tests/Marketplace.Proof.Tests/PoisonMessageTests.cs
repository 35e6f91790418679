using System.Net.Http.Headers;
using System.Net.Http.Json;
using System.Reflection;
using System.Text;
using System.Text.Json.Nodes;
using Marketplace.Testing;
using Xunit;
using Xunit.Abstractions;

namespace Marketplace.Proof.Tests;

/// <summary>
/// Messages no service can use, put straight into every consumer queue through RabbitMQ's management API: each ends in
/// that queue's <c>_error</c> queue (not lost, not retried forever), and the marketplace keeps serving.
/// </summary>
[Collection(ProofCollection.Name)]
public sealed class PoisonMessageTests(ProofFixture fixture, ITestOutputHelper output)
{
    private static readonly HttpClient Management = CreateManagement();

    private static HttpClient CreateManagement()
    {
        var http = new HttpClient { BaseAddress = new Uri($"http://127.0.0.1:{TestServers.RabbitManagementPort}/api/") };
        http.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue("Basic",
            Convert.ToBase64String(Encoding.UTF8.GetBytes($"{TestServers.RabbitUser}:{TestServers.RabbitPassword}")));
        return http;
    }

    private string VHost => Uri.EscapeDataString(fixture.Stack.VirtualHost.Name);

    private async Task PublishAsync(string queue, string payload, string contentType, string? messageType = null)
    {
        var properties = new JsonObject { ["content_type"] = contentType, ["message_id"] = Guid.NewGuid().ToString(), ["delivery_mode"] = 2 };
        if (messageType is not null) properties["type"] = messageType;
        using var response = await Management.PostAsJsonAsync($"exchanges/{VHost}/amq.default/publish", new JsonObject
        {
            ["properties"] = properties, ["routing_key"] = queue, ["payload"] = payload, ["payload_encoding"] = "string",
        });
        var body = await response.Content.ReadAsStringAsync();
        Assert.True(response.IsSuccessStatusCode && body.Contains("\"routed\":true"), $"publish to {queue}: {body}");
    }

    /// <summary>The message types a consumer queue receives: the exchanges bound, through its own exchange, to it.</summary>
    private async Task<List<string>> MessageTypesAsync(string queue)
    {
        var bindings = await Management.GetFromJsonAsync<JsonArray>($"exchanges/{VHost}/{Uri.EscapeDataString(queue)}/bindings/destination") ?? [];
        return bindings.Select(b => (string)b!["source"]!).Where(s => s.Contains(':')).ToList();
    }

    /// <summary>A MassTransit envelope of the right message type whose every field has the wrong JSON type.</summary>
    private static string WrongTypes(string exchange)
    {
        var typeName = exchange.Replace(':', '.');
        var type = typeof(Marketplace.Contracts.Money).Assembly.GetType(typeName);
        var message = new JsonObject();
        foreach (var p in type?.GetProperties(BindingFlags.Public | BindingFlags.Instance) ?? [])
            message[char.ToLowerInvariant(p.Name[0]) + p.Name[1..]] = new JsonObject { ["wrong"] = new JsonArray(1, 2) };
        if (message.Count == 0) message["orderId"] = new JsonArray();
        return new JsonObject
        {
            ["messageId"] = Guid.NewGuid().ToString(),
            ["messageType"] = new JsonArray($"urn:message:{exchange}"),
            ["message"] = message,
        }.ToJsonString();
    }

    [Fact]
    public async Task Poison_messages_in_every_queue_go_to_its_error_queue_and_the_market_keeps_working()
    {
        var depths = await fixture.Stack.VirtualHost.QueueDepthsAsync();
        var queues = depths.Keys.Where(q => !q.EndsWith("_error", StringComparison.Ordinal) && !q.EndsWith("_skipped", StringComparison.Ordinal)
                                            && !q.Contains("_bus_", StringComparison.Ordinal)).Order().ToList();
        output.WriteLine("consumer queues: " + string.Join(", ", queues));
        Assert.True(queues.Count >= 8, $"only {queues.Count} consumer queues: {string.Join(", ", queues)}");

        var expected = new Dictionary<string, long>();
        foreach (var queue in queues)
        {
            var types = await MessageTypesAsync(queue);
            await PublishAsync(queue, "{\"messageId\": \"not even json", "application/vnd.masstransit+json");
            await PublishAsync(queue, "<xml>no</xml>", "application/xml");
            foreach (var type in types) await PublishAsync(queue, WrongTypes(type), "application/vnd.masstransit+json");
            expected[queue] = 2 + types.Count;
        }

        // The management API refreshes queue counts every few seconds; the deadline is generous for the retries.
        var missing = new List<string>();
        try
        {
            await Eventually.True(async () =>
            {
                var now = await fixture.Stack.VirtualHost.QueueDepthsAsync();
                missing = expected.Where(e => now.GetValueOrDefault(e.Key + "_error") - depths.GetValueOrDefault(e.Key + "_error") < e.Value)
                    .Select(e => $"{e.Key}: {now.GetValueOrDefault(e.Key + "_error")} in _error (expected {e.Value}), {now.GetValueOrDefault(e.Key + "_skipped")} in _skipped, {now.GetValueOrDefault(e.Key)} still queued").ToList();
                return missing.Count == 0;
            }, TimeSpan.FromSeconds(90), "every poison message to reach its _error queue");
        }
        catch (TimeoutException)
        {
            Assert.Fail("poison messages not in _error:\n" + string.Join("\n", missing));
        }

        // Still working: an order is matched, placed and held for, through every consumer on the way.
        var order = await Api.PostJsonAsync(fixture.A.Renter, "/v1/orders", new
        {
            type = "on_demand", accelerator_model = World.Model, accelerator_count = 1, duration_seconds = ProofFixture.LeaseSeconds,
            max_price_per_hour = new { amount = 100, currency = World.Currency },
        }, Guid.NewGuid().ToString());
        var filled = await Eventually.Get(() => Api.GetJsonAsync(fixture.A.Renter, $"/v1/orders/{order["id"]}"),
            o => (string?)o["status"] is "filled" or "cancelled", TimeSpan.FromSeconds(30), "the order after the poison");
        Assert.Equal("filled", (string?)filled["status"]);
        using var cancel = await fixture.A.Renter.PostAsync($"/v1/leases/{filled["lease_id"]}/cancel", JsonContent.Create(new { }));
        Assert.True(cancel.IsSuccessStatusCode, await cancel.Content.ReadAsStringAsync());
    }
}
