using Dapper;
using Marketplace.Billing.Domain;
using Marketplace.Billing.Ledger;
using Marketplace.Billing.Usage;
using Marketplace.Contracts;
using Marketplace.ServiceDefaults.Data;
using MassTransit;
using Microsoft.Extensions.Options;
using Npgsql;

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
        var currency = m.PricePerHour.Currency;
        // An unknown level from a newer publisher is billed as the strictest we know rather than silently as none.
        var slaLevel = Sla.IsLevel(m.SlaLevel) ? m.SlaLevel : Sla.Premium;
        var start = m.Start.ToUniversalTime();
        await using var tx = await db.BeginAsync(ct);

        // One round trip: the inbox mark; the lease's lock (LeaseEndedConsumer.LockLeaseSql) and its row (whether it was
        // there already); the wallet's lock and numbers; and whether its LeaseEnded came first (another queue) and said it
        // never ran.
        Funds.Wallet wallet;
        bool decided, neverRan;
        await using (var read = await tx.FirstDeliveryWithAsync(context, "lease-scheduled", $"""
            {LeaseEndedConsumer.LockLeaseSql};
            WITH added AS (
                INSERT INTO leases (lease_id, order_id, renter_org_id, provider_org_id, accelerator_model, accelerator_count,
                                    start_at, end_at, price_per_hour, currency, scheduled_at, interruptible, sla_level)
                VALUES (@LeaseId, @OrderId, @RenterOrgId, @ProviderOrgId, @AcceleratorModel, @AcceleratorCount,
                        @Start, @End, @price, @currency, @At, @Interruptible, @slaLevel)
                ON CONFLICT (lease_id) DO NOTHING RETURNING 1)
            SELECT NOT EXISTS (SELECT 1 FROM added);
            {Funds.LockAndReadSql}
            SELECT EXISTS (SELECT 1 FROM usage WHERE lease_id = @LeaseId AND started_at IS NULL AND ended_at IS NOT NULL
                                                 AND (never_ran OR ended_at <= @Start));
            """, Funds.AddParameters(new DynamicParameters(new
            {
                m.LeaseId, m.OrderId, m.RenterOrgId, m.ProviderOrgId, m.AcceleratorModel, m.AcceleratorCount,
                Start = start, End = m.End.ToUniversalTime(), price = m.PricePerHour.Amount, currency,
                At = m.At.ToUniversalTime(), m.Interruptible, slaLevel,
            }), tx, m.RenterOrgId, currency)))
        {
            if (read is null) return; // handled before
            await read.ReadAsync(); // the lease's lock
            decided = await read.ReadSingleAsync<bool>();
            wallet = await Funds.ReadAsync(read);
            neverRan = await read.ReadSingleAsync<bool>();
        }
        // The same lease scheduled again under another message id (the inbox keys on the id): it was decided then, its
        // HoldPlaced or HoldRejected went out with the decision. Deciding again would place a second hold (refused by the
        // one-hold-per-lease rule, so this message would go to _error) or hold funds for a lease already refused.
        if (decided)
        {
            await tx.CommitAsync(ct);
            return;
        }

        var seconds = Math.Max(0, (long)Math.Ceiling((m.End - m.Start).TotalSeconds));
        var maxCost = Rating.MaxCost(m.PricePerHour.Amount, m.AcceleratorCount, seconds);
        var detail = $" ({m.AcceleratorCount} × {m.AcceleratorModel} for {seconds} s at {Currencies.Format(m.PricePerHour.Amount, currency)}/h)";
        await using var write = tx.NewBatch();
        if (Funds.Refusal(wallet, currency, maxCost, maxCost, "this lease", detail) is { } reason)
        {
            tx.Publish(write, new HoldRejected(m.LeaseId, m.OrderId, m.RenterOrgId, reason, tx.Now));
            await write.ExecuteNonQueryAsync(ct);
            await tx.CommitAsync(ct);
            return;
        }

        // One round trip: the hold's transfer (available → held), the hold, HoldPlaced and perhaps LowBalance.
        var holdId = NewId.NextGuid();
        if (maxCost > 0)
            write.BatchCommands.Add(LedgerStore.PostCommand([LedgerTransaction.Transfer($"hold:{m.LeaseId}", "hold",
                Accounts.RenterAvailable(m.RenterOrgId), Accounts.RenterHeld(m.RenterOrgId), currency, maxCost)], tx.Now));
        write.BatchCommands.Add(new NpgsqlBatchCommand("""
            INSERT INTO holds (id, lease_id, renter_org_id, amount, currency, status, created_at)
            VALUES (@id, @lease_id, @renter_org_id, @amount, @currency, 'pending', @created_at)
            """)
        {
            Parameters =
            {
                new("id", holdId), new("lease_id", m.LeaseId), new("renter_org_id", m.RenterOrgId), new("amount", maxCost),
                new("currency", currency), new("created_at", tx.Now),
            },
        });
        tx.Publish(write, new HoldPlaced(holdId, m.LeaseId, m.OrderId, m.RenterOrgId, new Money(maxCost, currency), tx.Now));
        if (!neverRan && Funds.LowBalanceAfter(wallet, m.RenterOrgId, currency, maxCost, options.Value.LowBalanceThresholdMinor, tx.Now) is { } low)
            tx.Publish(write, low);
        await write.ExecuteNonQueryAsync(ct);
        // Its LeaseEnded said it never ran: release the hold now, as that consumer would have.
        if (neverRan)
            await LeaseEndedConsumer.VoidAsync(tx, m.LeaseId,
                new LeaseEndedConsumer.HoldRow(holdId, m.RenterOrgId, maxCost, currency, start.UtcDateTime), ct);
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
