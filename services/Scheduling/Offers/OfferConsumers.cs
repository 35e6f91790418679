using Dapper;
using MassTransit;
using Marketplace.Contracts;
using Marketplace.ServiceDefaults.Data;

namespace Marketplace.Scheduling.Offers;

/// <summary>
/// Keeps the copy of offers that replacement consults: capacity another active offer sells is not spare. An offer
/// republished with the same id replaces the copy; an older publication arriving late changes nothing.
/// </summary>
internal sealed class OfferPublishedConsumer(Db db) : IConsumer<OfferPublished>
{
    public async Task Consume(ConsumeContext<OfferPublished> context)
    {
        var m = context.Message;
        var ct = context.CancellationToken;
        await using var tx = await db.BeginAsync(ct);
        if (!await tx.FirstDeliveryAsync(context, "offer-published")) return;
        var windows = m.Windows is { Count: > 0 } w ? w : [new TimeWindow(m.WindowStart, m.WindowEnd)];
        await tx.Connection.ExecuteAsync(new CommandDefinition("""
            INSERT INTO offers (id, provider_org_id, cluster_id, node_ids, slot_ids, windows, published_at)
            VALUES (@OfferId, @ProviderOrgId, @ClusterId, @nodeIds, @slotIds,
                    (SELECT coalesce(range_agg(tstzrange(s, e, '[)')), '{}') FROM unnest(@starts, @ends) AS w(s, e) WHERE e > s),
                    @At)
            ON CONFLICT (id) DO UPDATE SET
              provider_org_id = excluded.provider_org_id, cluster_id = excluded.cluster_id, node_ids = excluded.node_ids,
              slot_ids = excluded.slot_ids, windows = excluded.windows, published_at = excluded.published_at
            WHERE offers.withdrawn_at IS NULL AND (offers.published_at IS NULL OR offers.published_at <= excluded.published_at)
            """, new
            {
                m.OfferId, m.ProviderOrgId, m.ClusterId,
                nodeIds = m.NodeIds.ToArray(),
                slotIds = m.SlotIds?.ToArray(),
                starts = windows.Select(x => x.Start.ToUniversalTime()).ToArray(),
                ends = windows.Select(x => x.End.ToUniversalTime()).ToArray(),
                At = m.At.ToUniversalTime(),
            }, tx.Transaction, cancellationToken: ct));
        await tx.CommitAsync(ct);
    }
}

internal sealed class OfferPublishedConsumerDefinition : ConsumerDefinition<OfferPublishedConsumer>
{
    public OfferPublishedConsumerDefinition() => ConcurrentMessageLimit = 8;
}

/// <summary>A withdrawn offer sells nothing more; a withdrawal that overtook its publication is remembered.</summary>
internal sealed class OfferWithdrawnConsumer(Db db) : IConsumer<OfferWithdrawn>
{
    public async Task Consume(ConsumeContext<OfferWithdrawn> context)
    {
        var m = context.Message;
        var ct = context.CancellationToken;
        await using var tx = await db.BeginAsync(ct);
        if (!await tx.FirstDeliveryAsync(context, "offer-withdrawn")) return;
        await tx.Connection.ExecuteAsync(new CommandDefinition("""
            INSERT INTO offers (id, provider_org_id, withdrawn_at) VALUES (@OfferId, @ProviderOrgId, @At)
            ON CONFLICT (id) DO UPDATE SET withdrawn_at = least(coalesce(offers.withdrawn_at, excluded.withdrawn_at), excluded.withdrawn_at)
            """, new { m.OfferId, m.ProviderOrgId, At = m.At.ToUniversalTime() }, tx.Transaction, cancellationToken: ct));
        await tx.CommitAsync(ct);
    }
}

internal sealed class OfferWithdrawnConsumerDefinition : ConsumerDefinition<OfferWithdrawnConsumer>
{
    public OfferWithdrawnConsumerDefinition() => ConcurrentMessageLimit = 8;
}
