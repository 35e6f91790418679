using System.Net;
using System.Net.Http.Json;
using System.Text;
using System.Text.Json;
using Marketplace.StripeFake;

namespace Marketplace.Billing.Tests;

/// <summary>The stand-in does not confirm here: each test sends Stripe's webhook itself, signed or forged.</summary>
public sealed class WebhookAndTopUpTests(ManualStripe fx) : IClassFixture<ManualStripe>
{
    private sealed record TopUp(Guid Id, string Status, long Amount, string PaymentIntentId, string ClientSecret);

    private async Task<TopUp> StartTopUpAsync(Guid org, long amount, string key)
    {
        var response = await SendTopUp(org, key, new { amount = new { amount, currency = "CNY" } });
        Assert.Equal(HttpStatusCode.Created, response.StatusCode);
        var body = await response.Content.ReadFromJsonAsync<JsonElement>();
        return new TopUp(body.GetProperty("id").GetGuid(), body.GetProperty("status").GetString()!,
            body.GetProperty("amount").GetProperty("amount").GetInt64(), body.GetProperty("payment_intent_id").GetString()!,
            body.GetProperty("client_secret").GetString()!);
    }

    private Task<HttpResponseMessage> SendTopUp(Guid org, string? key, object body)
    {
        var request = new HttpRequestMessage(HttpMethod.Post, "/v1/wallet/top-ups") { Content = JsonContent.Create(body) };
        if (key is not null) request.Headers.Add("Idempotency-Key", key);
        return fx.Renter(org).SendAsync(request);
    }

    private static string SucceededEvent(string eventId, TopUp topUp, Guid org) => JsonSerializer.Serialize(new Dictionary<string, object?>
    {
        ["id"] = eventId,
        ["object"] = "event",
        ["api_version"] = Stripe.StripeConfiguration.ApiVersion,
        ["created"] = DateTimeOffset.UtcNow.ToUnixTimeSeconds(),
        ["livemode"] = false,
        ["pending_webhooks"] = 1,
        ["type"] = "payment_intent.succeeded",
        ["data"] = new Dictionary<string, object?>
        {
            ["object"] = new Dictionary<string, object?>
            {
                ["id"] = topUp.PaymentIntentId, ["object"] = "payment_intent", ["amount"] = topUp.Amount,
                ["amount_received"] = topUp.Amount, ["currency"] = "cny", ["status"] = "succeeded", ["livemode"] = false,
                ["metadata"] = new Dictionary<string, string> { ["top_up_id"] = topUp.Id.ToString(), ["renter_org_id"] = org.ToString() },
            },
        },
    });

    private Task<HttpResponseMessage> PostWebhook(string payload, string? signature)
    {
        var request = new HttpRequestMessage(HttpMethod.Post, "/webhooks/stripe") { Content = new StringContent(payload, Encoding.UTF8, "application/json") };
        if (signature is not null) request.Headers.Add("Stripe-Signature", signature);
        return fx.Factory.CreateClient().SendAsync(request);
    }

    private static string Sign(string payload, string secret = BillingFixture.WebhookSecret, DateTimeOffset? at = null) =>
        StripeFakeApp.SignatureHeader(payload, secret, (at ?? DateTimeOffset.UtcNow).ToUnixTimeSeconds());

    [Fact]
    public async Task A_top_up_creates_a_payment_intent_and_credits_nothing_until_stripe_confirms()
    {
        var org = Guid.NewGuid();
        var topUp = await StartTopUpAsync(org, 10_000, "k-" + Guid.NewGuid());

        Assert.Equal("pending", topUp.Status);
        Assert.StartsWith("pi_", topUp.PaymentIntentId);
        Assert.StartsWith(topUp.PaymentIntentId + "_secret_", topUp.ClientSecret);
        Assert.Equal((0, 0), await fx.WalletAsync(org));
    }

    [Fact]
    public async Task A_signed_succeeded_event_credits_the_wallet_once_even_when_replayed()
    {
        var org = Guid.NewGuid();
        var key = "k-" + Guid.NewGuid();
        var topUp = await StartTopUpAsync(org, 25_000, key);
        var payload = SucceededEvent("evt_" + Guid.NewGuid().ToString("N"), topUp, org);

        var first = await PostWebhook(payload, Sign(payload));
        var replay = await PostWebhook(payload, Sign(payload));
        var sameTopUpNewEvent = SucceededEvent("evt_" + Guid.NewGuid().ToString("N"), topUp, org);
        var third = await PostWebhook(sameTopUpNewEvent, Sign(sameTopUpNewEvent));

        Assert.Equal(HttpStatusCode.OK, first.StatusCode);
        Assert.False((await first.Content.ReadFromJsonAsync<JsonElement>()).GetProperty("duplicate").GetBoolean());
        Assert.Equal(HttpStatusCode.OK, replay.StatusCode);
        Assert.True((await replay.Content.ReadFromJsonAsync<JsonElement>()).GetProperty("duplicate").GetBoolean());
        Assert.Equal(HttpStatusCode.OK, third.StatusCode);
        Assert.Equal((25_000, 0), await fx.WalletAsync(org));
        Assert.Equal(1, await fx.ScalarAsync("SELECT count(*) FROM ledger_transactions WHERE idempotency_key = @k", new { k = $"topup:{topUp.Id}" }));

        // The same Idempotency-Key now answers with the settled top-up.
        var again = await SendTopUp(org, key, new { amount = new { amount = 25_000, currency = "CNY" } });
        Assert.Equal(HttpStatusCode.OK, again.StatusCode);
        var body = await again.Content.ReadFromJsonAsync<JsonElement>();
        Assert.Equal(topUp.Id, body.GetProperty("id").GetGuid());
        Assert.Equal("succeeded", body.GetProperty("status").GetString());
    }

    [Theory]
    [InlineData("wrong-secret")]
    [InlineData("stale")]
    [InlineData("missing")]
    [InlineData("tampered")]
    public async Task A_webhook_that_is_not_authentic_is_rejected_and_writes_nothing(string forgery)
    {
        var org = Guid.NewGuid();
        var topUp = await StartTopUpAsync(org, 5_000, "k-" + Guid.NewGuid());
        var eventId = "evt_" + Guid.NewGuid().ToString("N");
        var payload = SucceededEvent(eventId, topUp, org);
        var (body, signature) = forgery switch
        {
            "wrong-secret" => (payload, Sign(payload, "whsec_someone_else")),
            "stale" => (payload, Sign(payload, at: DateTimeOffset.UtcNow.AddMinutes(-10))),
            "missing" => (payload, null),
            _ => (payload.Replace("5000", "9000", StringComparison.Ordinal), Sign(payload)),
        };

        var response = await PostWebhook(body, signature);

        Assert.Equal(HttpStatusCode.BadRequest, response.StatusCode);
        Assert.Equal("application/problem+json", response.Content.Headers.ContentType?.MediaType);
        Assert.Equal(0, await fx.ScalarAsync("SELECT count(*) FROM stripe_events WHERE event_id = @eventId", new { eventId }));
        Assert.Equal((0, 0), await fx.WalletAsync(org));
    }

    [Fact]
    public async Task Bad_top_up_requests_get_a_problem_and_write_nothing()
    {
        var org = Guid.NewGuid();
        object Body(long amount, string currency) => new { amount = new { amount, currency } };

        var noKey = await SendTopUp(org, null, Body(100, "CNY"));
        var zero = await SendTopUp(org, "a", Body(0, "CNY"));
        var tooMuch = await SendTopUp(org, "b", Body(100_000_001, "CNY"));
        var lowerCase = await SendTopUp(org, "c", Body(100, "cny"));
        var noAmount = await SendTopUp(org, "d", new { });
        // Stripe charges the three-decimal currencies only in tens of their minor unit (5.124 KWD cannot be paid).
        var kwd = await SendTopUp(org, "e", Body(5_124, "KWD"));

        foreach (var r in new[] { noKey, zero, tooMuch, lowerCase, noAmount, kwd })
        {
            Assert.Equal(HttpStatusCode.BadRequest, r.StatusCode);
            Assert.Equal("application/problem+json", r.Content.Headers.ContentType?.MediaType);
        }
        Assert.Contains("Idempotency-Key", await noKey.Content.ReadAsStringAsync());
        Assert.Contains("5120 or 5130", await kwd.Content.ReadAsStringAsync());
        Assert.Equal(0, await fx.ScalarAsync("SELECT count(*) FROM top_ups WHERE renter_org_id = @org", new { org }));
    }

    [Fact]
    public async Task A_top_up_in_a_three_decimal_currency_in_tens_of_its_minor_unit_is_accepted()
    {
        var org = Guid.NewGuid();
        var response = await SendTopUp(org, "k-" + Guid.NewGuid(), new { amount = new { amount = 5_120, currency = "KWD" } });

        Assert.Equal(HttpStatusCode.Created, response.StatusCode);
        var body = await response.Content.ReadFromJsonAsync<JsonElement>();
        Assert.Equal(5_120, body.GetProperty("amount").GetProperty("amount").GetInt64());
    }

    [Fact]
    public async Task Reusing_an_idempotency_key_for_a_different_amount_is_refused()
    {
        var org = Guid.NewGuid();
        await StartTopUpAsync(org, 1_000, "same-key");

        var response = await SendTopUp(org, "same-key", new { amount = new { amount = 2_000, currency = "CNY" } });

        Assert.Equal(HttpStatusCode.UnprocessableEntity, response.StatusCode);
        Assert.Contains("idempotency-key-reused", await response.Content.ReadAsStringAsync());
        Assert.Equal(1, await fx.ScalarAsync("SELECT count(*) FROM top_ups WHERE renter_org_id = @org", new { org }));
    }

    [Fact]
    public async Task Only_renters_have_a_wallet()
    {
        var response = await fx.Factory.ClientFor(Guid.NewGuid(), "provider").GetAsync("/v1/wallet");
        Assert.Equal(HttpStatusCode.Forbidden, response.StatusCode);
    }
}
