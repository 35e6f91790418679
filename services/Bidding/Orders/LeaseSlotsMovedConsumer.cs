using Dapper;
using Marketplace.Contracts;
using Marketplace.ServiceDefaults.Data;
using MassTransit;

namespace Marketplace.Bidding.Orders;

/// <summary>
/// Scheduling moved a lease off a failed node: its match now blocks the accelerators it moved to, and no longer the ones it
/// left (docs/reliability.md, known issue 8). A later slot set always wins over an earlier one, so a LeaseScheduled that
/// arrives after this changes nothing. The accelerators it left may fill standing orders of the offer's market.
/// </summary>
internal sealed class LeaseSlotsMovedConsumer(Db db) : IConsumer<LeaseSlotsMoved>
{
    public async Task Consume(ConsumeContext<LeaseSlotsMoved> context)
    {
        var m = context.Message;
        var ct = context.CancellationToken;
        await using var tx = await db.BeginAsync(ct);
        if (!await tx.FirstDeliveryAsync(context, "bidding.lease-slots-moved")) return;
        var market = await tx.Connection.QuerySingleOrDefaultAsync<(string Model, string Group)?>(new CommandDefinition("""
            UPDATE matches x SET slot_ids = @SlotIds, slot_ids_at = @At
            FROM offers o
            WHERE x.id = @MatchId AND o.offer_id = x.offer_id AND (x.slot_ids_at IS NULL OR x.slot_ids_at < @At)
            RETURNING o.accelerator_model, o.region_group
            """, new { m.MatchId, SlotIds = m.SlotIds.Distinct().ToArray(), At = m.At.ToUniversalTime() }, tx.Transaction, cancellationToken: ct));
        if (market is { } mk) await OrderBook.ClearStandingAsync(tx, mk.Model, mk.Group, ct);
        await tx.CommitAsync(ct);
    }
}

internal sealed class LeaseSlotsMovedConsumerDefinition : ConsumerDefinition<LeaseSlotsMovedConsumer>
{
    protected override void ConfigureConsumer(IReceiveEndpointConfigurator endpoint,
        IConsumerConfigurator<LeaseSlotsMovedConsumer> consumer, IRegistrationContext context) =>
        consumer.UseConcurrentMessageLimit(16);
}
