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
            // Tiny batches of two tiny chunks, so every run goes through the multi-batch (resumable) and multi-chunk paths.
            ["Billing:RunBatchSize"] = "4",
            ["Billing:RunChunkSize"] = "2",
            ["Billing:RunWriters"] = "2",
        });
        _ = Factory.Server; // start now: migrations, bus
        // What Billing publishes, as another service would receive it (the outbox row is gone once relayed).
        await Factory.Services.GetRequiredService<IBus>().ConnectProbeAsync("billing-tests-observer", e =>
        {
            e.Handler<HoldPlaced>(c => { Published.Add(c.Message); return Task.CompletedTask; });
            e.Handler<HoldRejected>(c => { Published.Add(c.Message); return Task.CompletedTask; });
            e.Handler<ExtensionRejected>(c => { Published.Add(c.Message); return Task.CompletedTask; });
            e.Handler<LowBalance>(c => { Published.Add(c.Message); return Task.CompletedTask; });
        });
    }

    public async Task DisposeAsync()
    {
        await Factory.DisposeAsync();
        if (_stripe is not null) await _stripe.DisposeAsync();
        await VirtualHost.DisposeAsync();
        await Database.DisposeAsync();
    }

    public HttpClient Renter(Guid org) => Factory.ClientFor(org, "renter");
    public HttpClient Provider(Guid org) => Factory.ClientFor(org, "provider");

    /// <summary>POST /v1/payout-accounts as the provider.</summary>
    public Task<HttpResponseMessage> CreatePayoutAccountAsync(Guid provider, object body, string? idempotencyKey)
    {
        var request = new HttpRequestMessage(HttpMethod.Post, "/v1/payout-accounts") { Content = JsonContent.Create(body) };
        if (idempotencyKey is not null) request.Headers.Add("Idempotency-Key", idempotencyKey);
        return Provider(provider).SendAsync(request);
    }

    /// <summary>
    /// Creates the provider's payout account and completes onboarding the way a provider would: by following the
    /// account link to the stand-in's onboarding page, after which Stripe's signed account.updated enables payouts.
    /// </summary>
    public async Task<Guid> OnboardAsync(Guid provider)
    {
        var response = await CreatePayoutAccountAsync(provider, new { country = "SG", email = "payouts@provider.example" }, Guid.NewGuid().ToString());
        response.EnsureSuccessStatusCode();
        var account = await response.Content.ReadFromJsonAsync<JsonElement>(Json);
        var id = account.GetProperty("id").GetGuid();
        using var browser = new HttpClient(new HttpClientHandler { AllowAutoRedirect = false });
        var page = await browser.GetAsync(account.GetProperty("onboarding").GetProperty("url").GetString());
        Assert.Equal(System.Net.HttpStatusCode.Redirect, page.StatusCode);
        await Eventually.True(async () => (await Provider(provider).GetFromJsonAsync<JsonElement>($"/v1/payout-accounts/{id}", Json))
            .GetProperty("payouts_enabled").GetBoolean(), what: "account.updated enabling payouts");
        return id;
    }
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

    public static LeaseScheduled Lease(Guid renter, Guid provider, long pricePerHour, int count, DateTimeOffset start, TimeSpan length,
        string currency = "CNY", string slaLevel = "standard", bool interruptible = false) =>
        new(Guid.NewGuid(), Guid.NewGuid(), Guid.NewGuid(), renter, provider, "h100-sxm", count, start, start + length,
            new Money(pricePerHour, currency), [], DateTimeOffset.UtcNow) { SlaLevel = slaLevel, Interruptible = interruptible };

    public Task<long> HoldCount(Guid lease, string status) =>
        ScalarAsync("SELECT count(*) FROM holds WHERE lease_id = @lease AND status = @status", new { lease, status });

    /// <summary>Publishes the lease and waits for its hold.</summary>
    public async Task<LeaseScheduled> BookAsync(LeaseScheduled lease)
    {
        await Publish(lease);
        await Eventually.True(async () => await HoldCount(lease.LeaseId, "pending") == 1, what: "the hold");
        return lease;
    }

    /// <summary>A booked lease that started at its start, went down for the given intervals and ended after <paramref name="used"/>.</summary>
    public async Task RunAsync(LeaseScheduled lease, TimeSpan used, string status = "completed", string cause = "platform",
        params (TimeSpan From, TimeSpan To, string Cause)[] downtime)
    {
        await Publish(new LeaseStarted(lease.LeaseId, lease.OrderId, lease.Start));
        foreach (var d in downtime)
        {
            await Publish(new LeaseInterrupted(lease.LeaseId, lease.OrderId, "node lost", d.Cause, lease.Start + d.From));
            await Publish(new LeaseResumed(lease.LeaseId, lease.OrderId, lease.Start + d.To));
        }
        await Publish(new LeaseEnded(lease.LeaseId, lease.OrderId, status, "ended", cause, lease.Start + used));
        await Eventually.True(async () => await ScalarAsync("""
            SELECT count(*) FROM usage WHERE lease_id = @LeaseId AND started_at IS NOT NULL AND ended_at IS NOT NULL
            """, new { lease.LeaseId }) == 1 && await ScalarAsync(
            "SELECT count(*) FROM downtime WHERE lease_id = @LeaseId AND ended_at IS NOT NULL AND cause <> ''", new { lease.LeaseId }) == downtime.Length,
            what: "usage and downtime");
    }

    public async Task<JsonElement> RunPeriodAsync(string period)
    {
        var response = await Finance().PostAsync($"/v1/billing/periods/{period}/runs", null);
        response.EnsureSuccessStatusCode();
        return await response.Content.ReadFromJsonAsync<JsonElement>(Json);
    }

    public static JsonElement InvoiceOf(JsonElement run, Guid renter) =>
        run.GetProperty("invoices").EnumerateArray().Single(i => i.GetProperty("renter_org_id").GetGuid() == renter);

    public static JsonElement StatementOf(JsonElement run, Guid provider) =>
        run.GetProperty("statements").EnumerateArray().Single(s => s.GetProperty("provider_org_id").GetGuid() == provider);

    public static long Amount(JsonElement e, string property) => e.GetProperty(property).GetProperty("amount").GetInt64();

    /// <summary>Every currency sums to zero, and every wallet balance the database keeps (wallet_balances) is its entries' sum.</summary>
    public async Task<bool> LedgerBalancedAsync() =>
        await ScalarAsync("SELECT count(*) FROM (SELECT currency FROM ledger_entries GROUP BY currency HAVING SUM(amount) <> 0) x") == 0
        && await ScalarAsync("""
            SELECT count(*) FROM (SELECT account, currency, SUM(amount) AS balance FROM ledger_entries WHERE account LIKE 'renter:%'
                                  GROUP BY account, currency) e
            FULL JOIN wallet_balances b USING (account, currency)
            WHERE b.balance IS DISTINCT FROM e.balance
            """) == 0;

    private static JsonSerializerOptions NewJson()
    {
        var o = new JsonSerializerOptions(JsonSerializerDefaults.Web);
        ServiceDefaultsExtensions.ConfigureApiJson(o);
        return o;
    }
}

public sealed class AutoConfirmingStripe() : BillingFixture(autoConfirm: true);

public sealed class ManualStripe() : BillingFixture(autoConfirm: false);
