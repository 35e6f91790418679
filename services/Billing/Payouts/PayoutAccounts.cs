using Dapper;
using Marketplace.Contracts;
using Marketplace.ServiceDefaults.Data;
using Marketplace.ServiceDefaults.Web;
using MassTransit;
using Microsoft.AspNetCore.Http.HttpResults;
using Microsoft.AspNetCore.Mvc;
using Microsoft.Extensions.Options;
using Npgsql;
using Stripe;

namespace Marketplace.Billing.Payouts;

/// <summary>
/// Where a provider's payouts go: its Stripe Connect account. The provider creates it here (Stripe account + an
/// onboarding link), finishes onboarding at Stripe, and Stripe's signed account.updated webhook tells us when the
/// account can receive payouts. Until then the provider's payouts are held (see BillingRunner).
/// </summary>
internal static class PayoutAccounts
{
    public sealed record CreateRequest(string? Country, string? Email, string? ReturnUrl, string? RefreshUrl);

    public sealed record LinkRequest(string? ReturnUrl, string? RefreshUrl);

    public sealed record OnboardingLink(string Url, DateTime ExpiresAt);

    /// <summary>status: onboarding (details not submitted yet), restricted (submitted, payouts not enabled), enabled.</summary>
    public sealed record PayoutAccount(Guid Id, Guid ProviderOrgId, string StripeAccountId, string Status, string Country, string? Email,
        bool PayoutsEnabled, bool ChargesEnabled, bool DetailsSubmitted, string? DisabledReason, DateTime CreatedAt, DateTime UpdatedAt,
        OnboardingLink? Onboarding);

    private sealed record Row(Guid Id, Guid ProviderOrgId, string StripeAccountId, string IdempotencyKey, string Country, string? Email,
        bool PayoutsEnabled, bool ChargesEnabled, bool DetailsSubmitted, string? DisabledReason, DateTime CreatedAt, DateTime UpdatedAt)
    {
        public PayoutAccount ToApi(OnboardingLink? link = null) => new(Id, ProviderOrgId, StripeAccountId,
            PayoutsEnabled ? "enabled" : DetailsSubmitted ? "restricted" : "onboarding", Country.Trim(), Email, PayoutsEnabled, ChargesEnabled,
            DetailsSubmitted, DisabledReason, CreatedAt, UpdatedAt, link);
    }

    private const string Columns = """
        id, provider_org_id, stripe_account_id, idempotency_key, country, email, payouts_enabled, charges_enabled, details_submitted,
        disabled_reason, created_at, updated_at
        """;

    /// <summary>POST /v1/payout-accounts (provider, Idempotency-Key): one account per org.</summary>
    public static async Task<Results<Created<PayoutAccount>, Ok<PayoutAccount>, ValidationProblem, ProblemHttpResult>> Create(
        Caller caller, CreateRequest request, [FromHeader(Name = "Idempotency-Key")] string? idempotencyKey, Db db, StripeClient stripe,
        IOptions<StripeOptions> options, ILogger<CreateRequest> logger, CancellationToken ct)
    {
        if (!caller.Has(OrgRoles.Provider)) return Problems.Forbidden("Only providers have payout accounts.");
        var v = new Validation()
            .Require(!string.IsNullOrWhiteSpace(idempotencyKey), "Idempotency-Key",
                "Send an Idempotency-Key header (e.g. a UUID) so a retried request never creates a second account.")
            .Require(idempotencyKey is null || idempotencyKey.Length <= 255, "Idempotency-Key", "Use at most 255 characters.")
            .Require(request.Country is { Length: 2 } country && country.All(char.IsAsciiLetterUpper), "country",
                "Give the country of the provider's business as an upper-case ISO 3166-1 alpha-2 code, e.g. \"SG\" or \"DE\".")
            .Require(request.Email is null || (request.Email.Length <= 254 && request.Email.IndexOf('@', StringComparison.Ordinal) > 0
                && !request.Email.Any(char.IsControl)), "email", "Give a valid e-mail address (at most 254 characters) or leave it out.");
        ValidateUrls(v, request.ReturnUrl, request.RefreshUrl);
        if (v.Failed) return v.Problem;

        Row? existing;
        await using (var c = await db.DataSource.OpenConnectionAsync(ct))
            existing = await ByOrgAsync(c, caller.OrgId, ct);
        if (existing is not null && existing.IdempotencyKey != idempotencyKey)
            return Problems.Conflict("payout-account-exists",
                $"This org already has payout account {existing.Id} ({existing.StripeAccountId}); ask for a new onboarding link with POST /v1/payout-accounts/{existing.Id}/onboarding-links.");

        var created = false;
        if (existing is null)
        {
            Account account;
            try
            {
                // Keyed by our org id: two racing requests get the same Stripe account, never two.
                account = await new AccountService(stripe).CreateAsync(new AccountCreateOptions
                {
                    Country = request.Country,
                    Email = request.Email,
                    Controller = new AccountControllerOptions
                    {
                        StripeDashboard = new AccountControllerStripeDashboardOptions { Type = "express" },
                        Fees = new AccountControllerFeesOptions { Payer = "application" },
                        Losses = new AccountControllerLossesOptions { Payments = "application" },
                        RequirementCollection = "stripe",
                    },
                    Capabilities = new AccountCapabilitiesOptions
                    {
                        Transfers = new AccountCapabilitiesTransfersOptions { Requested = true },
                    },
                    Metadata = new Dictionary<string, string> { ["provider_org_id"] = caller.OrgId.ToString() },
                }, new RequestOptions { IdempotencyKey = $"payout-account:{caller.OrgId}" }, ct);
            }
            catch (StripeException ex)
            {
                return StripeProblem(logger, ex);
            }
            await using var tx = await db.BeginAsync(ct);
            created = await tx.Connection.ExecuteAsync(new CommandDefinition("""
                INSERT INTO payout_accounts (id, provider_org_id, stripe_account_id, idempotency_key, country, email, payouts_enabled,
                                             charges_enabled, details_submitted, created_at, updated_at)
                VALUES (@id, @org, @account, @idempotencyKey, @Country, @Email, @payouts, @charges, @details, @now, @now)
                ON CONFLICT DO NOTHING
                """, new
                {
                    id = NewId.NextSequentialGuid(), org = caller.OrgId, account = account.Id, idempotencyKey, request.Country, request.Email,
                    payouts = account.PayoutsEnabled, charges = account.ChargesEnabled, details = account.DetailsSubmitted, now = tx.Now,
                }, tx.Transaction, cancellationToken: ct)) == 1;
            existing = await ByOrgAsync(tx.Connection, caller.OrgId, ct);
            await tx.CommitAsync(ct);
            if (existing!.IdempotencyKey != idempotencyKey)
                return Problems.Conflict("payout-account-exists", $"This org already has payout account {existing.Id}.");
        }

        var link = await LinkAsync(stripe, options.Value, existing.StripeAccountId, request.ReturnUrl, request.RefreshUrl, logger, ct);
        if (link.Problem is { } problem) return problem;
        var body = existing.ToApi(link.Link);
        return created ? TypedResults.Created($"/v1/payout-accounts/{existing.Id}", body) : TypedResults.Ok(body);
    }

    /// <summary>POST /v1/payout-accounts/{id}/onboarding-links: a fresh link (links expire after minutes).</summary>
    public static async Task<Results<Created<OnboardingLink>, ValidationProblem, ProblemHttpResult>> CreateLink(
        Caller caller, Guid id, LinkRequest? request, Db db, StripeClient stripe, IOptions<StripeOptions> options, ILogger<LinkRequest> logger,
        CancellationToken ct)
    {
        if (!caller.Has(OrgRoles.Provider)) return Problems.Forbidden("Only providers onboard payout accounts.");
        var v = new Validation();
        ValidateUrls(v, request?.ReturnUrl, request?.RefreshUrl);
        if (v.Failed) return v.Problem;
        Row? row;
        await using (var c = await db.DataSource.OpenConnectionAsync(ct))
            row = await ByIdAsync(c, id, caller.OrgId, ct);
        if (row is null) return Problems.NotFound("payout account", id);
        var link = await LinkAsync(stripe, options.Value, row.StripeAccountId, request?.ReturnUrl, request?.RefreshUrl, logger, ct);
        return link.Problem is { } problem ? problem : TypedResults.Created($"/v1/payout-accounts/{id}", link.Link!);
    }

    /// <summary>GET /v1/payout-accounts/{id}: the provider's own, or any for finance; someone else's is not found.</summary>
    public static async Task<Results<Ok<PayoutAccount>, ProblemHttpResult>> Get(Caller caller, Guid id, NpgsqlDataSource db, CancellationToken ct)
    {
        if (!caller.IsFinanceOrAdmin && !caller.Has(OrgRoles.Provider)) return Problems.Forbidden("Payout accounts are for providers and finance.");
        await using var c = await db.OpenConnectionAsync(ct);
        var row = await ByIdAsync(c, id, caller.IsFinanceOrAdmin ? null : caller.OrgId, ct);
        return row is null ? Problems.NotFound("payout account", id) : TypedResults.Ok(row.ToApi());
    }

    /// <summary>GET /v1/payout-accounts: the provider's own (at most one), or all for finance, in id order.</summary>
    public static async Task<Results<Ok<Invoices.Page<PayoutAccount>>, ValidationProblem, ProblemHttpResult>> List(
        Caller caller, NpgsqlDataSource db, string? cursor, int? limit, CancellationToken ct)
    {
        if (!caller.IsFinanceOrAdmin && !caller.Has(OrgRoles.Provider)) return Problems.Forbidden("Payout accounts are for providers and finance.");
        Guid? after = null;
        if (cursor is not null && !Guid.TryParse(cursor, out var g) || limit is < 1 or > 100)
            return Problems.Invalid(new Dictionary<string, string[]>
            {
                ["cursor"] = ["Pass back the next_cursor of the previous page unchanged; limit must be between 1 and 100."],
            });
        if (cursor is not null) after = Guid.Parse(cursor);
        var take = limit ?? 50;
        await using var c = await db.OpenConnectionAsync(ct);
        var rows = (await c.QueryAsync<Row>(new CommandDefinition($"""
            SELECT {Columns} FROM payout_accounts
            WHERE (@org::uuid IS NULL OR provider_org_id = @org) AND (@after::uuid IS NULL OR id > @after)
            ORDER BY id LIMIT @n
            """, new { org = caller.IsFinanceOrAdmin ? (Guid?)null : caller.OrgId, after, n = take + 1 }, cancellationToken: ct))).ToList();
        var page = rows.Take(take).Select(r => r.ToApi()).ToList();
        return TypedResults.Ok(new Invoices.Page<PayoutAccount>(page, rows.Count > take ? page[^1].Id.ToString() : null));
    }

    /// <summary>
    /// A signed account.updated: what Stripe says the account may do now. Applied only if it is newer than the last
    /// applied event (Stripe does not promise order); the event id was deduplicated by the caller.
    /// </summary>
    public static async Task ApplyAsync(Tx tx, Account account, DateTime eventCreated, ILogger logger, CancellationToken ct)
    {
        var updated = await tx.Connection.ExecuteAsync(new CommandDefinition("""
            UPDATE payout_accounts SET payouts_enabled = @PayoutsEnabled, charges_enabled = @ChargesEnabled,
                details_submitted = @DetailsSubmitted, disabled_reason = @reason, stripe_updated_at = @eventCreated, updated_at = @now
            WHERE stripe_account_id = @Id AND (stripe_updated_at IS NULL OR stripe_updated_at <= @eventCreated)
            """, new
            {
                account.Id, account.PayoutsEnabled, account.ChargesEnabled, account.DetailsSubmitted, reason = account.Requirements?.DisabledReason,
                eventCreated = DateTime.SpecifyKind(eventCreated, DateTimeKind.Utc), now = tx.Now,
            }, tx.Transaction, cancellationToken: ct));
        if (updated == 0)
            logger.LogWarning("account.updated for {Account} changed nothing (unknown account, or an older event than the last applied)", account.Id);
        else
            logger.LogInformation("Payout account {Account}: payouts_enabled={Payouts}, charges_enabled={Charges}", account.Id,
                account.PayoutsEnabled, account.ChargesEnabled);
    }

    private static void ValidateUrls(Validation v, string? returnUrl, string? refreshUrl)
    {
        foreach (var (field, url) in new[] { ("return_url", returnUrl), ("refresh_url", refreshUrl) })
            v.Require(url is null || (url.Length <= 2048 && Uri.TryCreate(url, UriKind.Absolute, out var u) && u.Scheme is "https" or "http"),
                field, "Give an absolute http(s) URL (at most 2048 characters) or leave it out for the configured default.");
    }

    private static async Task<(OnboardingLink? Link, ProblemHttpResult? Problem)> LinkAsync(StripeClient stripe, StripeOptions o, string account,
        string? returnUrl, string? refreshUrl, ILogger logger, CancellationToken ct)
    {
        try
        {
            var link = await new AccountLinkService(stripe).CreateAsync(new AccountLinkCreateOptions
            {
                Account = account,
                Type = "account_onboarding",
                ReturnUrl = returnUrl ?? o.ConnectReturnUrl,
                RefreshUrl = refreshUrl ?? o.ConnectRefreshUrl,
            }, new RequestOptions { IdempotencyKey = $"account-link:{account}:{NewId.NextGuid()}" }, ct);
            return (new OnboardingLink(link.Url, link.ExpiresAt), null);
        }
        catch (StripeException ex)
        {
            return (null, StripeProblem(logger, ex));
        }
    }

    private static ProblemHttpResult StripeProblem(ILogger logger, StripeException ex)
    {
        logger.LogWarning(ex, "Stripe refused a Connect request");
        return Problems.Of(StatusCodes.Status502BadGateway, "payment-provider-unavailable", "Payment provider unavailable",
            $"Stripe did not accept the request ({ex.StripeError?.Message ?? ex.Message}); retry with the same Idempotency-Key.");
    }

    private static Task<Row?> ByOrgAsync(NpgsqlConnection c, Guid org, CancellationToken ct) =>
        c.QuerySingleOrDefaultAsync<Row>(new CommandDefinition($"SELECT {Columns} FROM payout_accounts WHERE provider_org_id = @org",
            new { org }, cancellationToken: ct));

    private static Task<Row?> ByIdAsync(NpgsqlConnection c, Guid id, Guid? org, CancellationToken ct) =>
        c.QuerySingleOrDefaultAsync<Row>(new CommandDefinition($"""
            SELECT {Columns} FROM payout_accounts WHERE id = @id AND (@org::uuid IS NULL OR provider_org_id = @org)
            """, new { id, org }, cancellationToken: ct));
}
