using System.Text;
using Dapper;
using Marketplace.Billing.Domain;
using Marketplace.Billing.Ledger;
using Marketplace.ServiceDefaults.Data;
using Marketplace.ServiceDefaults.Web;
using Microsoft.AspNetCore.Http.HttpResults;
using Microsoft.Extensions.Options;
using Stripe;

namespace Marketplace.Billing.Wallet;

/// <summary>
/// Stripe's signed events. Verified on the RAW body (re-serialised JSON would not match the signature), against our
/// clock, and deduplicated by event id: Stripe delivers at least once, we credit exactly once.
/// Mapped outside /v1 (the gateway forwards POST /v1/webhooks/stripe here without identity headers).
/// </summary>
internal static class StripeWebhook
{
    public sealed record Ack(bool Received, bool Duplicate);

    public static async Task<Results<Ok<Ack>, ProblemHttpResult>> Handle(HttpRequest request, Db db, IOptions<StripeOptions> options,
        TimeProvider time, ILogger<Ack> logger, CancellationToken ct)
    {
        string json;
        using (var reader = new StreamReader(request.Body, Encoding.UTF8))
            json = await reader.ReadToEndAsync(ct);

        var signature = request.Headers["Stripe-Signature"].ToString();
        if (string.IsNullOrEmpty(signature)) return NotAuthentic(logger, "no Stripe-Signature header");
        Event stripeEvent;
        try
        {
            stripeEvent = EventUtility.ConstructEvent(json, signature, options.Value.WebhookSecret,
                options.Value.WebhookToleranceSeconds, time.GetUtcNow().ToUnixTimeSeconds(), throwOnApiVersionMismatch: false);
        }
        catch (Exception ex) when (ex is StripeException or System.Text.Json.JsonException or Newtonsoft.Json.JsonException or ArgumentException)
        {
            return NotAuthentic(logger, ex.Message);
        }

        await using var tx = await db.BeginAsync(ct);
        var first = await tx.Connection.ExecuteAsync(new CommandDefinition("""
            INSERT INTO stripe_events (event_id, type, received_at) VALUES (@Id, @Type, @now) ON CONFLICT DO NOTHING
            """, new { stripeEvent.Id, stripeEvent.Type, now = tx.Now }, tx.Transaction, cancellationToken: ct)) == 1;
        if (!first) return TypedResults.Ok(new Ack(true, true));

        if (stripeEvent.Type == EventTypes.PaymentIntentSucceeded && stripeEvent.Data.Object is PaymentIntent intent)
            await CreditTopUpAsync(tx, intent, logger, ct);
        else if (stripeEvent.Type == EventTypes.AccountUpdated && stripeEvent.Data.Object is Account account)
            await Payouts.PayoutAccounts.ApplyAsync(tx, account, stripeEvent.Created, logger, ct);
        await tx.CommitAsync(ct);
        return TypedResults.Ok(new Ack(true, false));
    }

    private static ProblemHttpResult NotAuthentic(ILogger logger, string reason)
    {
        logger.LogWarning("Rejected a Stripe webhook: {Reason}", reason);
        return Problems.Of(StatusCodes.Status400BadRequest, "invalid-webhook-signature", "The webhook is not authentic",
            "The Stripe-Signature header is missing, does not match the body, or is too old.");
    }

    private sealed record TopUp(Guid Id, Guid RenterOrgId, long Amount, string Currency, string Status);

    private static async Task CreditTopUpAsync(Tx tx, PaymentIntent intent, ILogger logger, CancellationToken ct)
    {
        Guid? topUpId = intent.Metadata is not null && intent.Metadata.TryGetValue("top_up_id", out var s) && Guid.TryParse(s, out var g) ? g : null;
        var topUp = await tx.Connection.QuerySingleOrDefaultAsync<TopUp>(new CommandDefinition("""
            SELECT id, renter_org_id, amount, currency, status FROM top_ups
            WHERE id = @topUpId OR payment_intent_id = @pi LIMIT 1 FOR UPDATE
            """, new { topUpId, pi = intent.Id }, tx.Transaction, cancellationToken: ct));
        if (topUp is null)
        {
            logger.LogWarning("payment_intent.succeeded for {PaymentIntent} matches no top-up; nothing credited", intent.Id);
            return;
        }
        if (topUp.Status == "succeeded") return;

        // Credit what Stripe says it received, in its currency; a mismatch with the request is logged, not hidden.
        var received = intent.AmountReceived > 0 ? intent.AmountReceived : intent.Amount;
        var currency = intent.Currency.ToUpperInvariant();
        if (received != topUp.Amount || currency != topUp.Currency)
            logger.LogWarning("Top-up {TopUp} asked for {Asked} {AskedCurrency} but Stripe received {Received} {Currency}",
                topUp.Id, topUp.Amount, topUp.Currency, received, currency);
        if (received > 0)
            await LedgerStore.PostAsync(tx, LedgerTransaction.Transfer($"topup:{topUp.Id}", "top_up",
                Accounts.StripeClearing, Accounts.RenterAvailable(topUp.RenterOrgId), currency, received), ct);
        await tx.Connection.ExecuteAsync(new CommandDefinition("""
            UPDATE top_ups SET status = 'succeeded', succeeded_at = @now, payment_intent_id = COALESCE(payment_intent_id, @pi) WHERE id = @Id
            """, new { topUp.Id, now = tx.Now, pi = intent.Id }, tx.Transaction, cancellationToken: ct));
    }
}
