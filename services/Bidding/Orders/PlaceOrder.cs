using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using Dapper;
using Marketplace.ServiceDefaults.Data;
using Marketplace.ServiceDefaults.Web;
using MassTransit;
using Microsoft.AspNetCore.Http.HttpResults;
using Microsoft.AspNetCore.Mvc;
using Microsoft.Extensions.Options;

namespace Marketplace.Bidding.Orders;

public sealed record MoneyInput(long? Amount, string? Currency);

public sealed record PlaceOrderRequest(
    string? Type,
    string? AcceleratorModel,
    int? AcceleratorCount,
    long? DurationSeconds,
    MoneyInput? MaxPricePerHour,
    string? Region,
    string? Jurisdiction,
    string? TimeInForce);

internal static class PlaceOrder
{
    public const int MaxDurationSeconds = 30 * 24 * 3600;

    public static async Task<Results<Created<OrderResponse>, Ok<OrderResponse>, ValidationProblem, ProblemHttpResult>> HandleAsync(
        [FromHeader(Name = "Idempotency-Key")] string? idempotencyKey,
        PlaceOrderRequest request,
        Caller caller,
        Db db,
        IOptions<MarketOptions> market,
        CancellationToken ct)
    {
        if (!caller.Has(OrgRoles.Renter)) return Problems.Forbidden("Only renters place orders.");
        var v = Validate(idempotencyKey, request, market.Value);
        if (v.Failed) return v.Problem;

        var normalized = request with
        {
            Type = request.Type!.Trim(),
            AcceleratorModel = request.AcceleratorModel!.Trim(),
            Region = NullIfBlank(request.Region),
            Jurisdiction = NullIfBlank(request.Jurisdiction),
            TimeInForce = NullIfBlank(request.TimeInForce) ?? "gtc",
        };
        var hash = Convert.ToHexString(SHA256.HashData(Encoding.UTF8.GetBytes(JsonSerializer.Serialize(normalized))));

        await using var tx = await db.BeginAsync(ct);
        var orderId = NewId.NextGuid();
        var now = tx.Now;
        // A concurrent request with the same key waits here on the unique index, then finds the winner's row below.
        var inserted = await tx.Connection.ExecuteAsync(new CommandDefinition("""
            INSERT INTO orders (id, renter_org_id, idempotency_key, request_hash, type, time_in_force, status, accelerator_model,
                                accelerator_count, duration_seconds, max_price_amount, max_price_currency, region, jurisdiction,
                                created_at, updated_at)
            VALUES (@orderId, @org, @idempotencyKey, @hash, @Type, @TimeInForce, 'open', @AcceleratorModel,
                    @count, @duration, @amount, @currency, @Region, @Jurisdiction, @now, @now)
            ON CONFLICT (renter_org_id, idempotency_key) DO NOTHING
            """, new
            {
                orderId, org = caller.OrgId, idempotencyKey, hash, normalized.Type, normalized.TimeInForce, normalized.AcceleratorModel,
                count = normalized.AcceleratorCount!.Value, duration = (int)normalized.DurationSeconds!.Value,
                amount = normalized.MaxPricePerHour!.Amount!.Value, currency = normalized.MaxPricePerHour.Currency,
                normalized.Region, normalized.Jurisdiction, now,
            }, tx.Transaction, cancellationToken: ct));

        if (inserted == 0)
        {
            var existing = await tx.Connection.QuerySingleAsync<(Guid Id, string RequestHash)>(new CommandDefinition(
                "SELECT id, request_hash FROM orders WHERE renter_org_id = @org AND idempotency_key = @idempotencyKey",
                new { org = caller.OrgId, idempotencyKey }, tx.Transaction, cancellationToken: ct));
            if (existing.RequestHash != hash)
                return Problems.Unprocessable("idempotency-key-reused",
                    $"The Idempotency-Key '{idempotencyKey}' was already used for a different order ({existing.Id}). "
                    + "Use a new key for a new order, or resend exactly the same body to get the original order.");
            return TypedResults.Ok((await OrderBook.ReadAsync(tx, existing.Id, caller.OrgId, ct))!);
        }

        var order = await tx.Connection.QuerySingleAsync<OrderRow>(new CommandDefinition(
            $"SELECT {OrderRow.Columns} FROM orders WHERE id = @orderId", new { orderId }, tx.Transaction, cancellationToken: ct));
        await OrderBook.LockMarketAsync(tx, order.AcceleratorModel, ct);
        var candidates = await OrderBook.LoadCandidatesAsync(tx, order.AcceleratorModel, now, ct);
        await OrderBook.MatchAsync(tx, order, candidates, cancelWhenUnmatched: order.TimeInForce == "ioc", ct);
        var response = (await OrderBook.ReadAsync(tx, orderId, caller.OrgId, ct))!;
        await tx.CommitAsync(ct);
        return TypedResults.Created($"/v1/orders/{orderId}", response);
    }

    private static Validation Validate(string? idempotencyKey, PlaceOrderRequest r, MarketOptions market)
    {
        var v = new Validation();
        if (string.IsNullOrWhiteSpace(idempotencyKey))
            v.Add("Idempotency-Key", "The Idempotency-Key header is required: send a unique value per order (a UUID) and reuse it only to retry.");
        else if (idempotencyKey.Length > 255)
            v.Add("Idempotency-Key", "must be at most 255 characters.");

        switch (r.Type?.Trim())
        {
            case null or "":
                v.Add("type", "is required; use \"on_demand\".");
                break;
            case "on_demand":
                break;
            case "reserved" or "interruptible":
                v.Add("type", $"\"{r.Type}\" orders are not supported yet; use \"on_demand\".");
                break;
            default:
                v.Add("type", $"\"{r.Type}\" is not an order type; use \"on_demand\".");
                break;
        }
        v.Require(!string.IsNullOrWhiteSpace(r.AcceleratorModel), "accelerator_model", "is required, for example \"h100-sxm\" (see GET /v1/accelerators).");
        v.Require(r.AcceleratorModel is null || r.AcceleratorModel.Length <= 64, "accelerator_model", "must be at most 64 characters.");
        v.Require(r.AcceleratorCount is >= 1 and <= 64, "accelerator_count", "must be between 1 and 64.");
        if (r.DurationSeconds is not { } d)
            v.Add("duration_seconds", $"is required: at least {market.MinLeaseSeconds} and at most {MaxDurationSeconds} (30 days).");
        else
        {
            v.Require(d >= market.MinLeaseSeconds, "duration_seconds", $"must be at least {market.MinLeaseSeconds} (the minimum lease).");
            v.Require(d <= MaxDurationSeconds, "duration_seconds", $"must be at most {MaxDurationSeconds} (30 days).");
        }
        if (r.MaxPricePerHour is not { } max)
            v.Add("max_price_per_hour", "is required: {\"amount\": <minor units per accelerator-hour>, \"currency\": \"CNY\"}.");
        else
        {
            v.Require(max.Amount is > 0, "max_price_per_hour.amount", "must be a positive amount in minor units (235 = 2.35).");
            v.Require(max.Currency is { Length: 3 } c && c.All(char.IsAsciiLetterUpper), "max_price_per_hour.currency",
                "must be a 3-letter ISO 4217 code in capitals, for example \"CNY\".");
        }
        v.Require(r.Region is null || r.Region.Length <= 64, "region", "must be at most 64 characters.");
        v.Require(r.Jurisdiction is null || r.Jurisdiction.Length <= 64, "jurisdiction", "must be at most 64 characters.");
        v.Require(NullIfBlank(r.TimeInForce) is null or "gtc" or "ioc", "time_in_force",
            "must be \"gtc\" (wait in the book until filled or cancelled) or \"ioc\" (match now or cancel).");
        return v;
    }

    private static string? NullIfBlank(string? s) => string.IsNullOrWhiteSpace(s) ? null : s.Trim();
}
