using Dapper;
using Marketplace.Contracts;
using Marketplace.ServiceDefaults.Data;
using MassTransit;

namespace Marketplace.Bidding.Orders;

/// <summary>
/// A lease that ended early (cancelled, failed, preempted) gives the rest of its window back to the offer: the match
/// is released if the lease never started, or shortened to the end otherwise. A completed lease changes nothing.
/// </summary>
internal sealed class LeaseEndedConsumer(Db db) : IConsumer<LeaseEnded>
{
    public async Task Consume(ConsumeContext<LeaseEnded> context)
    {
        var m = context.Message;
        if (m.Status == "completed") return;
        var ct = context.CancellationToken;
        await using var tx = await db.BeginAsync(ct);
        if (!await tx.FirstDeliveryAsync(context, "bidding.lease-ended")) return;
        var reason = $"lease {m.Status}: {m.Reason}";
        await tx.Connection.ExecuteAsync(new CommandDefinition("""
            UPDATE matches SET state = 'released', released_at = @now, release_reason = @reason
            WHERE order_id = @OrderId AND state = 'active' AND start_at >= @At;
            UPDATE matches SET end_at = @At, release_reason = @reason
            WHERE order_id = @OrderId AND state = 'active' AND end_at > @At;
            """, new { m.OrderId, m.At, reason, now = tx.Now }, tx.Transaction, cancellationToken: ct));
        // The capacity that came back may fill standing orders of the offer's market.
        var market = await tx.Connection.QuerySingleOrDefaultAsync<(string Model, string Group)?>(new CommandDefinition("""
            SELECT o.accelerator_model, o.region_group FROM matches x JOIN offers o USING (offer_id)
            WHERE x.order_id = @OrderId ORDER BY x.created_at DESC LIMIT 1
            """, new { m.OrderId }, tx.Transaction, cancellationToken: ct));
        if (market is { } mk) await OrderBook.ClearStandingAsync(tx, mk.Model, mk.Group, ct);
        await tx.CommitAsync(ct);
    }
}

internal sealed class LeaseEndedConsumerDefinition : ConsumerDefinition<LeaseEndedConsumer>
{
    protected override void ConfigureConsumer(IReceiveEndpointConfigurator endpoint,
        IConsumerConfigurator<LeaseEndedConsumer> consumer, IRegistrationContext context) =>
        consumer.UseConcurrentMessageLimit(16);
}
