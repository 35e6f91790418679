using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using System.Text.Json.Serialization;
using System.Text.RegularExpressions;
using Dapper;
using Marketplace.Bidding.Domain;
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
    string? TimeInForce,
    DateTimeOffset? EarliestStart = null,
    DateTimeOffset? LatestEnd = null,
    MoneyInput? BidPerHour = null,
    DateTimeOffset? ExpiresAt = null,
    // Left out of the idempotency hash when absent, so the hash of an order placed before the field existed is unchanged.
    [property: JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)] bool? VerifiedOnly = null);

internal static partial class PlaceOrder
{
    public const int MaxDurationSeconds = 30 * 24 * 3600;

    public static async Task<Results<Created<OrderResponse>, Ok<OrderResponse>, ValidationProblem, ProblemHttpResult>> HandleAsync(
        [FromHeader(Name = "Idempotency-Key")] string? idempotencyKey,
        PlaceOrderRequest request,
        Caller caller,
        Db db,
        IOptions<MarketOptions> market,
        TimeProvider time,
        PlacedOrders placed,
        ILogger<PlacedOrders> logger,
        CancellationToken ct)
    {
        if (!caller.Has(OrgRoles.Renter)) return Problems.Forbidden("Only renters place orders.");
        var v = Validate(idempotencyKey, request, market.Value, time.GetUtcNow());
        // A retry is checked as of the order it retries: its earliest_start or expires_at may have passed since, and the
        // renter must still get its order (or 422 for another body), never a 400 that says no order was placed.
        if (v.Failed && await PlacedAtAsync(db, caller, idempotencyKey, ct) is { } placedAt)
            v = Validate(idempotencyKey, request, market.Value, placedAt);
        if (v.Failed) return v.Problem;

        var type = request.Type!.Trim();
        var normalized = request with
        {
            // An interruptible order's bid may come as bid_per_hour or as max_price_per_hour: it is stored as the max price.
            MaxPricePerHour = request.MaxPricePerHour ?? request.BidPerHour,
            BidPerHour = null,
            LatestEnd = type == "reserved" ? request.LatestEnd ?? request.EarliestStart!.Value.AddSeconds(request.DurationSeconds!.Value) : null,
            Type = request.Type!.Trim(),
            AcceleratorModel = request.AcceleratorModel!.Trim(),
            Region = NullIfBlank(request.Region),
            Jurisdiction = NullIfBlank(request.Jurisdiction),
            TimeInForce = NullIfBlank(request.TimeInForce) ?? "gtc",
            // false is the default: absent and false are the same order.
            VerifiedOnly = request.VerifiedOnly == true ? true : null,
        };
        var hash = Convert.ToHexString(SHA256.HashData(Encoding.UTF8.GetBytes(JsonSerializer.Serialize(normalized))));

        // Accepted in a short transaction of its own; its connection is back in the pool before the wait below.
        var (early, order) = await AcceptAsync(db, caller, idempotencyKey!, hash, normalized, ct);
        if (early is { } refused) return refused;
        var orderId = order!.Id;

        // Accepted: the order is matched by its market's next batch, which the response waits for (a few ms normally).
        try
        {
            await placed.ClearAsync(order).WaitAsync(TimeSpan.FromSeconds(10), ct);
        }
        catch (Exception e) when (e is not OperationCanceledException || !ct.IsCancellationRequested)
        {
            // Still accepted; its state says "open" without a reason until due work clears it.
            logger.LogWarning(e, "Order {OrderId} was accepted but not cleared in time", orderId);
        }
        await using var read = await db.BeginAsync(ct);
        return TypedResults.Created($"/v1/orders/{orderId}", (await OrderBook.ReadAsync(read, orderId, caller.OrgId, ct))!);
    }

    private static async Task<(Results<Created<OrderResponse>, Ok<OrderResponse>, ValidationProblem, ProblemHttpResult>? Early, OrderRow? Order)>
        AcceptAsync(Db db, Caller caller, string idempotencyKey, string hash, PlaceOrderRequest normalized, CancellationToken ct)
    {
        await using var tx = await db.BeginAsync(ct);
        var orderId = NewId.NextGuid();
        var now = tx.Now;
        // A concurrent request with the same key waits here on the unique index, then finds the winner's row below.
        // RETURNING: the new order as the clearing needs it, without reading it back.
        var order = await tx.Connection.QuerySingleOrDefaultAsync<OrderRow>(new CommandDefinition($"""
            INSERT INTO orders (id, renter_org_id, idempotency_key, request_hash, type, time_in_force, status, accelerator_model,
                                accelerator_count, duration_seconds, max_price_amount, max_price_currency, region, jurisdiction,
                                created_at, updated_at, priority_at, region_group, earliest_start, latest_end, expires_at,
                                verified_only)
            VALUES (@orderId, @org, @idempotencyKey, @hash, @Type, @TimeInForce, 'open', @AcceleratorModel,
                    @count, @duration, @amount, @currency, @Region, @Jurisdiction, @now, @now, @now, @group, @EarliestStart,
                    @LatestEnd, @ExpiresAt, @verifiedOnly)
            ON CONFLICT (renter_org_id, idempotency_key) DO NOTHING
            RETURNING {OrderRow.Columns}
            """, new
            {
                orderId, org = caller.OrgId, idempotencyKey, hash, normalized.Type, normalized.TimeInForce, normalized.AcceleratorModel,
                count = normalized.AcceleratorCount!.Value, duration = (int)normalized.DurationSeconds!.Value,
                amount = normalized.MaxPricePerHour!.Amount!.Value, currency = normalized.MaxPricePerHour.Currency,
                normalized.Region, normalized.Jurisdiction, now,
                group = normalized.Region is null ? null : Markets.RegionGroup(normalized.Region),
                normalized.EarliestStart, normalized.LatestEnd, normalized.ExpiresAt, verifiedOnly = normalized.VerifiedOnly == true,
            }, tx.Transaction, cancellationToken: ct));

        if (order is null)
        {
            var existing = await tx.Connection.QuerySingleAsync<(Guid Id, string RequestHash)>(new CommandDefinition(
                "SELECT id, request_hash FROM orders WHERE renter_org_id = @org AND idempotency_key = @idempotencyKey",
                new { org = caller.OrgId, idempotencyKey }, tx.Transaction, cancellationToken: ct));
            if (existing.RequestHash != hash)
                return (Problems.Unprocessable("idempotency-key-reused",
                    $"The Idempotency-Key '{idempotencyKey}' was already used for a different order ({existing.Id}). "
                    + "Use a new key for a new order, or resend exactly the same body to get the original order."), null);
            return (TypedResults.Ok((await OrderBook.ReadAsync(tx, existing.Id, caller.OrgId, ct))!), null);
        }

        // Its expiry (if it has one) and the safety net in one statement.
        List<(string Kind, string Key, DateTimeOffset DueAt)> due = [(ClearPlacedOrder.Kind, orderId.ToString(), now + ClearPlacedOrder.Delay)];
        if (OrderBook.ExpiryDue(order) is { } expiry) due.Add((ExpireOrder.Kind, orderId.ToString(), expiry));
        await tx.ScheduleAllAsync(due, ct);
        await tx.CommitAsync(ct);
        return (null, order);
    }

    /// <summary>When the order with this Idempotency-Key was placed; null: none (or no usable key).</summary>
    private static async Task<DateTimeOffset?> PlacedAtAsync(Db db, Caller caller, string? idempotencyKey, CancellationToken ct)
    {
        if (string.IsNullOrWhiteSpace(idempotencyKey) || idempotencyKey.Length > 255) return null;
        await using var tx = await db.BeginAsync(ct);
        return await tx.Connection.QuerySingleOrDefaultAsync<DateTimeOffset?>(new CommandDefinition(
            "SELECT created_at FROM orders WHERE renter_org_id = @org AND idempotency_key = @idempotencyKey",
            new { org = caller.OrgId, idempotencyKey }, tx.Transaction, cancellationToken: ct));
    }

    private const int MaxAdvanceDays = 90;

    private static Validation Validate(string? idempotencyKey, PlaceOrderRequest r, MarketOptions market, DateTimeOffset now)
    {
        var v = new Validation();
        if (string.IsNullOrWhiteSpace(idempotencyKey))
            v.Add("Idempotency-Key", "The Idempotency-Key header is required: send a unique value per order (a UUID) and reuse it only to retry.");
        else if (idempotencyKey.Length > 255)
            v.Add("Idempotency-Key", "must be at most 255 characters.");

        var type = r.Type?.Trim();
        switch (type)
        {
            case null or "":
                v.Add("type", "is required: \"on_demand\", \"reserved\" or \"interruptible\".");
                break;
            case "on_demand" or "reserved" or "interruptible":
                break;
            default:
                v.Add("type", $"\"{r.Type}\" is not an order type; use \"on_demand\" (start now), \"reserved\" (a future window) "
                              + "or \"interruptible\" (a bid for spare capacity that may be preempted).");
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
        var priceField = type == "interruptible" && r.MaxPricePerHour is null ? "bid_per_hour" : "max_price_per_hour";
        if (type != "interruptible" && r.BidPerHour is not null)
            v.Add("bid_per_hour", "is only for interruptible orders; use max_price_per_hour.");
        else if (r.BidPerHour is not null && r.MaxPricePerHour is not null)
            v.Add("bid_per_hour", "give either bid_per_hour or max_price_per_hour (the same thing for an interruptible order), not both.");
        else if ((r.MaxPricePerHour ?? r.BidPerHour) is not { } max)
            v.Add(priceField, "is required: {\"amount\": <minor units per accelerator-hour>, \"currency\": \"CNY\"}.");
        else
        {
            v.Require(max.Amount is > 0, priceField + ".amount", "must be a positive amount in minor units (235 = 2.35).");
            v.Require(max.Currency is { Length: 3 } c && c.All(char.IsAsciiLetterUpper), priceField + ".currency",
                "must be a 3-letter ISO 4217 code in capitals, for example \"CNY\".");
        }
        if (type == "reserved")
        {
            if (r.EarliestStart is not { } earliest)
                v.Add("earliest_start", "is required for a reserved order: the earliest time the lease may start (ISO-8601 UTC).");
            else
            {
                v.Require(earliest >= now, "earliest_start", $"must not be in the past (now is {now.UtcDateTime:yyyy-MM-dd'T'HH:mm:ss'Z'}); "
                                                             + "use an on_demand order to start now.");
                v.Require(earliest <= now.AddDays(MaxAdvanceDays), "earliest_start", $"must be within {MaxAdvanceDays} days.");
                if (r.LatestEnd is { } latest && r.DurationSeconds is { } duration)
                    v.Require(latest >= earliest.AddSeconds(duration), "latest_end",
                        "must be at least duration_seconds after earliest_start (equal: a fixed window; later: a flexible one).");
            }
        }
        else
        {
            v.Require(r.EarliestStart is null, "earliest_start", "is only for reserved orders; on_demand and interruptible orders start now.");
            v.Require(r.LatestEnd is null, "latest_end", "is only for reserved orders; on_demand and interruptible orders start now.");
        }
        // Spelled as clusters are registered (Listings): an order for "CN-EAST" or "cn" would wait for ever, as no offer is there.
        v.Require(NullIfBlank(r.Region) is not { } region || region.Length <= 64 && Region().IsMatch(region), "region",
            "must be lower-case letters and digits in dash-separated words, at most 64 characters, as regions are listed, e.g. cn-east.");
        v.Require(NullIfBlank(r.Jurisdiction) is not { } jurisdiction || Jurisdiction().IsMatch(jurisdiction), "jurisdiction",
            "must be an ISO 3166-1 alpha-2 country code in upper case, as jurisdictions are listed, e.g. CN, DE, US.");
        var tif = NullIfBlank(r.TimeInForce);
        v.Require(tif is null or "gtc" or "ioc" or "gtt", "time_in_force",
            "must be \"gtc\" (wait in the book until filled or cancelled), \"ioc\" (match now or cancel) or \"gtt\" (wait until expires_at).");
        if (tif == "gtt")
        {
            if (r.ExpiresAt is not { } expires) v.Add("expires_at", "is required with time_in_force \"gtt\": when the order leaves the book.");
            else v.Require(expires > now, "expires_at", "must be in the future.");
        }
        else v.Require(r.ExpiresAt is null, "expires_at", "is only for time_in_force \"gtt\".");
        return v;
    }

    private static string? NullIfBlank(string? s) => string.IsNullOrWhiteSpace(s) ? null : s.Trim();

    [GeneratedRegex("^[a-z0-9]+(-[a-z0-9]+)*$")]
    private static partial Regex Region();

    [GeneratedRegex("^[A-Z]{2}$")]
    private static partial Regex Jurisdiction();
}
