using Dapper;
using Marketplace.Contracts;
using Marketplace.ServiceDefaults.Data;
using MassTransit;

namespace Marketplace.Bidding.Orders;

/// <summary>
/// Scheduling could not place the match: its capacity is freed and the order goes back to the book with the reason
/// (an immediate-or-cancel order is cancelled instead). It is not rematched at once, which could pick the same
/// unplaceable accelerators again. When Scheduling says only the accelerators were booked (<see cref="PlacementFailed.SlotsBooked"/>:
/// Bidding's view was behind), its market is cleared again a little later (<see cref="ClearMarket.AfterPlacementFailedAsync"/>);
/// otherwise (a node unhealthy, in maintenance or unverified, which Bidding cannot see) the market's next order or offer
/// tries it, as would a timer only to be refused again.
/// </summary>
internal sealed class PlacementFailedConsumer(Db db) : IConsumer<PlacementFailed>
{
    public async Task Consume(ConsumeContext<PlacementFailed> context)
    {
        var m = context.Message;
        var ct = context.CancellationToken;
        await using var tx = await db.BeginAsync(ct);
        if (!await tx.FirstDeliveryAsync(context, "bidding.placement-failed")) return;
        var reason = $"the match could not be placed: {m.Reason}";
        // The retry is scheduled under the market's lock, taken before this transaction locks anything a clearing of the
        // market may lock too (the match, the order): a running retry holds its item's row while it clears.
        var retry = !m.SlotsBooked ? null : await tx.Connection.QuerySingleOrDefaultAsync<(string Model, string Group, int Released)?>(new CommandDefinition("""
            SELECT o.accelerator_model, f.region_group,
                   (SELECT count(*)::int FROM matches r WHERE r.order_id = x.order_id AND r.state = 'released')
            FROM matches x JOIN orders o ON o.id = x.order_id JOIN offers f ON f.offer_id = x.offer_id
            WHERE x.id = @MatchId AND x.order_id = @OrderId AND x.state = 'active' AND o.status = 'matched' AND o.time_in_force <> 'ioc'
            """, new { m.MatchId, m.OrderId }, tx.Transaction, cancellationToken: ct));
        if (retry is { } r)
        {
            await OrderBook.LockAsync(tx, r.Model, r.Group, ct);
            await ClearMarket.AfterPlacementFailedAsync(tx, r.Model, r.Group, r.Released, ct);
        }
        var released = await tx.Connection.ExecuteAsync(new CommandDefinition("""
            UPDATE matches SET state = 'released', released_at = @now, release_reason = @reason
            WHERE id = @MatchId AND order_id = @OrderId AND state = 'active'
            """, new { m.MatchId, m.OrderId, reason, now = tx.Now }, tx.Transaction, cancellationToken: ct));
        if (released == 1)
        {
            // An order whose time ran out while it was matched does not go back: its order.expire found it matched and left
            // it, so in the book it would never leave (a gtt order) or wait there with a passed window (a reserved one). It
            // ends now as order.expire would have ended it.
            await tx.Connection.ExecuteAsync(new CommandDefinition("""
                UPDATE orders
                SET status = CASE WHEN time_in_force = 'ioc' OR expires_at <= @now
                                       OR latest_end - make_interval(secs => duration_seconds) < @now THEN 'cancelled'
                                  ELSE 'open' END,
                    status_reason = CASE
                        WHEN time_in_force = 'ioc' THEN @reason
                        WHEN expires_at <= @now
                            THEN 'expired: good-til-time ended at ' || to_char(expires_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"')
                                 || ' before the order was filled; last reason: ' || @reason
                        WHEN latest_end - make_interval(secs => duration_seconds) < @now
                            THEN 'the window has passed: the lease can no longer end by '
                                 || to_char(latest_end AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"') || '; last reason: ' || @reason
                        ELSE @reason || '; back in the book' END,
                    updated_at = @now
                WHERE id = @OrderId AND status = 'matched'
                """, new { m.OrderId, reason, now = tx.Now }, tx.Transaction, cancellationToken: ct));
        }
        await tx.CommitAsync(ct);
    }
}

internal sealed class PlacementFailedConsumerDefinition : ConsumerDefinition<PlacementFailedConsumer>
{
    protected override void ConfigureConsumer(IReceiveEndpointConfigurator endpoint,
        IConsumerConfigurator<PlacementFailedConsumer> consumer, IRegistrationContext context) =>
        consumer.UseConcurrentMessageLimit(16);
}
