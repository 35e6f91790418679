using Dapper;
using Marketplace.Billing.Domain;
using Marketplace.Billing.Ledger;
using Marketplace.Billing.Usage;
using Marketplace.Contracts;
using Marketplace.ServiceDefaults.Data;
using MassTransit;
using Microsoft.Extensions.Options;

namespace Marketplace.Billing.Holds;

/// <summary>
/// At booking, reserves the lease's maximum cost on the renter's wallet (available → held), or rejects the lease
/// with a reason the renter can act on (funds, per-order cap, monthly cap). Two-phase like a pending transfer: the
/// billing run posts the actual charge and voids the rest.
/// </summary>
internal sealed class LeaseScheduledConsumer(Db db, IOptions<BillingOptions> options) : IConsumer<LeaseScheduled>
{
    public async Task Consume(ConsumeContext<LeaseScheduled> context)
    {
        var m = context.Message;
        var ct = context.CancellationToken;
        await using var tx = await db.BeginAsync(ct);
        if (!await tx.FirstDeliveryAsync(context, "lease-scheduled")) return;
        await LeaseEndedConsumer.LockLeaseAsync(tx, m.LeaseId, ct);

        var currency = m.PricePerHour.Currency;
        // An unknown level from a newer publisher is billed as the strictest we know rather than silently as none.
        var slaLevel = Sla.IsLevel(m.SlaLevel) ? m.SlaLevel : Sla.Premium;
        await tx.Connection.ExecuteAsync(new CommandDefinition("""
            INSERT INTO leases (lease_id, order_id, renter_org_id, provider_org_id, accelerator_model, accelerator_count,
                                start_at, end_at, price_per_hour, currency, scheduled_at, interruptible, sla_level)
            VALUES (@LeaseId, @OrderId, @RenterOrgId, @ProviderOrgId, @AcceleratorModel, @AcceleratorCount,
                    @Start, @End, @price, @currency, @At, @Interruptible, @slaLevel)
            ON CONFLICT (lease_id) DO NOTHING
            """, new { m.LeaseId, m.OrderId, m.RenterOrgId, m.ProviderOrgId, m.AcceleratorModel, m.AcceleratorCount,
                Start = m.Start.ToUniversalTime(), End = m.End.ToUniversalTime(), price = m.PricePerHour.Amount, currency,
                At = m.At.ToUniversalTime(), m.Interruptible, slaLevel }, tx.Transaction, cancellationToken: ct));

        var seconds = Math.Max(0, (long)Math.Ceiling((m.End - m.Start).TotalSeconds));
        var maxCost = Rating.MaxCost(m.PricePerHour.Amount, m.AcceleratorCount, seconds);

        await LedgerStore.LockWalletAsync(tx, m.RenterOrgId, ct);
        var available = await Funds.AvailableAsync(tx, m.RenterOrgId, currency, ct);
        var detail = $" ({m.AcceleratorCount} × {m.AcceleratorModel} for {seconds} s at {Currencies.Format(m.PricePerHour.Amount, currency)}/h)";
        if (await Funds.RefusalAsync(tx, m.RenterOrgId, currency, maxCost, maxCost, available, "this lease", ct, detail) is { } reason)
        {
            await tx.PublishAsync(new HoldRejected(m.LeaseId, m.OrderId, m.RenterOrgId, reason, tx.Now), ct);
            await tx.CommitAsync(ct);
            return;
        }

        var holdId = NewId.NextGuid();
        if (maxCost > 0)
        {
            await LedgerStore.PostAsync(tx, LedgerTransaction.Transfer($"hold:{m.LeaseId}", "hold",
                Accounts.RenterAvailable(m.RenterOrgId), Accounts.RenterHeld(m.RenterOrgId), currency, maxCost), ct);
        }
        await tx.Connection.ExecuteAsync(new CommandDefinition("""
            INSERT INTO holds (id, lease_id, renter_org_id, amount, currency, status, created_at)
            VALUES (@holdId, @LeaseId, @RenterOrgId, @maxCost, @currency, 'pending', @now)
            """, new { holdId, m.LeaseId, m.RenterOrgId, maxCost, currency, now = tx.Now }, tx.Transaction, cancellationToken: ct));
        await tx.PublishAsync(new HoldPlaced(holdId, m.LeaseId, m.OrderId, m.RenterOrgId, new Money(maxCost, currency), tx.Now), ct);
        // Its LeaseEnded came first (another queue) and said it never ran: release the hold now, as that consumer would have.
        if (await tx.Connection.ExecuteScalarAsync<bool>(new CommandDefinition("""
                SELECT EXISTS (SELECT 1 FROM usage WHERE lease_id = @LeaseId AND started_at IS NULL AND ended_at IS NOT NULL
                                                     AND (never_ran OR ended_at <= @Start))
                """, new { m.LeaseId, Start = m.Start.ToUniversalTime() }, tx.Transaction, cancellationToken: ct)))
        {
            await LeaseEndedConsumer.VoidAsync(tx, m.LeaseId,
                new LeaseEndedConsumer.HoldRow(holdId, m.RenterOrgId, maxCost, currency, m.Start.UtcDateTime), ct);
            await tx.CommitAsync(ct);
            return;
        }
        await Funds.AlertIfLowAsync(tx, m.RenterOrgId, currency, available, available - maxCost, options.Value.LowBalanceThresholdMinor, ct);
        await tx.CommitAsync(ct);
    }
}

internal sealed class LeaseScheduledConsumerDefinition : ConsumerDefinition<LeaseScheduledConsumer>
{
    protected override void ConfigureConsumer(IReceiveEndpointConfigurator endpoint,
        IConsumerConfigurator<LeaseScheduledConsumer> consumer, IRegistrationContext context)
    {
        // Holds of one renter serialise on the wallet lock; a modest limit keeps connections for the API.
        endpoint.ConcurrentMessageLimit = 8;
    }
}
