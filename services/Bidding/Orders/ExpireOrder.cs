using Dapper;
using Marketplace.ServiceDefaults.Data;
using Marketplace.ServiceDefaults.Messaging;

namespace Marketplace.Bidding.Orders;

/// <summary>
/// Due work "order.expire": a standing order leaves the book when its time runs out – a gtt order at expires_at, a
/// reserved order at the latest start its window allows. An order matched meanwhile is left alone.
/// </summary>
internal sealed class ExpireOrder : IDueWorkHandler
{
    public const string Kind = "order.expire";

    string IDueWorkHandler.Kind => Kind;

    public async Task HandleAsync(DueItem item, Tx tx, CancellationToken ct)
    {
        var id = Guid.Parse(item.Key);
        var order = await tx.Connection.QuerySingleOrDefaultAsync<OrderRow>(new CommandDefinition(
            $"SELECT {OrderRow.Columns} FROM orders WHERE id = @id AND status = 'open' FOR UPDATE", new { id }, tx.Transaction,
            cancellationToken: ct));
        if (order is null) return;
        var bidBefore = await OrderBook.BestBidAsync(tx, order, ct);
        await tx.Connection.ExecuteAsync(new CommandDefinition("""
            UPDATE orders
            SET status = 'cancelled', alternatives = '{}', updated_at = @now,
                status_reason = CASE
                    WHEN expires_at IS NOT NULL AND expires_at <= @now
                        THEN 'expired: good-til-time ended at ' || to_char(expires_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"')
                             || ' before the order was filled; last reason: ' || coalesce(status_reason, 'none')
                    ELSE 'the window has passed: the lease can no longer end by '
                         || to_char(latest_end AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"') || '; last reason: ' || coalesce(status_reason, 'none')
                END
            WHERE id = @id AND status = 'open'
            """, new { id, now = tx.Now }, tx.Transaction, cancellationToken: ct));
        await OrderBook.TickIfBestBidMovedAsync(tx, order, bidBefore, ct);
    }
}
