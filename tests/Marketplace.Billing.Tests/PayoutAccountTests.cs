using System.Net;
using System.Net.Http.Json;
using System.Text;
using System.Text.Json;
using Marketplace.StripeFake;
using Marketplace.Testing;
using Xunit;
using static Marketplace.Billing.Tests.BillingFixture;

namespace Marketplace.Billing.Tests;

/// <summary>
/// Payout destinations through Stripe Connect: a provider creates its connected account through our API, onboards at
/// Stripe (the stand-in's onboarding page), and only Stripe's signed account.updated lets payouts go to it.
/// </summary>
public sealed class PayoutAccountTests(AutoConfirmingStripe fx) : IClassFixture<AutoConfirmingStripe>
{
    private static string AccountUpdated(string eventId, string account, bool enabled, DateTimeOffset created) =>
        JsonSerializer.Serialize(new Dictionary<string, object?>
        {
            ["id"] = eventId,
            ["object"] = "event",
            ["api_version"] = Stripe.StripeConfiguration.ApiVersion,
            ["created"] = created.ToUnixTimeSeconds(),
            ["livemode"] = false,
            ["pending_webhooks"] = 1,
            ["type"] = "account.updated",
            ["data"] = new Dictionary<string, object?>
            {
                ["object"] = new Dictionary<string, object?>
                {
                    ["id"] = account, ["object"] = "account", ["charges_enabled"] = enabled, ["payouts_enabled"] = enabled,
                    ["details_submitted"] = true, ["country"] = "SG",
                    ["requirements"] = new Dictionary<string, object?> { ["disabled_reason"] = enabled ? null : "requirements.past_due" },
                },
            },
        });

    private Task<HttpResponseMessage> PostWebhook(string payload, string? signature)
    {
        var request = new HttpRequestMessage(HttpMethod.Post, "/webhooks/stripe") { Content = new StringContent(payload, Encoding.UTF8, "application/json") };
        if (signature is not null) request.Headers.Add("Stripe-Signature", signature);
        return fx.Factory.CreateClient().SendAsync(request);
    }

    private static string Sign(string payload, string secret = WebhookSecret) =>
        StripeFakeApp.SignatureHeader(payload, secret, DateTimeOffset.UtcNow.ToUnixTimeSeconds());

    private async Task<JsonElement> AccountAsync(Guid provider, Guid id) =>
        await fx.Provider(provider).GetFromJsonAsync<JsonElement>($"/v1/payout-accounts/{id}", Json);

    [Fact]
    public async Task A_provider_creates_its_connected_account_and_onboarding_at_stripe_enables_payouts()
    {
        var provider = Guid.NewGuid();
        var key = Guid.NewGuid().ToString();
        var response = await fx.CreatePayoutAccountAsync(provider, new { country = "SG", email = "ops@provider.example" }, key);

        Assert.Equal(HttpStatusCode.Created, response.StatusCode);
        var account = await response.Content.ReadFromJsonAsync<JsonElement>(Json);
        var id = account.GetProperty("id").GetGuid();
        Assert.Equal(provider, account.GetProperty("provider_org_id").GetGuid());
        Assert.StartsWith("acct_", account.GetProperty("stripe_account_id").GetString());
        Assert.Equal("onboarding", account.GetProperty("status").GetString());
        Assert.False(account.GetProperty("payouts_enabled").GetBoolean());
        var url = account.GetProperty("onboarding").GetProperty("url").GetString()!;
        Assert.Contains($"/connect/onboarding/{account.GetProperty("stripe_account_id").GetString()}", url);

        // The same request again is the same account (with a fresh link); another key while one exists is a conflict.
        var again = await fx.CreatePayoutAccountAsync(provider, new { country = "SG", email = "ops@provider.example" }, key);
        Assert.Equal(HttpStatusCode.OK, again.StatusCode);
        Assert.Equal(id, (await again.Content.ReadFromJsonAsync<JsonElement>(Json)).GetProperty("id").GetGuid());
        var second = await fx.CreatePayoutAccountAsync(provider, new { country = "SG" }, Guid.NewGuid().ToString());
        Assert.Equal(HttpStatusCode.Conflict, second.StatusCode);
        Assert.Equal(1, await fx.ScalarAsync("SELECT count(*) FROM payout_accounts WHERE provider_org_id = @provider", new { provider }));

        // Nothing is enabled by our side: only Stripe's signed account.updated, sent when the provider finishes onboarding.
        Assert.False((await AccountAsync(provider, id)).GetProperty("payouts_enabled").GetBoolean());
        using var browser = new HttpClient(new HttpClientHandler { AllowAutoRedirect = false });
        var link = await fx.Provider(provider).PostAsJsonAsync($"/v1/payout-accounts/{id}/onboarding-links",
            new { return_url = "https://provider.example/done" });
        Assert.Equal(HttpStatusCode.Created, link.StatusCode);
        var page = await browser.GetAsync((await link.Content.ReadFromJsonAsync<JsonElement>(Json)).GetProperty("url").GetString());
        Assert.Equal("https://provider.example/done", page.Headers.Location?.ToString());
        await Eventually.True(async () => (await AccountAsync(provider, id)).GetProperty("payouts_enabled").GetBoolean(), what: "payouts enabled");
        var enabled = await AccountAsync(provider, id);
        Assert.Equal("enabled", enabled.GetProperty("status").GetString());
        Assert.True(enabled.GetProperty("charges_enabled").GetBoolean());

        var list = await fx.Provider(provider).GetFromJsonAsync<JsonElement>("/v1/payout-accounts", Json);
        Assert.Equal(id, Assert.Single(list.GetProperty("data").EnumerateArray()).GetProperty("id").GetGuid());
    }

    [Fact]
    public async Task Account_updated_counts_only_when_signed_once_per_event_and_never_older_over_newer()
    {
        var provider = Guid.NewGuid();
        var response = await fx.CreatePayoutAccountAsync(provider, new { country = "DE" }, Guid.NewGuid().ToString());
        var account = await response.Content.ReadFromJsonAsync<JsonElement>(Json);
        var (id, stripeId) = (account.GetProperty("id").GetGuid(), account.GetProperty("stripe_account_id").GetString()!);
        bool Enabled(JsonElement a) => a.GetProperty("payouts_enabled").GetBoolean();

        var forged = AccountUpdated("evt_" + Guid.NewGuid().ToString("N"), stripeId, true, DateTimeOffset.UtcNow);
        Assert.Equal(HttpStatusCode.BadRequest, (await PostWebhook(forged, Sign(forged, "whsec_someone_else"))).StatusCode);
        Assert.Equal(HttpStatusCode.BadRequest, (await PostWebhook(forged, null)).StatusCode);
        Assert.Equal(HttpStatusCode.BadRequest, (await PostWebhook(forged.Replace("\"SG\"", "\"FR\"", StringComparison.Ordinal), Sign(forged))).StatusCode);
        Assert.False(Enabled(await AccountAsync(provider, id)));

        var now = DateTimeOffset.UtcNow;
        var enable = AccountUpdated("evt_" + Guid.NewGuid().ToString("N"), stripeId, true, now);
        Assert.Equal(HttpStatusCode.OK, (await PostWebhook(enable, Sign(enable))).StatusCode);
        Assert.True(Enabled(await AccountAsync(provider, id)));

        // Stripe restricts the account; then the older "enabled" event is delivered again, and an older one arrives late.
        var restrict = AccountUpdated("evt_" + Guid.NewGuid().ToString("N"), stripeId, false, now.AddSeconds(5));
        Assert.Equal(HttpStatusCode.OK, (await PostWebhook(restrict, Sign(restrict))).StatusCode);
        var replay = await PostWebhook(enable, Sign(enable));
        Assert.True((await replay.Content.ReadFromJsonAsync<JsonElement>(Json)).GetProperty("duplicate").GetBoolean());
        var late = AccountUpdated("evt_" + Guid.NewGuid().ToString("N"), stripeId, true, now.AddSeconds(2));
        Assert.Equal(HttpStatusCode.OK, (await PostWebhook(late, Sign(late))).StatusCode);

        var restricted = await AccountAsync(provider, id);
        Assert.False(Enabled(restricted));
        Assert.Equal("restricted", restricted.GetProperty("status").GetString());
        Assert.Equal("requirements.past_due", restricted.GetProperty("disabled_reason").GetString());
    }

    [Fact]
    public async Task A_payout_without_an_enabled_account_is_held_with_the_reason_and_a_later_run_pays_it()
    {
        var (renter, provider) = (Guid.NewGuid(), Guid.NewGuid());
        await fx.FundAsync(renter, 10_000);
        var start = DateTimeOffset.UtcNow.AddDays(-40).Date.AddHours(10);
        var lease = await fx.BookAsync(Lease(renter, provider, 1_000, 1, start, TimeSpan.FromHours(1)));
        await fx.RunAsync(lease, TimeSpan.FromHours(1));
        var period = start.ToString("yyyy-MM-dd");

        var first = await fx.RunPeriodAsync(period);
        var payout = StatementOf(first, provider).GetProperty("payout");
        Assert.Equal("held", payout.GetProperty("status").GetString());
        Assert.Contains("no payout account", payout.GetProperty("held_reason").GetString());
        Assert.Equal(JsonValueKind.Null, payout.GetProperty("transfer_id").ValueKind);
        Assert.Equal("payouts_held", first.GetProperty("status").GetString());
        // Still owed: the provider's payable keeps the net; nothing went to payouts.
        var payable = $"provider:{provider}:payable";
        Assert.Equal(900, await fx.ScalarAsync("SELECT COALESCE(SUM(amount), 0) FROM ledger_entries WHERE account = @payable", new { payable }));

        // An account that exists but is not onboarded yet still holds it.
        var created = await fx.CreatePayoutAccountAsync(provider, new { country = "SG" }, Guid.NewGuid().ToString());
        Assert.Equal(HttpStatusCode.Created, created.StatusCode);
        var stillHeld = StatementOf(await fx.RunPeriodAsync(period), provider).GetProperty("payout");
        Assert.Equal("held", stillHeld.GetProperty("status").GetString());
        Assert.Contains("cannot receive payouts yet", stillHeld.GetProperty("held_reason").GetString());

        var link = await fx.Provider(provider).PostAsync(
            $"/v1/payout-accounts/{(await created.Content.ReadFromJsonAsync<JsonElement>(Json)).GetProperty("id").GetGuid()}/onboarding-links", null);
        using (var browser = new HttpClient(new HttpClientHandler { AllowAutoRedirect = false }))
            await browser.GetAsync((await link.Content.ReadFromJsonAsync<JsonElement>(Json)).GetProperty("url").GetString());
        await Eventually.True(async () => await fx.ScalarAsync(
            "SELECT count(*) FROM payout_accounts WHERE provider_org_id = @provider AND payouts_enabled", new { provider }) == 1, what: "payouts enabled");

        var later = await fx.RunPeriodAsync(period);
        var paid = StatementOf(later, provider).GetProperty("payout");
        Assert.Equal("paid", paid.GetProperty("status").GetString());
        Assert.StartsWith("tr_", paid.GetProperty("transfer_id").GetString());
        Assert.Equal(0, await fx.ScalarAsync("SELECT COALESCE(SUM(amount), 0) FROM ledger_entries WHERE account = @payable", new { payable }));
        // One payout for the statement, sent once, to the onboarded account.
        Assert.Equal(1, await fx.ScalarAsync("""
            SELECT count(*) FROM payouts po JOIN statements s ON s.id = po.statement_id JOIN payout_accounts a ON a.provider_org_id = s.provider_org_id
            WHERE s.provider_org_id = @provider AND po.status = 'paid' AND po.destination = a.stripe_account_id
            """, new { provider }));
        Assert.Equal(1, await fx.ScalarAsync("SELECT count(*) FROM payouts po JOIN statements s ON s.id = po.statement_id WHERE s.provider_org_id = @provider", new { provider }));
        var rows = await fx.ScalarAsync("SELECT count(*) FROM ledger_entries");
        await fx.RunPeriodAsync(period);
        Assert.Equal(rows, await fx.ScalarAsync("SELECT count(*) FROM ledger_entries"));
        Assert.True(await fx.LedgerBalancedAsync());
    }

    [Fact]
    public async Task Another_orgs_payout_account_is_not_found_and_renters_have_none()
    {
        var (owner, stranger) = (Guid.NewGuid(), Guid.NewGuid());
        var created = await fx.CreatePayoutAccountAsync(owner, new { country = "SG" }, Guid.NewGuid().ToString());
        var id = (await created.Content.ReadFromJsonAsync<JsonElement>(Json)).GetProperty("id").GetGuid();

        Assert.Equal(HttpStatusCode.NotFound, (await fx.Provider(stranger).GetAsync($"/v1/payout-accounts/{id}")).StatusCode);
        var link = await fx.Provider(stranger).PostAsync($"/v1/payout-accounts/{id}/onboarding-links", null);
        Assert.Equal(HttpStatusCode.NotFound, link.StatusCode);
        Assert.Equal("application/problem+json", link.Content.Headers.ContentType?.MediaType);
        Assert.Empty((await fx.Provider(stranger).GetFromJsonAsync<JsonElement>("/v1/payout-accounts", Json)).GetProperty("data").EnumerateArray());
        Assert.Equal(HttpStatusCode.Forbidden, (await fx.Renter(stranger).GetAsync($"/v1/payout-accounts/{id}")).StatusCode);
        Assert.Equal(HttpStatusCode.OK, (await fx.Finance().GetAsync($"/v1/payout-accounts/{id}")).StatusCode);
    }

    public static TheoryData<string, string?> BadRequests => new()
    {
        { """{"country":"sg"}""", "k" },
        { """{"country":"SGP"}""", "k" },
        { """{}""", "k" },
        { """{"country":"SG","email":"not-an-address"}""", "k" },
        { """{"country":"SG","return_url":"ftp://provider.example/back"}""", "k" },
        { """{"country":"SG","refresh_url":"/relative"}""", "k" },
        { """{"country":"SG"}""", null },
    };

    [Theory]
    [MemberData(nameof(BadRequests))]
    public async Task Bad_payout_account_requests_get_a_problem_and_write_nothing(string body, string? key)
    {
        var provider = Guid.NewGuid();
        var request = new HttpRequestMessage(HttpMethod.Post, "/v1/payout-accounts") { Content = new StringContent(body, Encoding.UTF8, "application/json") };
        if (key is not null) request.Headers.Add("Idempotency-Key", key + Guid.NewGuid());
        var response = await fx.Provider(provider).SendAsync(request);

        Assert.Equal(HttpStatusCode.BadRequest, response.StatusCode);
        Assert.Equal("application/problem+json", response.Content.Headers.ContentType?.MediaType);
        Assert.Equal(0, await fx.ScalarAsync("SELECT count(*) FROM payout_accounts WHERE provider_org_id = @provider", new { provider }));

        var link = await fx.Provider(provider).PostAsJsonAsync($"/v1/payout-accounts/{Guid.NewGuid()}/onboarding-links", new { return_url = "javascript:alert(1)" });
        Assert.Equal(HttpStatusCode.BadRequest, link.StatusCode);
    }
}
