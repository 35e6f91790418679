using Dapper;
using Marketplace.Contracts;
using Marketplace.ServiceDefaults.Data;
using MassTransit;

namespace Marketplace.Bidding.Orders;

/// <summary>Scheduling placed the match on concrete slots: the order is filled by that lease.</summary>
internal sealed class LeaseScheduledConsumer(Db db) : IConsumer<LeaseScheduled>
{
    public async Task Consume(ConsumeContext<LeaseScheduled> context)
    {
        var m = context.Message;
        var ct = context.CancellationToken;
        await using var tx = await db.BeginAsync(ct);
        // One round trip, with the inbox mark. The lease id is kept even if the order was closed meanwhile (a hold rejection that overtook this
        // event). The match then holds exactly the lease's accelerators for its whole window (Clearing.Free; unless a move
        // of the lease, LeaseSlotsMoved, overtook this event: the later slot set wins), and a late
        // on-demand match runs from when Scheduling placed it, for the ordered duration (LateMatch): not once the lease
        // ended, was preempted or released here. Last, a match preempted or revoked before Scheduling had booked its lease:
        // that request found no lease and changed nothing, so it is made again below now that the lease exists (a second
        // request for a lease with notice is a no-op).
        (string State, DateTimeOffset EndAt, string Reason)? taken;
        await using (var reader = await tx.FirstDeliveryWithAsync(context, "bidding.lease-scheduled", """
            UPDATE orders o
            SET lease_id = COALESCE(o.lease_id, @LeaseId),
                status = CASE WHEN o.status = 'matched' THEN 'filled' ELSE o.status END,
                status_reason = CASE WHEN o.status = 'matched' THEN NULL ELSE o.status_reason END,
                updated_at = @now
            WHERE o.id = @OrderId
              AND EXISTS (SELECT 1 FROM matches x WHERE x.id = @MatchId AND x.order_id = o.id);
            UPDATE matches
            SET slot_ids = CASE WHEN slot_ids_at IS NULL OR slot_ids_at < @At THEN @SlotIds ELSE slot_ids END,
                slot_ids_at = CASE WHEN slot_ids_at IS NULL OR slot_ids_at < @At THEN @At ELSE slot_ids_at END,
                start_at = CASE WHEN state = 'active' AND preempted_at IS NULL AND release_reason IS NULL AND start_at < @Start
                                THEN @Start ELSE start_at END,
                end_at = CASE WHEN state = 'active' AND preempted_at IS NULL AND release_reason IS NULL AND start_at < @Start
                              THEN @End ELSE end_at END
            WHERE id = @MatchId;
            SELECT state, end_at, coalesce(preempt_reason, release_reason, 'preempted') FROM matches
            WHERE id = @MatchId AND preempted_at IS NOT NULL;
            """, new
            {
                m.LeaseId, m.OrderId, m.MatchId, now = tx.Now, SlotIds = m.SlotIds.Distinct().ToArray(),
                Start = m.Start.ToUniversalTime(), End = m.End.ToUniversalTime(), At = m.At.ToUniversalTime(),
            }))
        {
            if (reader is null) return; // handled before
            taken = await reader.ReadSingleOrDefaultAsync<(string State, DateTimeOffset EndAt, string Reason)?>();
        }
        if (taken is { } t)
        {
            var notice = t.State == "active" ? Math.Max(0, (int)Math.Ceiling((t.EndAt - tx.Now).TotalSeconds)) : 0;
            await tx.PublishAsync(new PreemptionRequested(m.MatchId, m.OrderId, t.Reason, notice, tx.Now), ct);
        }
        await tx.CommitAsync(ct);
    }
}

internal sealed class LeaseScheduledConsumerDefinition : ConsumerDefinition<LeaseScheduledConsumer>
{
    protected override void ConfigureConsumer(IReceiveEndpointConfigurator endpoint,
        IConsumerConfigurator<LeaseScheduledConsumer> consumer, IRegistrationContext context) =>
        consumer.UseConcurrentMessageLimit(16);
}
