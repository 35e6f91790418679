using Dapper;
using MassTransit;
using Marketplace.Contracts;
using Marketplace.ServiceDefaults.Data;

namespace Marketplace.Scheduling.Leases;

/// <summary>
/// Bidding asks an interruptible match to make way: the lease gets notice now (PreemptionNoticeGiven) and ends as
/// preempted, cause market, when the notice runs out (due work lease.preempt). The notice is never shorter than the
/// one the offer promised; a second request never brings the end forward.
/// </summary>
internal sealed class PreemptionRequestedConsumer(Db db, ILogger<PreemptionRequestedConsumer> logger) : IConsumer<PreemptionRequested>
{
    public async Task Consume(ConsumeContext<PreemptionRequested> context)
    {
        var m = context.Message;
        var ct = context.CancellationToken;
        await using var tx = await db.BeginAsync(ct);
        if (!await tx.FirstDeliveryAsync(context, "preemption-requested")) return;
        var leaseId = await tx.Connection.QuerySingleOrDefaultAsync<Guid?>(new CommandDefinition(
            "SELECT id FROM leases WHERE match_id = @MatchId", new { m.MatchId }, tx.Transaction, cancellationToken: ct));
        var lease = leaseId is null ? null : await LeaseLifecycle.LockAsync(tx, leaseId.Value, ct);
        if (lease is null || lease.IsTerminal || lease.PreemptAt is not null)
        {
            logger.LogInformation("Preemption of match {MatchId} needs no action (no running lease, or notice already given)", m.MatchId);
            await tx.CommitAsync(ct);
            return;
        }

        // The notice runs from the market's decision, when Bidding sold the capacity again from the notice's end: the
        // displacing lease is booked from exactly then. A request that arrives late never ends the lease before now.
        var notice = Math.Max(Math.Max(0, m.NoticeSeconds), lease.PreemptionNoticeSeconds);
        var decided = m.At.ToUniversalTime() < tx.Now ? m.At.ToUniversalTime() : tx.Now;
        var preemptAt = Max(decided.AddSeconds(notice), tx.Now);
        if (preemptAt >= lease.EndAt)
        {
            logger.LogInformation("Lease {LeaseId} ends at {End}, before its preemption would: it completes as planned", lease.Id, lease.EndAt);
            await tx.CommitAsync(ct);
            return;
        }
        // The slots are free for the displacing lease from preempt_at on: the bookings end there now (to nothing when the
        // lease had not started by then).
        await tx.Connection.ExecuteAsync(new CommandDefinition("""
            UPDATE leases SET preempt_at = @preemptAt WHERE id = @Id;
            UPDATE bookings SET during = tstzrange(lower(during), greatest(lower(during), least(upper(during), @preemptAt)), '[)')
            WHERE lease_id = @Id AND NOT released;
            """, new { preemptAt, lease.Id }, tx.Transaction, cancellationToken: ct));
        await tx.ScheduleAsync(LeaseLifecycle.Preempt, lease.Id.ToString(), preemptAt, ct, new { reason = m.Reason });
        await tx.PublishAsync(new PreemptionNoticeGiven(lease.Id, lease.OrderId, preemptAt, m.Reason, tx.Now), ct);
        await tx.CommitAsync(ct);
    }

    private static DateTimeOffset Max(DateTimeOffset a, DateTimeOffset b) => a > b ? a : b;
}

internal sealed class PreemptionRequestedConsumerDefinition : ConsumerDefinition<PreemptionRequestedConsumer>
{
    public PreemptionRequestedConsumerDefinition() => ConcurrentMessageLimit = 16;
}
