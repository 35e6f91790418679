using System.Collections.Concurrent;
using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using System.Threading.Channels;
using Microsoft.Extensions.DependencyInjection.Extensions;

namespace Marketplace.StripeFake;

/// <summary>Settings of the stand-in (section StripeFake).</summary>
public sealed class StripeFakeOptions
{
    /// <summary>Confirm every PaymentIntent at once and send payment_intent.succeeded, as if the customer paid.</summary>
    public bool AutoConfirm { get; set; } = true;
    public string WebhookUrl { get; set; } = "http://127.0.0.1:8080/v1/webhooks/stripe";
    public string WebhookSecret { get; set; } = "whsec_local_development_only";
    public int WebhookAttempts { get; set; } = 6;
}

/// <summary>
/// A development and test stand-in for Stripe's REST API (in the spirit of stripe-mock), speaking just enough for
/// Stripe.net: create PaymentIntents, Transfers, Connect accounts and their onboarding links (honouring Idempotency-Key),
/// and deliver signed <c>payment_intent.succeeded</c> and <c>account.updated</c> webhooks. It moves no money and keeps
/// everything in memory. Never deploy it.
/// </summary>
public static class StripeFakeApp
{
    public const string WebhookClient = "stripe-webhooks";

    public static WebApplication Build(string[] args, Action<WebApplicationBuilder>? configure = null)
    {
        // Its own folder as the content root, not the working directory: a host watches its content root, subfolders
        // included, for configuration changes, and from the repository's root that is every file PostgreSQL writes under
        // .data/ (652 inotify watches in the billing benchmark's process, whose file-watch thread then took 3-4 % of its CPU).
        var builder = WebApplication.CreateBuilder(new WebApplicationOptions { Args = args, ContentRootPath = AppContext.BaseDirectory });
        builder.Services.AddOptions<StripeFakeOptions>().BindConfiguration("StripeFake");
        builder.Services.AddHttpClient(WebhookClient, c => c.Timeout = TimeSpan.FromSeconds(10));
        builder.Services.TryAddSingleton(TimeProvider.System);
        builder.Services.AddSingleton<FakeStripe>();
        builder.Services.AddSingleton(Channel.CreateUnbounded<string>());
        builder.Services.AddHostedService<WebhookSender>();
        configure?.Invoke(builder);

        var app = builder.Build();
        app.MapGet("/health/ready", () => Results.Ok(new { status = "Healthy" }));
        app.MapGet("/health/live", () => Results.Ok(new { status = "Healthy" }));
        app.MapPost("/v1/payment_intents", (HttpRequest r, FakeStripe s) => s.HandleAsync(r, s.CreatePaymentIntentAsync));
        app.MapPost("/v1/transfers", (HttpRequest r, FakeStripe s) => s.HandleAsync(r, s.CreateTransferAsync));
        app.MapPost("/v1/accounts", (HttpRequest r, FakeStripe s) => s.HandleAsync(r, s.CreateAccountAsync));
        app.MapGet("/v1/accounts/{id}", (string id, HttpRequest r, FakeStripe s) => s.GetAccount(r, id));
        app.MapPost("/v1/account_links", (HttpRequest r, FakeStripe s) =>
            s.HandleAsync(r, (form, key) => s.CreateAccountLinkAsync(form, key, $"{r.Scheme}://{r.Host}")));
        // Where an account link sends the provider. Visiting it stands for filling in Stripe's onboarding form: the
        // account gets payouts and charges enabled, account.updated is sent, and the browser goes to return_url.
        app.MapGet("/connect/onboarding/{id}", (string id, string? return_url, FakeStripe s) => s.CompleteOnboardingAsync(id, return_url));
        return app;
    }

    /// <summary>Stripe's webhook signature: HMAC-SHA256 of "{t}.{payload}" with the endpoint secret, hex.</summary>
    public static string SignatureHeader(string payload, string secret, long unixTime)
    {
        var hash = HMACSHA256.HashData(Encoding.UTF8.GetBytes(secret), Encoding.UTF8.GetBytes($"{unixTime}.{payload}"));
        return $"t={unixTime},v1={Convert.ToHexStringLower(hash)}";
    }
}

internal sealed class FakeStripe(Channel<string> webhooks, Microsoft.Extensions.Options.IOptions<StripeFakeOptions> options,
    TimeProvider time)
{
    private readonly ConcurrentDictionary<string, Lazy<Task<IResult>>> _idempotent = new(StringComparer.Ordinal);

    public async Task<IResult> HandleAsync(HttpRequest request, Func<IFormCollection, string?, Task<IResult>> create)
    {
        if (!request.Headers.Authorization.ToString().StartsWith("Bearer sk_", StringComparison.Ordinal))
            return Error(401, "invalid_request_error", "Invalid API Key provided.", null);
        if (!request.HasFormContentType) return Error(400, "invalid_request_error", "Send form-encoded parameters.", null);
        var form = await request.ReadFormAsync();
        var key = request.Headers["Idempotency-Key"].ToString();
        if (string.IsNullOrEmpty(key)) return await create(form, null);
        // Same key → the same response, like Stripe (which also refuses different parameters; not modelled here).
        var lazy = _idempotent.GetOrAdd(request.Path + "|" + key, _ => new Lazy<Task<IResult>>(() => create(form, key)));
        return await lazy.Value;
    }

    public async Task<IResult> CreatePaymentIntentAsync(IFormCollection form, string? idempotencyKey)
    {
        if (!long.TryParse(form["amount"], out var amount) || amount <= 0)
            return Error(400, "invalid_request_error", "Missing or invalid required param: amount.", "amount");
        var currency = form["currency"].ToString();
        if (currency.Length != 3) return Error(400, "invalid_request_error", "Missing or invalid required param: currency.", "currency");
        var id = "pi_" + RandomId();
        var intent = new Dictionary<string, object?>
        {
            ["id"] = id,
            ["object"] = "payment_intent",
            ["amount"] = amount,
            ["amount_received"] = 0L,
            ["currency"] = currency,
            ["client_secret"] = $"{id}_secret_{RandomId()}",
            ["created"] = time.GetUtcNow().ToUnixTimeSeconds(),
            ["description"] = form["description"].ToString() is { Length: > 0 } d ? d : null,
            ["livemode"] = false,
            ["metadata"] = Metadata(form),
            ["payment_method_types"] = new[] { "card" },
            ["status"] = "requires_payment_method",
        };
        if (options.Value.AutoConfirm)
        {
            var succeeded = new Dictionary<string, object?>(intent) { ["status"] = "succeeded", ["amount_received"] = amount };
            await SendEventAsync("payment_intent.succeeded", succeeded, idempotencyKey);
        }
        return Results.Json(intent);
    }

    public Task<IResult> CreateTransferAsync(IFormCollection form, string? idempotencyKey)
    {
        if (!long.TryParse(form["amount"], out var amount) || amount <= 0)
            return Task.FromResult(Error(400, "invalid_request_error", "Missing or invalid required param: amount.", "amount"));
        if (string.IsNullOrEmpty(form["destination"]))
            return Task.FromResult(Error(400, "invalid_request_error", "Missing required param: destination.", "destination"));
        // Like Stripe, a connected account that cannot receive transfers yet refuses them. Accounts this process did not
        // create (it forgets everything when it restarts) are taken on trust.
        if (_accounts.TryGetValue(form["destination"].ToString(), out var account) && !account.PayoutsEnabled)
            return Task.FromResult(Error(400, "invalid_request_error",
                "Your destination account needs to have at least one of the following capabilities enabled: transfers, crypto_transfers, legacy_payments",
                "destination"));
        return Task.FromResult(Results.Json(new Dictionary<string, object?>
        {
            ["id"] = "tr_" + RandomId(),
            ["object"] = "transfer",
            ["amount"] = amount,
            ["amount_reversed"] = 0L,
            ["currency"] = form["currency"].ToString(),
            ["created"] = time.GetUtcNow().ToUnixTimeSeconds(),
            ["destination"] = form["destination"].ToString(),
            ["livemode"] = false,
            ["metadata"] = Metadata(form),
            ["reversed"] = false,
            ["transfer_group"] = form["transfer_group"].ToString() is { Length: > 0 } g ? g : null,
        }));
    }

    private sealed class Account
    {
        public required string Id { get; init; }
        public required string Country { get; init; }
        public string? Email { get; init; }
        public required Dictionary<string, string> Metadata { get; init; }
        public required long Created { get; init; }
        public bool PayoutsEnabled { get; set; }
        public bool ChargesEnabled { get; set; }
        public bool DetailsSubmitted { get; set; }
    }

    private readonly ConcurrentDictionary<string, Account> _accounts = new(StringComparer.Ordinal);

    /// <summary>Creates an Express-style connected account: nothing enabled until its onboarding is completed.</summary>
    public Task<IResult> CreateAccountAsync(IFormCollection form, string? idempotencyKey)
    {
        var country = form["country"].ToString();
        if (country.Length != 2) return Task.FromResult(Error(400, "invalid_request_error", "Invalid country: use an ISO 3166-1 alpha-2 code.", "country"));
        var account = new Account
        {
            Id = "acct_" + RandomId()[..16],
            Country = country.ToUpperInvariant(),
            Email = form["email"].ToString() is { Length: > 0 } e ? e : null,
            Metadata = Metadata(form),
            Created = time.GetUtcNow().ToUnixTimeSeconds(),
        };
        _accounts[account.Id] = account;
        return Task.FromResult(Results.Json(AccountJson(account)));
    }

    public IResult GetAccount(HttpRequest request, string id)
    {
        if (!request.Headers.Authorization.ToString().StartsWith("Bearer sk_", StringComparison.Ordinal))
            return Error(401, "invalid_request_error", "Invalid API Key provided.", null);
        return _accounts.TryGetValue(id, out var account) ? Results.Json(AccountJson(account))
            : Error(404, "invalid_request_error", $"No such account: '{id}'", "account");
    }

    public Task<IResult> CreateAccountLinkAsync(IFormCollection form, string? idempotencyKey, string baseUrl)
    {
        var id = form["account"].ToString();
        if (!_accounts.ContainsKey(id)) return Task.FromResult(Error(400, "invalid_request_error", $"No such account: '{id}'", "account"));
        if (form["type"].ToString() is not ("account_onboarding" or "account_update"))
            return Task.FromResult(Error(400, "invalid_request_error", "Invalid type: use account_onboarding or account_update.", "type"));
        var returnUrl = form["return_url"].ToString();
        if (!Uri.TryCreate(returnUrl, UriKind.Absolute, out _))
            return Task.FromResult(Error(400, "invalid_request_error", "Missing or invalid required param: return_url.", "return_url"));
        if (!Uri.TryCreate(form["refresh_url"].ToString(), UriKind.Absolute, out _))
            return Task.FromResult(Error(400, "invalid_request_error", "Missing or invalid required param: refresh_url.", "refresh_url"));
        var now = time.GetUtcNow().ToUnixTimeSeconds();
        return Task.FromResult(Results.Json(new Dictionary<string, object?>
        {
            ["object"] = "account_link",
            ["created"] = now,
            ["expires_at"] = now + 300,
            ["url"] = $"{baseUrl}/connect/onboarding/{id}?return_url={Uri.EscapeDataString(returnUrl)}",
        }));
    }

    public async Task<IResult> CompleteOnboardingAsync(string id, string? returnUrl)
    {
        if (!_accounts.TryGetValue(id, out var account)) return Results.NotFound();
        lock (account)
        {
            account.DetailsSubmitted = account.PayoutsEnabled = account.ChargesEnabled = true;
        }
        await SendEventAsync("account.updated", AccountJson(account), null);
        return returnUrl is { Length: > 0 } ? Results.Redirect(returnUrl) : Results.Text("Onboarding complete. You can close this page.");
    }

    private static Dictionary<string, object?> AccountJson(Account a) => new()
    {
        ["id"] = a.Id,
        ["object"] = "account",
        ["business_type"] = null,
        ["charges_enabled"] = a.ChargesEnabled,
        ["country"] = a.Country,
        ["created"] = a.Created,
        ["default_currency"] = "usd",
        ["details_submitted"] = a.DetailsSubmitted,
        ["email"] = a.Email,
        ["metadata"] = a.Metadata,
        ["payouts_enabled"] = a.PayoutsEnabled,
        ["requirements"] = new Dictionary<string, object?>
        {
            ["currently_due"] = a.DetailsSubmitted ? Array.Empty<string>() : new[] { "external_account", "tos_acceptance.date" },
            ["disabled_reason"] = a.DetailsSubmitted ? null : "requirements.past_due",
        },
        ["type"] = "express",
    };

    /// <summary>Queues a signed event for the webhook endpoint (nothing is sent when no endpoint is configured).</summary>
    private async Task SendEventAsync(string type, Dictionary<string, object?> data, string? idempotencyKey)
    {
        if (string.IsNullOrEmpty(options.Value.WebhookUrl)) return;
        await webhooks.Writer.WriteAsync(JsonSerializer.Serialize(new Dictionary<string, object?>
        {
            ["id"] = "evt_" + RandomId(),
            ["object"] = "event",
            ["api_version"] = Stripe.StripeConfiguration.ApiVersion,
            ["created"] = time.GetUtcNow().ToUnixTimeSeconds(),
            ["data"] = new Dictionary<string, object?> { ["object"] = data },
            ["livemode"] = false,
            ["pending_webhooks"] = 1,
            ["request"] = new Dictionary<string, object?> { ["id"] = "req_" + RandomId(), ["idempotency_key"] = idempotencyKey },
            ["type"] = type,
        }));
    }

    private static Dictionary<string, string> Metadata(IFormCollection form) =>
        form.Where(f => f.Key.StartsWith("metadata[", StringComparison.Ordinal) && f.Key.EndsWith(']'))
            .ToDictionary(f => f.Key["metadata[".Length..^1], f => f.Value.ToString());

    private static string RandomId() => Convert.ToHexStringLower(RandomNumberGenerator.GetBytes(12));

    private static IResult Error(int status, string type, string message, string? param) =>
        Results.Json(new { error = new { type, message, param } }, statusCode: status);
}

/// <summary>Delivers events like Stripe: signed, retried with backoff until the endpoint answers 2xx.</summary>
internal sealed class WebhookSender(Channel<string> webhooks, IHttpClientFactory http,
    Microsoft.Extensions.Options.IOptions<StripeFakeOptions> options, TimeProvider time, ILogger<WebhookSender> logger) : BackgroundService
{
    protected override async Task ExecuteAsync(CancellationToken stoppingToken)
    {
        try
        {
            await foreach (var payload in webhooks.Reader.ReadAllAsync(stoppingToken))
                _ = Task.Run(() => DeliverAsync(payload, stoppingToken), stoppingToken);
        }
        catch (OperationCanceledException) when (stoppingToken.IsCancellationRequested)
        {
            // Stopping: events not yet delivered are dropped, as they would be if Stripe's endpoint went away.
        }
    }

    private async Task DeliverAsync(string payload, CancellationToken ct)
    {
        var o = options.Value;
        for (var attempt = 1; attempt <= o.WebhookAttempts && !ct.IsCancellationRequested; attempt++)
        {
            try
            {
                using var request = new HttpRequestMessage(HttpMethod.Post, o.WebhookUrl)
                {
                    Content = new StringContent(payload, Encoding.UTF8, "application/json"),
                };
                request.Headers.Add("Stripe-Signature",
                    StripeFakeApp.SignatureHeader(payload, o.WebhookSecret, time.GetUtcNow().ToUnixTimeSeconds()));
                using var response = await http.CreateClient(StripeFakeApp.WebhookClient).SendAsync(request, ct);
                if (response.IsSuccessStatusCode) return;
                logger.LogWarning("Webhook to {Url} answered {Status} (attempt {Attempt})", o.WebhookUrl, (int)response.StatusCode, attempt);
            }
            catch (HttpRequestException ex)
            {
                logger.LogWarning("Webhook to {Url} failed: {Error} (attempt {Attempt})", o.WebhookUrl, ex.Message, attempt);
            }
            try { await Task.Delay(TimeSpan.FromMilliseconds(250 * Math.Pow(2, attempt)), ct); }
            catch (OperationCanceledException) { return; }
        }
    }
}
