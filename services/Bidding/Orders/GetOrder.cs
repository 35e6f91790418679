using Marketplace.ServiceDefaults.Data;
using Marketplace.ServiceDefaults.Web;
using Microsoft.AspNetCore.Http.HttpResults;

namespace Marketplace.Bidding.Orders;

internal static class GetOrder
{
    public static async Task<Results<Ok<OrderResponse>, ProblemHttpResult>> HandleAsync(Guid id, Caller caller, Db db, CancellationToken ct)
    {
        if (!caller.Has(OrgRoles.Renter)) return Problems.Forbidden("Orders belong to renters.");
        await using var tx = await db.BeginAsync(ct);
        var order = await OrderBook.ReadAsync(tx, id, caller.OrgId, ct);
        return order is null ? Problems.NotFound("order", id) : TypedResults.Ok(order);
    }
}
