using Dapper;
using Marketplace.Contracts;
using Marketplace.ServiceDefaults.Data;
using MassTransit;

namespace Marketplace.Bidding.Orders;

/// <summary>
/// Scheduling could not place the match: its capacity is freed and the order goes back to the book with the reason
/// (an immediate-or-cancel order is cancelled instead). It is not rematched at once, which could pick the same
/// unplaceable offer again; the next offer of its market tries it.
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
        var released = await tx.Connection.ExecuteAsync(new CommandDefinition("""
            UPDATE matches SET state = 'released', released_at = @now, release_reason = @reason
            WHERE id = @MatchId AND order_id = @OrderId AND state = 'active'
            """, new { m.MatchId, m.OrderId, reason, now = tx.Now }, tx.Transaction, cancellationToken: ct));
        if (released == 1)
        {
            await tx.Connection.ExecuteAsync(new CommandDefinition("""
                UPDATE orders
                SET status = CASE WHEN time_in_force = 'ioc' THEN 'cancelled' ELSE 'open' END,
                    status_reason = CASE WHEN time_in_force = 'ioc' THEN @reason ELSE @reason || '; back in the book' END,
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
