using System.Collections.Concurrent;
using System.Net.Http.Json;
using System.Text.Json;
using Dapper;
using Marketplace.Contracts;
using Marketplace.ServiceDefaults.Hosting;
using Marketplace.StripeFake;
using Marketplace.Testing;
using MassTransit;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.TestHost;
using Microsoft.Extensions.DependencyInjection;

namespace Marketplace.Billing.Tests;

/// <summary>
/// Billing in-process on the real PostgreSQL and RabbitMQ, talking through Stripe.net to the Stripe stand-in, which
/// runs on a real loopback port and delivers its webhooks straight into Billing's test server.
/// </summary>
public abstract class BillingFixture(bool autoConfirm) : IAsyncLifetime
{
    public const string WebhookSecret = "whsec_billing_tests";
    public static readonly JsonSerializerOptions Json = NewJson();

    private WebApplication? _stripe;
    public ConcurrentBag<object> Published { get; } = [];
    public TestDatabase Database { get; private set; } = null!;
    public TestVirtualHost VirtualHost { get; private set; } = null!;
    public ServiceFactory<Program> Factory { get; private set; } = null!;

    public async Task InitializeAsync()
    {
        Database = await TestDatabase.CreateAsync();
        VirtualHost = await TestVirtualHost.CreateAsync();
        _stripe = StripeFakeApp.Build([], b =>
        {
            b.WebHost.UseUrls("http://127.0.0.1:0");
            b.Configuration["StripeFake:AutoConfirm"] = autoConfirm.ToString();
            b.Configuration["StripeFake:WebhookSecret"] = WebhookSecret;
            b.Configuration["StripeFake:WebhookUrl"] = "http://billing/webhooks/stripe";
            b.Services.AddHttpClient(StripeFakeApp.WebhookClient).ConfigurePrimaryHttpMessageHandler(() => Factory.Server.CreateHandler());
        });
        await _stripe.StartAsync();
        Factory = new ServiceFactory<Program>("billing", Database, VirtualHost, settings: new Dictionary<string, string?>
        {
            ["Stripe:ApiBase"] = _stripe.Urls.Single(),
            ["Stripe:ApiKey"] = "sk_test_billing_tests",
            ["Stripe:WebhookSecret"] = WebhookSecret,
            ["Billing:PlatformFeeBasisPoints"] = "1000",
        });
        _ = Factory.Server; // start now: migrations, bus
        // What Billing publishes, as another service would receive it (the outbox row is gone once relayed).
        var observer = Factory.Services.GetRequiredService<IBus>().ConnectReceiveEndpoint("billing-tests-observer", e =>
        {
            e.Handler<HoldPlaced>(c => { Published.Add(c.Message); return Task.CompletedTask; });
            e.Handler<HoldRejected>(c => { Published.Add(c.Message); return Task.CompletedTask; });
        });
        await observer.Ready;
    }

    public async Task DisposeAsync()
    {
        await Factory.DisposeAsync();
        if (_stripe is not null) await _stripe.DisposeAsync();
        await VirtualHost.DisposeAsync();
        await Database.DisposeAsync();
    }

    public HttpClient Renter(Guid org) => Factory.ClientFor(org, "renter");
    public HttpClient Finance() => Factory.ClientFor(Guid.NewGuid(), "finance");

    public Task Publish<T>(T message) where T : class => Factory.Services.GetRequiredService<IBus>().Publish(message);

    public async Task<long> ScalarAsync(string sql, object? args = null)
    {
        await using var c = Database.OpenAdmin();
        return await c.ExecuteScalarAsync<long>("SET search_path = billing; " + sql, args);
    }

    public async Task<(long Available, long Held)> WalletAsync(Guid org, string currency = "CNY")
    {
        var wallet = await Renter(org).GetFromJsonAsync<JsonElement>("/v1/wallet", Json);
        foreach (var b in wallet.GetProperty("balances").EnumerateArray())
            if (b.GetProperty("currency").GetString() == currency)
                return (b.GetProperty("available").GetProperty("amount").GetInt64(), b.GetProperty("held").GetProperty("amount").GetInt64());
        return (0, 0);
    }

    /// <summary>Tops up through the API; the stand-in confirms and its signed webhook credits the wallet.</summary>
    public async Task FundAsync(Guid org, long amount, string currency = "CNY")
    {
        var before = await WalletAsync(org, currency);
        using var request = new HttpRequestMessage(HttpMethod.Post, "/v1/wallet/top-ups")
        {
            Content = JsonContent.Create(new { amount = new { amount, currency } }),
        };
        request.Headers.Add("Idempotency-Key", Guid.NewGuid().ToString());
        (await Renter(org).SendAsync(request)).EnsureSuccessStatusCode();
        await Eventually.True(async () => (await WalletAsync(org, currency)).Available == before.Available + amount, what: "the top-up credit");
    }

    private static JsonSerializerOptions NewJson()
    {
        var o = new JsonSerializerOptions(JsonSerializerDefaults.Web);
        ServiceDefaultsExtensions.ConfigureApiJson(o);
        return o;
    }
}

public sealed class AutoConfirmingStripe() : BillingFixture(autoConfirm: true);

public sealed class ManualStripe() : BillingFixture(autoConfirm: false);
