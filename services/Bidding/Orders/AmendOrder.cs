using Dapper;
using Marketplace.ServiceDefaults.Data;
using Marketplace.ServiceDefaults.Web;
using Microsoft.AspNetCore.Http.HttpResults;

namespace Marketplace.Bidding.Orders;

/// <param name="MaxPricePerHour">The new max price (an interruptible order's new bid; bid_per_hour is accepted too).</param>
public sealed record AmendOrderRequest(MoneyInput? MaxPricePerHour, MoneyInput? BidPerHour);

/// <summary>
/// PATCH /v1/orders/{id}: a new price for an open order, which is then tried against the book at once. The amended order
/// goes to the back of its new price level (its time priority restarts), as on any exchange.
/// </summary>
internal static class AmendOrder
{
    public static async Task<Results<Ok<OrderResponse>, ValidationProblem, ProblemHttpResult>> HandleAsync(
        Guid id, AmendOrderRequest request, Caller caller, Db db, CancellationToken ct)
    {
        if (!caller.Has(OrgRoles.Renter)) return Problems.Forbidden("Only renters amend orders.");
        var v = new Validation();
        var field = request.MaxPricePerHour is null && request.BidPerHour is not null ? "bid_per_hour" : "max_price_per_hour";
        var price = request.MaxPricePerHour ?? request.BidPerHour;
        if (request.MaxPricePerHour is not null && request.BidPerHour is not null)
            v.Add("bid_per_hour", "give either bid_per_hour or max_price_per_hour, not both.");
        else if (price is null)
            v.Add(field, "is required: the new price, {\"amount\": <minor units per accelerator-hour>, \"currency\": \"CNY\"}.");
        else
        {
            v.Require(price.Amount is > 0, field + ".amount", "must be a positive amount in minor units (235 = 2.35).");
            v.Require(price.Currency is { Length: 3 } c && c.All(char.IsAsciiLetterUpper), field + ".currency",
                "must be a 3-letter ISO 4217 code in capitals, for example \"CNY\".");
        }
        if (v.Failed) return v.Problem;

        await using var tx = await db.BeginAsync(ct);
        // The market lock before the row lock, as a clearing takes them: the other way round two could deadlock.
        var market = await tx.Connection.QuerySingleOrDefaultAsync<(string Model, string? Group)?>(new CommandDefinition(
            "SELECT accelerator_model, region_group FROM orders WHERE id = @id AND renter_org_id = @org",
            new { id, org = caller.OrgId }, tx.Transaction, cancellationToken: ct));
        if (market is not { } m) return Problems.NotFound("order", id);
        await OrderBook.LockAsync(tx, m.Model, m.Group, ct);
        var order = await tx.Connection.QuerySingleOrDefaultAsync<OrderRow>(new CommandDefinition($"""
            SELECT {OrderRow.Columns} FROM orders WHERE id = @id AND renter_org_id = @org FOR UPDATE
            """, new { id, org = caller.OrgId }, tx.Transaction, cancellationToken: ct));
        if (order is null) return Problems.NotFound("order", id);
        if (order.Status != "open")
            return Problems.Conflict("order-not-open", $"Order {id} is {order.Status}; only an open order's price can be amended.");
        if (order.Type != "interruptible" && request.BidPerHour is not null)
        {
            v.Add("bid_per_hour", "is only for interruptible orders; use max_price_per_hour.");
            return v.Problem;
        }
        if (price!.Currency != order.MaxPriceCurrency)
        {
            v.Add(field + ".currency", $"must stay {order.MaxPriceCurrency}, the order's currency; place a new order to change it.");
            return v.Problem;
        }

        var bidBefore = await OrderBook.BestBidAsync(tx, order, ct);
        var amended = await tx.Connection.QuerySingleAsync<OrderRow>(new CommandDefinition($"""
            UPDATE orders SET max_price_amount = @amount, priority_at = @now, updated_at = @now WHERE id = @id
            RETURNING {OrderRow.Columns}
            """, new { id, amount = price.Amount!.Value, now = tx.Now }, tx.Transaction, cancellationToken: ct));
        await OrderBook.ClearOneAsync(tx, amended, placedNow: false, bidBefore, ct);
        var response = (await OrderBook.ReadAsync(tx, id, caller.OrgId, ct))!;
        await tx.CommitAsync(ct);
        return TypedResults.Ok(response);
    }
}
