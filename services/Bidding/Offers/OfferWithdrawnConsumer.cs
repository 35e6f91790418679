using Dapper;
using Marketplace.Bidding.Orders;
using Marketplace.Contracts;
using Marketplace.ServiceDefaults.Data;
using MassTransit;

namespace Marketplace.Bidding.Offers;

/// <summary>
/// A withdrawn offer takes no new matches. Its matches that have started stay (Scheduling owns their leases); those that
/// have not are revoked and their orders' quantity requeued (docs/market.md, "Offer changes"), which the market's standing
/// book then tries at once.
/// </summary>
internal sealed class OfferWithdrawnConsumer(Db db) : IConsumer<OfferWithdrawn>
{
    public async Task Consume(ConsumeContext<OfferWithdrawn> context)
    {
        var m = context.Message;
        var ct = context.CancellationToken;
        await using var tx = await db.BeginAsync(ct);
        if (!await tx.FirstDeliveryAsync(context, "bidding.offer-withdrawn")) return;

        // The market lock before the offer's row, as a clearing takes them.
        var market = await tx.Connection.QuerySingleOrDefaultAsync<(string Model, string Group)?>(new CommandDefinition(
            "SELECT accelerator_model, region_group FROM offers WHERE offer_id = @OfferId", new { m.OfferId }, tx.Transaction,
            cancellationToken: ct));
        if (market is { } mk) await OrderBook.LockAsync(tx, mk.Model, mk.Group, ct);
        var updated = await tx.Connection.ExecuteAsync(new CommandDefinition("""
            UPDATE offers SET status = 'withdrawn', withdrawn_at = @At WHERE offer_id = @OfferId AND status = 'active'
            """, new { m.OfferId, m.At }, tx.Transaction, cancellationToken: ct));
        if (updated == 0)
        {
            // Not known yet (the withdrawal overtook the publication) or already withdrawn: remember it either way.
            await tx.Connection.ExecuteAsync(new CommandDefinition("""
                INSERT INTO offer_withdrawals (offer_id, withdrawn_at) VALUES (@OfferId, @At) ON CONFLICT DO NOTHING
                """, new { m.OfferId, m.At }, tx.Transaction, cancellationToken: ct));
        }
        else if (market is { } withdrawnFrom && await OrderBook.RevokeUnfitMatchesAsync(tx, m.OfferId, ct) > 0)
            await OrderBook.ClearStandingAsync(tx, withdrawnFrom.Model, withdrawnFrom.Group, ct);
        await tx.CommitAsync(ct);
    }
}

internal sealed class OfferWithdrawnConsumerDefinition : ConsumerDefinition<OfferWithdrawnConsumer>
{
    protected override void ConfigureConsumer(IReceiveEndpointConfigurator endpoint,
        IConsumerConfigurator<OfferWithdrawnConsumer> consumer, IRegistrationContext context)
    {
        consumer.UseConcurrentMessageLimit(8);
    }
}
