using Xunit;
using System.Text.Json;
using Marketplace.Contracts;
using Marketplace.Testing;

namespace Marketplace.Billing.Tests;

/// <summary>
/// A lease that never ran (failed with "it never ran", or provisioning never finished) releases its hold when it ends,
/// not at the billing run, whichever order its events arrive in; a lease whose end overtook its start keeps its hold.
/// </summary>
public sealed class NeverRanHoldTests(AutoConfirmingStripe fx) : IClassFixture<AutoConfirmingStripe>
{
    /// <summary>10:00 UTC, <paramref name="daysAgo"/> days ago: each test bills its own day.</summary>
    private static DateTimeOffset Day(int daysAgo) => new DateTimeOffset(DateTime.UtcNow.Date, TimeSpan.Zero).AddDays(-daysAgo).AddHours(10);

    private static string PeriodOf(DateTimeOffset at) => at.UtcDateTime.ToString("yyyy-MM-dd");

    private Task<long> Releases(Guid lease) =>
        fx.ScalarAsync("SELECT count(*) FROM ledger_transactions WHERE idempotency_key = @key", new { key = $"release:{lease}" });

    private Task<long> UsageEnded(Guid lease) =>
        fx.ScalarAsync("SELECT count(*) FROM usage WHERE lease_id = @lease AND ended_at IS NOT NULL", new { lease });

    private static bool Invoiced(JsonElement run, Guid renter) =>
        run.GetProperty("invoices").EnumerateArray().Any(i => i.GetProperty("renter_org_id").GetGuid() == renter);

    [Fact]
    public async Task A_lease_that_failed_after_its_start_without_ever_running_gets_its_hold_back_at_once_and_is_never_billed()
    {
        var renter = Guid.NewGuid();
        await fx.FundAsync(renter, 10_000);
        var start = Day(3);
        var lease = await fx.BookAsync(BillingFixture.Lease(renter, Guid.NewGuid(), 1_000, 2, start, TimeSpan.FromHours(1)));
        Assert.Equal((8_000, 2_000), await fx.WalletAsync(renter));

        // Scheduling could not start it before its end (issue 6): it ends after its scheduled start, and says it never ran.
        await fx.Publish(new LeaseEnded(lease.LeaseId, lease.OrderId, "failed", "it never ran", "platform", start.AddHours(1)) { NeverRan = true });
        await Eventually.True(async () => await fx.HoldCount(lease.LeaseId, "voided") == 1, what: "the hold released when the lease ended");

        Assert.Equal((10_000, 0), await fx.WalletAsync(renter));
        Assert.Equal(1, await Releases(lease.LeaseId));
        Assert.True(await fx.LedgerBalancedAsync());

        var run = await fx.RunPeriodAsync(PeriodOf(start));
        Assert.False(Invoiced(run, renter));
        Assert.Equal(0, await fx.ScalarAsync("SELECT count(*) FROM invoice_lines WHERE lease_id = @LeaseId", new { lease.LeaseId }));
        Assert.Equal(1, await Releases(lease.LeaseId));
        Assert.Equal((10_000, 0), await fx.WalletAsync(renter));
        Assert.True(await fx.LedgerBalancedAsync());
    }

    [Fact]
    public async Task A_hold_placed_after_the_lease_already_ended_without_running_is_released_at_once()
    {
        var renter = Guid.NewGuid();
        await fx.FundAsync(renter, 10_000);
        var start = Day(4);
        var lease = BillingFixture.Lease(renter, Guid.NewGuid(), 1_000, 1, start, TimeSpan.FromHours(1));

        // LeaseEnded and LeaseScheduled travel on different queues: the end arrives first.
        await fx.Publish(new LeaseEnded(lease.LeaseId, lease.OrderId, "failed", "it never ran", "platform", start.AddMinutes(30)) { NeverRan = true });
        await Eventually.True(async () => await UsageEnded(lease.LeaseId) == 1, what: "the end recorded");
        await fx.Publish(lease);
        await Eventually.True(async () => await fx.HoldCount(lease.LeaseId, "voided") == 1, what: "the hold placed and released");

        // HoldPlaced reaches the observer through the outbox and the broker, after the hold is in the database.
        await Eventually.True(() => Task.FromResult(fx.Published.OfType<HoldPlaced>().Any(h => h.LeaseId == lease.LeaseId)), what: "HoldPlaced published");
        Assert.Equal(1, fx.Published.OfType<HoldPlaced>().Count(h => h.LeaseId == lease.LeaseId));
        Assert.Equal((10_000, 0), await fx.WalletAsync(renter));
        Assert.Equal(1, await Releases(lease.LeaseId));
        Assert.True(await fx.LedgerBalancedAsync());
    }

    [Fact]
    public async Task An_end_that_overtook_its_start_keeps_the_hold_and_the_run_bills_the_time_it_ran()
    {
        // It ran for 30 min, but its LeaseEnded (which does not say "never ran") reaches Billing before its LeaseStarted.
        var (renter, lease, start) = await EndOvertookStartAsync(Day(5));
        Assert.Equal(1, await fx.HoldCount(lease.LeaseId, "pending"));
        await StartAsync(lease, start);

        var run = await fx.RunPeriodAsync(PeriodOf(start));
        Assert.Equal(500, BillingFixture.Amount(BillingFixture.InvoiceOf(run, renter), "total")); // 10.00 CNY/h × 30 min
        Assert.Equal(0, await Releases(lease.LeaseId));
        Assert.Equal((9_500, 0), await fx.WalletAsync(renter));
        Assert.True(await fx.LedgerBalancedAsync());
    }

    [Fact]
    public async Task A_run_between_an_end_that_overtook_its_start_and_the_start_keeps_the_hold_and_a_later_run_bills_the_time_it_ran()
    {
        // It ran for 30 min; its LeaseEnded (which does not say "never ran") overtook its LeaseStarted, and finance runs
        // the period while the LeaseStarted is still on its way (its queue is behind).
        var (renter, lease, start) = await EndOvertookStartAsync(Day(6));
        var early = await fx.RunPeriodAsync(PeriodOf(start));

        Assert.False(Invoiced(early, renter));
        Assert.Equal(1, await fx.HoldCount(lease.LeaseId, "pending")); // not released as if it had never run
        Assert.Equal((9_000, 1_000), await fx.WalletAsync(renter));

        await StartAsync(lease, start);
        var run = await fx.RunPeriodAsync(PeriodOf(start));

        Assert.Equal(500, BillingFixture.Amount(BillingFixture.InvoiceOf(run, renter), "total")); // 10.00 CNY/h × 30 min
        Assert.Equal(0, await Releases(lease.LeaseId));
        Assert.Equal((9_500, 0), await fx.WalletAsync(renter));
        Assert.True(await fx.LedgerBalancedAsync());
    }

    /// <summary>A funded renter's 1-hour lease booked at <paramref name="start"/> that ran 30 min, whose LeaseEnded reached Billing first.</summary>
    private async Task<(Guid Renter, LeaseScheduled Lease, DateTimeOffset Start)> EndOvertookStartAsync(DateTimeOffset start)
    {
        var renter = Guid.NewGuid();
        await fx.FundAsync(renter, 10_000);
        var lease = await fx.BookAsync(BillingFixture.Lease(renter, Guid.NewGuid(), 1_000, 1, start, TimeSpan.FromHours(1)));
        await fx.Publish(new LeaseEnded(lease.LeaseId, lease.OrderId, "completed", "ended", "renter", start.AddMinutes(30)));
        await Eventually.True(async () => await UsageEnded(lease.LeaseId) == 1, what: "the end recorded");
        return (renter, lease, start);
    }

    /// <summary>The late LeaseStarted arrives and is recorded.</summary>
    private async Task StartAsync(LeaseScheduled lease, DateTimeOffset start)
    {
        await fx.Publish(new LeaseStarted(lease.LeaseId, lease.OrderId, start));
        await Eventually.True(async () => await fx.ScalarAsync(
            "SELECT count(*) FROM usage WHERE lease_id = @LeaseId AND started_at IS NOT NULL", new { lease.LeaseId }) == 1, what: "the start recorded");
    }
}
