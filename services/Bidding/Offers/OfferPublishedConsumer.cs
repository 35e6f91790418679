using System.Text.Json;
using Dapper;
using Marketplace.Bidding.Domain;
using Marketplace.Bidding.Market;
using Marketplace.Bidding.Orders;
using Marketplace.Contracts;
using Marketplace.ServiceDefaults.Data;
using MassTransit;

namespace Marketplace.Bidding.Offers;

/// <summary>Keeps the local copy of an offer and lets the standing orders of its market try the new supply.</summary>
internal sealed class OfferPublishedConsumer(Db db, ILogger<OfferPublishedConsumer> logger) : IConsumer<OfferPublished>
{
    public async Task Consume(ConsumeContext<OfferPublished> context)
    {
        var m = context.Message;
        var ct = context.CancellationToken;
        await using var tx = await db.BeginAsync(ct);
        if (!await tx.FirstDeliveryAsync(context, "bidding.offer-published")) return;

        var group = Markets.RegionGroup(m.Region);
        await OrderBook.LockAsync(tx, m.AcceleratorModel, group, ct);
        // A known offer id replaces the offer's terms (an upsert), unless this message is older than what we have. A
        // withdrawn offer stays withdrawn; matches already made keep their capacity (Scheduling owns their leases).
        await tx.Connection.ExecuteAsync(new CommandDefinition("""
            INSERT INTO offers (offer_id, provider_org_id, cluster_id, node_ids, accelerator_model, region, jurisdiction,
                                accelerator_count, window_start, window_end, ask_amount, ask_currency, min_lease_seconds,
                                interruptible_allowed, status, published_at, withdrawn_at, interruptible_floor_amount,
                                preemption_notice_seconds, sla_level, windows, region_group, updated_at, slot_ids)
            SELECT @OfferId, @ProviderOrgId, @ClusterId, @nodeIds, @AcceleratorModel, @Region, @Jurisdiction,
                   @AcceleratorCount, @WindowStart, @WindowEnd, @askAmount, @askCurrency, @MinLeaseSeconds,
                   @InterruptibleAllowed, CASE WHEN w.offer_id IS NULL THEN 'active' ELSE 'withdrawn' END, @At, w.withdrawn_at,
                   @floor, @PreemptionNoticeSeconds, @SlaLevel, @windows::jsonb, @group, @At, @slotIds::uuid[]
            FROM (SELECT 1) one LEFT JOIN offer_withdrawals w ON w.offer_id = @OfferId
            ON CONFLICT (offer_id) DO UPDATE SET
                node_ids = excluded.node_ids, accelerator_model = excluded.accelerator_model, region = excluded.region,
                jurisdiction = excluded.jurisdiction, accelerator_count = excluded.accelerator_count,
                window_start = excluded.window_start, window_end = excluded.window_end, ask_amount = excluded.ask_amount,
                ask_currency = excluded.ask_currency, min_lease_seconds = excluded.min_lease_seconds,
                interruptible_allowed = excluded.interruptible_allowed, interruptible_floor_amount = excluded.interruptible_floor_amount,
                preemption_notice_seconds = excluded.preemption_notice_seconds, sla_level = excluded.sla_level,
                windows = excluded.windows, region_group = excluded.region_group, updated_at = excluded.updated_at,
                slot_ids = excluded.slot_ids
            WHERE offers.updated_at IS NULL OR offers.updated_at <= excluded.updated_at
            """, new
            {
                m.OfferId, m.ProviderOrgId, m.ClusterId, nodeIds = m.NodeIds.ToArray(), m.AcceleratorModel, m.Region, m.Jurisdiction,
                m.AcceleratorCount, m.WindowStart, m.WindowEnd, askAmount = m.AskPerHour.Amount, askCurrency = m.AskPerHour.Currency,
                m.MinLeaseSeconds, m.InterruptibleAllowed, m.At,
                floor = m.InterruptibleFloorPerHour?.Currency == m.AskPerHour.Currency ? m.InterruptibleFloorPerHour.Amount : (long?)null,
                m.PreemptionNoticeSeconds, m.SlaLevel, group, slotIds = m.SlotIds?.ToArray(),
                windows = m.Windows is null ? null : JsonSerializer.Serialize(m.Windows, JsonSerializerOptions.Web),
            }, tx.Transaction, cancellationToken: ct));

        // Matches not started yet that the new terms no longer hold are revoked (their quantity requeued) before the book clears.
        await OrderBook.RevokeUnfitMatchesAsync(tx, m.OfferId, ct);
        var matched = await OrderBook.ClearStandingAsync(tx, m.AcceleratorModel, group, ct);
        var quote = await MarketQuote.ReadAsync(tx, m.AcceleratorModel, group, m.AskPerHour.Currency, ct);
        await tx.PublishAsync(new PriceTicked(Markets.Key(m.AcceleratorModel, group), null, quote.BestBid, quote.BestAsk, tx.Now), ct);
        await tx.CommitAsync(ct);
        if (matched > 0)
            logger.LogInformation("Offer {OfferId} filled {Matched} standing {Model} order(s)", m.OfferId, matched, m.AcceleratorModel);
    }
}

internal sealed class OfferPublishedConsumerDefinition : ConsumerDefinition<OfferPublishedConsumer>
{
    protected override void ConfigureConsumer(IReceiveEndpointConfigurator endpoint,
        IConsumerConfigurator<OfferPublishedConsumer> consumer, IRegistrationContext context)
    {
        // Matching of one market is serialised by its advisory lock anyway; a few at once keep other markets moving.
        consumer.UseConcurrentMessageLimit(4);
    }
}
