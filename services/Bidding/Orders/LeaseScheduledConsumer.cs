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
        if (!await tx.FirstDeliveryAsync(context, "bidding.lease-scheduled")) return;
        // The lease id is kept even if the order was closed meanwhile (a hold rejection that overtook this event).
        await tx.Connection.ExecuteAsync(new CommandDefinition("""
            UPDATE orders o
            SET lease_id = COALESCE(o.lease_id, @LeaseId),
                status = CASE WHEN o.status = 'matched' THEN 'filled' ELSE o.status END,
                status_reason = CASE WHEN o.status = 'matched' THEN NULL ELSE o.status_reason END,
                updated_at = @now
            WHERE o.id = @OrderId
              AND EXISTS (SELECT 1 FROM matches x WHERE x.id = @MatchId AND x.order_id = o.id)
            """, new { m.LeaseId, m.OrderId, m.MatchId, now = tx.Now }, tx.Transaction, cancellationToken: ct));
        // The accelerators the lease holds: from now on the match blocks exactly these for its whole window (Clearing.Free),
        // unless a move of the lease (LeaseSlotsMoved, later) overtook this event.
        await tx.Connection.ExecuteAsync(new CommandDefinition(
            "UPDATE matches SET slot_ids = @SlotIds, slot_ids_at = @At WHERE id = @MatchId AND (slot_ids_at IS NULL OR slot_ids_at < @At)",
            new { m.MatchId, SlotIds = m.SlotIds.Distinct().ToArray(), At = m.At.ToUniversalTime() }, tx.Transaction, cancellationToken: ct));
        // A late on-demand match runs from when Scheduling placed it, for the ordered duration (LateMatch): the match now
        // holds the offer's capacity over the lease's window. Not once the lease ended, was preempted or released here.
        await tx.Connection.ExecuteAsync(new CommandDefinition("""
            UPDATE matches SET start_at = @Start, end_at = @End
            WHERE id = @MatchId AND state = 'active' AND preempted_at IS NULL AND release_reason IS NULL AND start_at < @Start
            """, new { m.MatchId, Start = m.Start.ToUniversalTime(), End = m.End.ToUniversalTime() }, tx.Transaction, cancellationToken: ct));
        // A match preempted or revoked before Scheduling had booked its lease: that request found no lease and changed
        // nothing, so it is made again now that the lease exists (a second request for a lease with notice is a no-op).
        var taken = await tx.Connection.QuerySingleOrDefaultAsync<(string State, DateTimeOffset EndAt, string Reason)?>(new CommandDefinition("""
            SELECT state, end_at, coalesce(preempt_reason, release_reason, 'preempted') FROM matches
            WHERE id = @MatchId AND preempted_at IS NOT NULL
            """, new { m.MatchId }, tx.Transaction, cancellationToken: ct));
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
