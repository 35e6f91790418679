using Dapper;
using Marketplace.Contracts;
using Marketplace.ServiceDefaults.Data;
using MassTransit;

namespace Marketplace.Bidding.Orders;

/// <summary>The renter cannot pay for the lease: the order is cancelled with the reason and its capacity freed.</summary>
internal sealed class HoldRejectedConsumer(Db db) : IConsumer<HoldRejected>
{
    public async Task Consume(ConsumeContext<HoldRejected> context)
    {
        var m = context.Message;
        var ct = context.CancellationToken;
        await using var tx = await db.BeginAsync(ct);
        if (!await tx.FirstDeliveryAsync(context, "bidding.hold-rejected")) return;
        var reason = $"the wallet cannot cover the lease: {m.Reason}";
        await tx.Connection.ExecuteAsync(new CommandDefinition("""
            UPDATE matches SET state = 'released', released_at = @now, release_reason = @reason
            WHERE order_id = @OrderId AND state = 'active';
            UPDATE orders SET status = 'cancelled', status_reason = @reason, lease_id = COALESCE(lease_id, @LeaseId), updated_at = @now
            WHERE id = @OrderId AND status IN ('matched', 'filled');
            """, new { m.OrderId, m.LeaseId, reason, now = tx.Now }, tx.Transaction, cancellationToken: ct));
        await tx.CommitAsync(ct);
    }
}

internal sealed class HoldRejectedConsumerDefinition : ConsumerDefinition<HoldRejectedConsumer>
{
    protected override void ConfigureConsumer(IReceiveEndpointConfigurator endpoint,
        IConsumerConfigurator<HoldRejectedConsumer> consumer, IRegistrationContext context) =>
        consumer.UseConcurrentMessageLimit(16);
}
