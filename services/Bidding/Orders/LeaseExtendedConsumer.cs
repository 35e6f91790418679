using Dapper;
using Marketplace.Contracts;
using Marketplace.ServiceDefaults.Data;
using MassTransit;

namespace Marketplace.Bidding.Orders;

/// <summary>
/// The renter extended its lease on the same accelerators (Scheduling): its match holds them to the new end, so the book
/// does not sell them again from the old end (Scheduling would refuse every such match, and retrying it on the same offer
/// kept the order from capacity elsewhere).
/// </summary>
internal sealed class LeaseExtendedConsumer(Db db) : IConsumer<LeaseExtended>
{
    public async Task Consume(ConsumeContext<LeaseExtended> context)
    {
        var m = context.Message;
        var ct = context.CancellationToken;
        await using var tx = await db.BeginAsync(ct);
        if (!await tx.FirstDeliveryAsync(context, "bidding.lease-extended")) return;
        // Not a match under notice or released: Scheduling extends no lease under notice, and a released match holds nothing.
        await tx.Connection.ExecuteAsync(new CommandDefinition("""
            UPDATE matches SET end_at = @NewEnd
            WHERE order_id = @OrderId AND state = 'active' AND preempted_at IS NULL AND end_at < @NewEnd
            """, new { m.OrderId, NewEnd = m.NewEnd.ToUniversalTime() }, tx.Transaction, cancellationToken: ct));
        await tx.CommitAsync(ct);
    }
}

internal sealed class LeaseExtendedConsumerDefinition : ConsumerDefinition<LeaseExtendedConsumer>
{
    protected override void ConfigureConsumer(IReceiveEndpointConfigurator endpoint,
        IConsumerConfigurator<LeaseExtendedConsumer> consumer, IRegistrationContext context) =>
        consumer.UseConcurrentMessageLimit(16);
}

/// <summary>
/// Billing could not cover an extension and Scheduling puts the lease's end back: so does its match, and the accelerators
/// it gives back may fill standing orders of the offer's market.
/// </summary>
internal sealed class ExtensionRejectedConsumer(Db db) : IConsumer<ExtensionRejected>
{
    public async Task Consume(ConsumeContext<ExtensionRejected> context)
    {
        var m = context.Message;
        var ct = context.CancellationToken;
        await using var tx = await db.BeginAsync(ct);
        if (!await tx.FirstDeliveryAsync(context, "bidding.extension-rejected")) return;
        var args = new { m.OrderId, RevertTo = m.RevertTo.ToUniversalTime() };
        var market = await tx.Connection.QuerySingleOrDefaultAsync<(string Model, string Group)?>(new CommandDefinition("""
            SELECT o.accelerator_model, o.region_group FROM matches x JOIN offers o ON o.offer_id = x.offer_id
            WHERE x.order_id = @OrderId AND x.state = 'active' AND x.end_at > @RevertTo AND x.start_at < @RevertTo
            """, args, tx.Transaction, cancellationToken: ct));
        if (market is not { } mk)
        {
            await tx.CommitAsync(ct);
            return;
        }
        // The market's lock before the match's row, as a clearing takes them: the other way round the two could deadlock.
        await OrderBook.LockAsync(tx, mk.Model, mk.Group, ct);
        await tx.Connection.ExecuteAsync(new CommandDefinition("""
            UPDATE matches SET end_at = @RevertTo
            WHERE order_id = @OrderId AND state = 'active' AND end_at > @RevertTo AND start_at < @RevertTo
            """, args, tx.Transaction, cancellationToken: ct));
        await OrderBook.ClearStandingAsync(tx, mk.Model, mk.Group, ct);
        await tx.CommitAsync(ct);
    }
}

internal sealed class ExtensionRejectedConsumerDefinition : ConsumerDefinition<ExtensionRejectedConsumer>
{
    protected override void ConfigureConsumer(IReceiveEndpointConfigurator endpoint,
        IConsumerConfigurator<ExtensionRejectedConsumer> consumer, IRegistrationContext context) =>
        consumer.UseConcurrentMessageLimit(16);
}
