using Dapper;
using Marketplace.ServiceDefaults.Data;
using Marketplace.ServiceDefaults.Web;
using Microsoft.AspNetCore.Http.HttpResults;

namespace Marketplace.Bidding.Orders;

internal static class CancelOrder
{
    public static async Task<Results<Ok<OrderResponse>, ProblemHttpResult>> HandleAsync(Guid id, Caller caller, Db db, CancellationToken ct)
    {
        if (!caller.Has(OrgRoles.Renter)) return Problems.Forbidden("Only renters cancel orders.");
        await using var tx = await db.BeginAsync(ct);
        // Only an open order leaves the book here; a matched one is already on its way to a lease (cancel the lease instead).
        var row = await tx.Connection.QuerySingleOrDefaultAsync<OrderRow>(new CommandDefinition($"""
            SELECT {OrderRow.Columns} FROM orders WHERE id = @id AND renter_org_id = @org FOR UPDATE
            """, new { id, org = caller.OrgId }, tx.Transaction, cancellationToken: ct));
        if (row is null) return Problems.NotFound("order", id);
        var status = row.Status;
        if (status != "open")
            return Problems.Conflict("order-not-open", status switch
            {
                "cancelled" => $"Order {id} is already cancelled.",
                "filled" => $"Order {id} is filled; cancel its lease instead (POST /v1/leases/{{id}}/cancel).",
                _ => $"Order {id} is {status} and on its way to a lease; cancel the lease once it is scheduled.",
            });
        var bidBefore = await OrderBook.BestBidAsync(tx, row, ct);
        await tx.Connection.ExecuteAsync(new CommandDefinition("""
            UPDATE orders SET status = 'cancelled', status_reason = 'cancelled by the renter', updated_at = @now WHERE id = @id
            """, new { id, now = tx.Now }, tx.Transaction, cancellationToken: ct));
        await OrderBook.TickIfBestBidMovedAsync(tx, row, bidBefore, ct);
        var order = (await OrderBook.ReadAsync(tx, id, caller.OrgId, ct))!;
        await tx.CommitAsync(ct);
        return TypedResults.Ok(order);
    }
}
