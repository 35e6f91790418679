using Dapper;
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

        // Republishing the same offer changes nothing: offers are immutable once published.
        await tx.Connection.ExecuteAsync(new CommandDefinition("""
            INSERT INTO offers (offer_id, provider_org_id, cluster_id, node_ids, accelerator_model, region, jurisdiction,
                                accelerator_count, window_start, window_end, ask_amount, ask_currency, min_lease_seconds,
                                interruptible_allowed, status, published_at, withdrawn_at)
            SELECT @OfferId, @ProviderOrgId, @ClusterId, @nodeIds, @AcceleratorModel, @Region, @Jurisdiction,
                   @AcceleratorCount, @WindowStart, @WindowEnd, @askAmount, @askCurrency, @MinLeaseSeconds,
                   @InterruptibleAllowed, CASE WHEN w.offer_id IS NULL THEN 'active' ELSE 'withdrawn' END, @At, w.withdrawn_at
            FROM (SELECT 1) one LEFT JOIN offer_withdrawals w ON w.offer_id = @OfferId
            ON CONFLICT (offer_id) DO NOTHING
            """, new
            {
                m.OfferId, m.ProviderOrgId, m.ClusterId, nodeIds = m.NodeIds.ToArray(), m.AcceleratorModel, m.Region, m.Jurisdiction,
                m.AcceleratorCount, m.WindowStart, m.WindowEnd, askAmount = m.AskPerHour.Amount, askCurrency = m.AskPerHour.Currency,
                m.MinLeaseSeconds, m.InterruptibleAllowed, m.At,
            }, tx.Transaction, cancellationToken: ct));

        var matched = await OrderBook.MatchStandingOrdersAsync(tx, m.AcceleratorModel, ct);
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
