using System.Collections.Concurrent;
using System.Net.Http.Json;
using System.Text.Json;
using Dapper;
using Marketplace.Contracts;
using Marketplace.ServiceDefaults.Hosting;
using Marketplace.Testing;
using MassTransit;
using Microsoft.Extensions.DependencyInjection;

namespace Marketplace.Bidding.Tests.Api;

/// <summary>
/// Bidding in-process on the real PostgreSQL and RabbitMQ, with its own database and vhost, plus a receive endpoint
/// that records every OrderMatched the outbox relay publishes. Tests isolate themselves by using their own model name.
/// </summary>
public sealed class BiddingFixture : IAsyncLifetime
{
    public static readonly JsonSerializerOptions Json = CreateJson();

    public TestDatabase Database { get; private set; } = null!;
    public TestVirtualHost VirtualHost { get; private set; } = null!;
    public ServiceFactory<Program> Factory { get; private set; } = null!;
    public ConcurrentQueue<OrderMatched> Relayed { get; } = new();
    public ConcurrentQueue<PreemptionRequested> Preemptions { get; } = new();
    public ConcurrentQueue<PriceTicked> Ticks { get; } = new();

    public IBus Bus => Factory.Services.GetRequiredService<IBus>();

    private HostReceiveEndpointHandle? _probe;

    public async Task InitializeAsync()
    {
        Database = await TestDatabase.CreateAsync();
        VirtualHost = await TestVirtualHost.CreateAsync();
        Factory = new ServiceFactory<Program>("bidding", Database, VirtualHost,
            settings: new Dictionary<string, string?> { ["Market:MinLeaseSeconds"] = "60" });
        var health = Factory.CreateClient();
        // Ready = database reachable and the bus connected with its queues bound, so published messages are not lost.
        await Eventually.True(async () => (await health.GetAsync("/health/ready")).IsSuccessStatusCode, what: "bidding ready");
        _probe = await Bus.ConnectProbeAsync("bidding-tests-order-matched", e =>
        {
            e.Handler<OrderMatched>(ctx =>
            {
                Relayed.Enqueue(ctx.Message);
                return Task.CompletedTask;
            });
            e.Handler<PreemptionRequested>(ctx =>
            {
                Preemptions.Enqueue(ctx.Message);
                return Task.CompletedTask;
            });
            e.Handler<PriceTicked>(ctx =>
            {
                Ticks.Enqueue(ctx.Message);
                return Task.CompletedTask;
            });
        });
    }

    public async Task DisposeAsync()
    {
        if (_probe is not null) await _probe.StopAsync();
        await Factory.DisposeAsync();
        await VirtualHost.DisposeAsync();
        await Database.DisposeAsync();
    }

    public HttpClient Renter(Guid org) => Factory.ClientFor(org, "renter");

    public static string NewModel() => "gpu-" + Guid.NewGuid().ToString("N")[..8];

    /// <summary>Publishes an offer as Listings would and waits until Bidding has its copy.</summary>
    public async Task<OfferPublished> PublishOfferAsync(string model, long ask = 235, int count = 8, string currency = "CNY",
        string region = "cn-east", string jurisdiction = "CN", int minLeaseSeconds = 60, DateTimeOffset? windowStart = null,
        DateTimeOffset? windowEnd = null, bool interruptible = false, long? floor = null, int noticeSeconds = 0, Guid? offerId = null,
        IReadOnlyList<Guid>? slotIds = null)
    {
        var now = DateTimeOffset.UtcNow;
        var offer = new OfferPublished(offerId ?? Guid.NewGuid(), Guid.NewGuid(), Guid.NewGuid(), [Guid.NewGuid()], model, region, jurisdiction,
            count, windowStart ?? now.AddHours(-1), windowEnd ?? now.AddDays(1), new Money(ask, currency), minLeaseSeconds, interruptible, now)
        {
            InterruptibleFloorPerHour = floor is { } f ? new Money(f, currency) : null,
            PreemptionNoticeSeconds = noticeSeconds,
            SlaLevel = "gold",
            SlotIds = slotIds,
        };
        await Bus.Publish(offer);
        await Eventually.True(async () => await ScalarAsync<long>(
            "SELECT count(*) FROM bidding.offers WHERE offer_id = @id AND ask_amount = @ask AND accelerator_count = @count",
            new { id = offer.OfferId, ask, count }) == 1, what: $"offer {offer.OfferId} copied");
        return offer;
    }

    public async Task<T> ScalarAsync<T>(string sql, object? args = null)
    {
        await using var c = Database.OpenAdmin();
        return await c.ExecuteScalarAsync<T>(sql, args) ?? throw new InvalidOperationException("no value");
    }

    public static object OrderBody(string model, int count = 1, long max = 300, string currency = "CNY", string? region = null,
        string timeInForce = "gtc", long duration = 3600, string type = "on_demand", DateTimeOffset? earliestStart = null,
        DateTimeOffset? latestEnd = null, DateTimeOffset? expiresAt = null) => new
    {
        type,
        earliest_start = earliestStart,
        latest_end = latestEnd,
        expires_at = expiresAt,
        accelerator_model = model,
        accelerator_count = count,
        duration_seconds = duration,
        max_price_per_hour = new { amount = max, currency },
        region,
        time_in_force = timeInForce,
    };

    public static async Task<HttpResponseMessage> PostOrderAsync(HttpClient client, object body, string? key = null)
    {
        using var request = new HttpRequestMessage(HttpMethod.Post, "/v1/orders") { Content = JsonContent.Create(body, options: Json) };
        request.Headers.Add("Idempotency-Key", key ?? Guid.NewGuid().ToString());
        return await client.SendAsync(request);
    }

    public static async Task<JsonElement> ReadAsync(HttpResponseMessage response) =>
        await response.Content.ReadFromJsonAsync<JsonElement>(Json);

    /// <summary>Places a reserved order for exactly [<paramref name="start"/>, <paramref name="end"/>); returns its id and the answer.</summary>
    public static async Task<(Guid OrderId, JsonElement Order)> ReservedAsync(HttpClient renter, string model, DateTimeOffset start, DateTimeOffset end)
    {
        var order = await ReadAsync(await PostOrderAsync(renter, OrderBody(model, type: "reserved", duration: (long)(end - start).TotalSeconds,
            earliestStart: start, latestEnd: end)));
        return (Guid.Parse(order.GetProperty("id").GetString()!), order);
    }

    public static async Task<JsonElement> GetOrderAsync(HttpClient client, string id) =>
        await (await client.GetAsync($"/v1/orders/{id}")).Content.ReadFromJsonAsync<JsonElement>(Json);

    private static JsonSerializerOptions CreateJson()
    {
        var o = new JsonSerializerOptions(JsonSerializerDefaults.Web);
        ServiceDefaultsExtensions.ConfigureApiJson(o);
        return o;
    }
}
