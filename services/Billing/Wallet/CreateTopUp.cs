using Dapper;
using Marketplace.Billing.Domain;
using Marketplace.Contracts;
using Marketplace.ServiceDefaults.Data;
using Marketplace.ServiceDefaults.Web;
using MassTransit;
using Microsoft.AspNetCore.Http.HttpResults;
using Microsoft.AspNetCore.Mvc;
using Microsoft.Extensions.Options;
using Stripe;

namespace Marketplace.Billing.Wallet;

/// <summary>
/// Starts a wallet top-up: our top-up row first, then a Stripe PaymentIntent whose idempotency key is derived from
/// the top-up id, so a retried request (same Idempotency-Key) never creates a second PaymentIntent. The wallet is
/// credited only by the signed payment_intent.succeeded webhook.
/// </summary>
internal static class CreateTopUp
{
    public sealed record Request(Money? Amount);

    public sealed record Response(Guid Id, string Status, Money Amount, string? PaymentIntentId, string? ClientSecret, DateTime CreatedAt);

    internal sealed record Row(Guid Id, string Status, long Amount, string Currency, string? PaymentIntentId, string? ClientSecret, DateTime CreatedAt)
    {
        public Response ToResponse() => new(Id, Status, new Money(Amount, Currency), PaymentIntentId, ClientSecret, CreatedAt);
    }

    public static async Task<Results<Created<Response>, Ok<Response>, ValidationProblem, ProblemHttpResult>> Handle(
        Caller caller, Request request, [FromHeader(Name = "Idempotency-Key")] string? idempotencyKey,
        Db db, StripeClient stripe, IOptions<BillingOptions> options, ILogger<Request> logger, CancellationToken ct)
    {
        if (!caller.Has(OrgRoles.Renter)) return Problems.Forbidden("Only renters can top up a wallet.");
        var max = options.Value.MaxTopUpMinor;
        var v = new Validation()
            .Require(!string.IsNullOrWhiteSpace(idempotencyKey), "Idempotency-Key",
                "Send an Idempotency-Key header (e.g. a UUID) so a retried top-up never charges twice.")
            .Require(idempotencyKey is null || idempotencyKey.Length <= 255, "Idempotency-Key", "Use at most 255 characters.");
        if (request.Amount is null) v.Add("amount", "Give the amount as {\"amount\": 10000, \"currency\": \"CNY\"} in minor units.");
        else
        {
            v.Require(request.Amount.Amount > 0, "amount.amount", "The amount must be more than zero (minor units, e.g. 10000 = 100.00 CNY).");
            v.Require(request.Amount.Amount <= max, "amount.amount", $"A single top-up is at most {max} minor units; split larger ones.");
            v.Require(Currencies.IsCode(request.Amount.Currency), "amount.currency", "Use a 3-letter upper-case ISO 4217 code such as CNY.");
            if (request.Amount.Amount > 0 && Currencies.Exponent(request.Amount.Currency ?? "") == 3 && request.Amount.Amount % 10 != 0)
            {
                var down = request.Amount.Amount - request.Amount.Amount % 10;
                v.Add("amount.amount", $"Stripe charges {request.Amount.Currency} (three decimals) only in multiples of 10 minor units: " +
                                       $"give {down} or {down + 10}, not {request.Amount.Amount}.");
            }
        }
        if (v.Failed) return v.Problem;
        var amount = request.Amount!;

        Row row;
        bool created;
        await using (var tx = await db.BeginAsync(ct))
        {
            var id = NewId.NextSequentialGuid();
            var inserted = await tx.Connection.ExecuteAsync(new CommandDefinition("""
                INSERT INTO top_ups (id, renter_org_id, idempotency_key, amount, currency, status, created_at)
                VALUES (@id, @org, @idempotencyKey, @Amount, @Currency, 'pending', @now)
                ON CONFLICT (renter_org_id, idempotency_key) DO NOTHING
                """, new { id, org = caller.OrgId, idempotencyKey, amount.Amount, amount.Currency, now = tx.Now },
                tx.Transaction, cancellationToken: ct));
            created = inserted == 1;
            row = await ReadAsync(tx, caller.OrgId, idempotencyKey!, ct);
            await tx.CommitAsync(ct);
        }
        if (row.Amount != amount.Amount || row.Currency != amount.Currency)
            return Problems.Unprocessable("idempotency-key-reused",
                $"Idempotency-Key {idempotencyKey} was already used for a top-up of {Currencies.Format(row.Amount, row.Currency)}; use a new key for a different top-up.");

        if (row.PaymentIntentId is null)
        {
            PaymentIntent intent;
            try
            {
                intent = await new PaymentIntentService(stripe).CreateAsync(new PaymentIntentCreateOptions
                {
                    Amount = row.Amount,
                    Currency = row.Currency.ToLowerInvariant(),
                    Description = "Marketplace wallet top-up",
                    Metadata = new Dictionary<string, string> { ["top_up_id"] = row.Id.ToString(), ["renter_org_id"] = caller.OrgId.ToString() },
                }, new RequestOptions { IdempotencyKey = $"topup:{row.Id}" }, ct);
            }
            catch (StripeException ex)
            {
                logger.LogWarning(ex, "Stripe refused the PaymentIntent for top-up {TopUp}", row.Id);
                return Problems.Of(StatusCodes.Status502BadGateway, "payment-provider-unavailable", "Payment provider unavailable",
                    "The payment provider did not accept the top-up; retry with the same Idempotency-Key.");
            }
            await using var tx = await db.BeginAsync(ct);
            // The webhook may already have recorded the PaymentIntent (the fake confirms at once).
            await tx.Connection.ExecuteAsync(new CommandDefinition("""
                UPDATE top_ups SET payment_intent_id = COALESCE(payment_intent_id, @pi), client_secret = @secret WHERE id = @Id
                """, new { row.Id, pi = intent.Id, secret = intent.ClientSecret }, tx.Transaction, cancellationToken: ct));
            row = await ReadAsync(tx, caller.OrgId, idempotencyKey!, ct);
            await tx.CommitAsync(ct);
        }
        return created ? TypedResults.Created($"/v1/wallet/top-ups/{row.Id}", row.ToResponse()) : TypedResults.Ok(row.ToResponse());
    }

    private static Task<Row> ReadAsync(Tx tx, Guid org, string key, CancellationToken ct) =>
        tx.Connection.QuerySingleAsync<Row>(new CommandDefinition("""
            SELECT id, status, amount, currency, payment_intent_id, client_secret, created_at FROM top_ups
            WHERE renter_org_id = @org AND idempotency_key = @key
            """, new { org, key }, tx.Transaction, cancellationToken: ct));
}
