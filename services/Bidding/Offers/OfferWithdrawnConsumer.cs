using Dapper;
using Marketplace.Contracts;
using Marketplace.ServiceDefaults.Data;
using MassTransit;

namespace Marketplace.Bidding.Offers;

/// <summary>
/// A withdrawn offer takes no new matches. Matches already made stay: Scheduling owns what happens to their leases.
/// </summary>
internal sealed class OfferWithdrawnConsumer(Db db) : IConsumer<OfferWithdrawn>
{
    public async Task Consume(ConsumeContext<OfferWithdrawn> context)
    {
        var m = context.Message;
        var ct = context.CancellationToken;
        await using var tx = await db.BeginAsync(ct);
        if (!await tx.FirstDeliveryAsync(context, "bidding.offer-withdrawn")) return;

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
