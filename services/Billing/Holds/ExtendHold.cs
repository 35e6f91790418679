using Dapper;
using Marketplace.Billing.Domain;
using Marketplace.Billing.Ledger;
using Marketplace.Contracts;
using Marketplace.ServiceDefaults.Data;
using MassTransit;
using Microsoft.Extensions.Options;
using Npgsql;

namespace Marketplace.Billing.Holds;

/// <summary>
/// A lease got longer: the hold grows to the new maximum cost (one more pending transfer, keyed by the new end), or, if
/// the wallet or a cap cannot cover it, ExtensionRejected tells Scheduling to put the end back.
/// </summary>
internal sealed class LeaseExtendedConsumer(Db db, IOptions<BillingOptions> options) : IConsumer<LeaseExtended>
{
    private sealed record LeaseHold(Guid HoldId, Guid RenterOrgId, DateTime StartAt, DateTime EndAt, long PricePerHour,
        int AcceleratorCount, string AcceleratorModel, string Currency, long Amount, string Status, DateTime HeldAt);

    public async Task Consume(ConsumeContext<LeaseExtended> context)
    {
        var m = context.Message;
        var ct = context.CancellationToken;
        await using var tx = await db.BeginAsync(ct);
        if (!await tx.FirstDeliveryAsync(context, "lease-extended")) return;

        var lease = await tx.Connection.QuerySingleOrDefaultAsync<LeaseHold>(new CommandDefinition("""
            SELECT h.id AS hold_id, l.renter_org_id, l.start_at, l.end_at, l.price_per_hour, l.accelerator_count, l.accelerator_model,
                   l.currency, h.amount, h.status, h.created_at AS held_at
            FROM leases l JOIN holds h USING (lease_id) WHERE l.lease_id = @LeaseId FOR UPDATE OF h
            """, new { m.LeaseId }, tx.Transaction, cancellationToken: ct));
        if (lease is null)
        {
            // No hold means Billing never accepted the lease; extending it cannot be paid for.
            await tx.PublishAsync(new ExtensionRejected(m.LeaseId, m.OrderId, m.PreviousEnd,
                "Billing holds no funds for this lease, so it cannot be extended", tx.Now), ct);
            await tx.CommitAsync(ct);
            return;
        }
        // PostgreSQL keeps microseconds: compare and measure at that precision, or a sub-microsecond tail costs a second.
        var newEnd = new DateTime(m.NewEnd.UtcTicks - m.NewEnd.UtcTicks % TimeSpan.TicksPerMicrosecond, DateTimeKind.Utc);
        if (lease.Status != "pending" || newEnd <= lease.EndAt)
        {
            await tx.CommitAsync(ct); // settled already, or an older/duplicate extension: nothing to grow
            return;
        }

        var seconds = (long)Math.Ceiling((newEnd - lease.StartAt).TotalSeconds);
        var newHold = Rating.MaxCost(lease.PricePerHour, lease.AcceleratorCount, seconds);
        var extra = Math.Max(0, newHold - lease.Amount);
        // The lease's cost, extensions too, counts in the month it was booked in (the monthly cap's rule, and where the
        // wallet's spent_this_month shows it): checked against this month, an extension of last month's lease counted in
        // no month's cap.
        var bookedIn = Funds.MonthOf(lease.HeldAt);
        var wallet = await Funds.LockAndReadAsync(tx, lease.RenterOrgId, lease.Currency, bookedIn, ct);
        var what = $"extending the lease to {newEnd:yyyy-MM-dd HH:mm:ss}Z";
        await using var write = tx.NewBatch();
        if (Funds.Refusal(wallet, lease.Currency, extra, newHold, what,
                bookedIn: bookedIn == Funds.MonthOf(tx.Now.UtcDateTime) ? null : bookedIn) is { } reason)
        {
            tx.Publish(write, new ExtensionRejected(m.LeaseId, m.OrderId, m.PreviousEnd, reason, tx.Now));
            await write.ExecuteNonQueryAsync(ct);
            await tx.CommitAsync(ct);
            return;
        }
        // One round trip: the extra hold (keyed by the new end), the lease's end and the hold's amount, perhaps LowBalance.
        if (extra > 0)
            write.BatchCommands.Add(LedgerStore.PostCommand([LedgerTransaction.Transfer($"hold:{m.LeaseId}:{newEnd.Ticks}", "hold",
                Accounts.RenterAvailable(lease.RenterOrgId), Accounts.RenterHeld(lease.RenterOrgId), lease.Currency, extra)], tx.Now));
        write.BatchCommands.Add(new NpgsqlBatchCommand("UPDATE leases SET end_at = @end_at WHERE lease_id = @lease_id")
        {
            Parameters = { new("end_at", newEnd), new("lease_id", m.LeaseId) },
        });
        write.BatchCommands.Add(new NpgsqlBatchCommand("UPDATE holds SET amount = @amount WHERE id = @id")
        {
            Parameters = { new("amount", newHold), new("id", lease.HoldId) },
        });
        if (Funds.LowBalanceAfter(wallet, lease.RenterOrgId, lease.Currency, extra, options.Value.LowBalanceThresholdMinor, tx.Now) is { } low)
            tx.Publish(write, low);
        await write.ExecuteNonQueryAsync(ct);
        await tx.CommitAsync(ct);
    }
}

internal sealed class LeaseExtendedConsumerDefinition : ConsumerDefinition<LeaseExtendedConsumer>
{
    protected override void ConfigureConsumer(IReceiveEndpointConfigurator endpoint,
        IConsumerConfigurator<LeaseExtendedConsumer> consumer, IRegistrationContext context) => endpoint.ConcurrentMessageLimit = 8;
}
