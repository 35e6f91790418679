using Xunit;
using System.Net;
using System.Net.Http.Json;
using System.Text.Json;
using Marketplace.Contracts;
using Marketplace.Testing;
using static Marketplace.Billing.Tests.BillingFixture;

namespace Marketplace.Billing.Tests;

/// <summary>SLA credits, cancellation and preemption, extensions, caps, low balance and the invoice lifecycle, on the real servers.</summary>
public sealed class SlaCapsAndLifecycleTests(AutoConfirmingStripe fx) : IClassFixture<AutoConfirmingStripe>
{
    /// <summary>10:00 UTC, <paramref name="daysAgo"/> days ago: each test bills its own day, so tests never close each other's leases.</summary>
    private static DateTimeOffset DayStart(int daysAgo) => new DateTimeOffset(DateTime.UtcNow.Date, TimeSpan.Zero).AddDays(-daysAgo).AddHours(10);
    private static string Day(int daysAgo) => DayStart(daysAgo).ToString("yyyy-MM-dd");

    [Fact]
    public async Task Provider_downtime_earns_the_renter_a_tiered_credit_charged_to_the_provider_and_is_never_billed()
    {
        var (renter, provider) = (Guid.NewGuid(), Guid.NewGuid());
        await fx.FundAsync(renter, 10_000);
        var lease = await fx.BookAsync(Lease(renter, provider, 1_000, 1, DayStart(20), TimeSpan.FromHours(1)));
        // 40 s down by the provider in an hour: 98.89% availability → standard tier "below 99%" → 25% credit.
        await fx.RunAsync(lease, TimeSpan.FromHours(1), downtime: (TimeSpan.FromMinutes(10), TimeSpan.FromMinutes(10) + TimeSpan.FromSeconds(40), "provider"));

        var run = await fx.RunPeriodAsync(Day(20));

        var invoice = InvoiceOf(run, renter);
        var line = invoice.GetProperty("lines").EnumerateArray().Single();
        Assert.Equal(3560, line.GetProperty("seconds").GetInt64());          // the 40 s down are not billed
        Assert.Equal(40, line.GetProperty("downtime_seconds").GetInt64());
        Assert.Equal(989, Amount(line, "amount"));                           // 10.00 CNY/h × 3560 s = 9.8889 → 9.89
        Assert.Equal(247, Amount(line, "sla_credit"));                       // 25% of 9.89 = 2.4725 → 2.47
        Assert.Equal("finalized", invoice.GetProperty("status").GetString());
        Assert.Equal(989, Amount(invoice, "subtotal"));
        Assert.Equal(247, Amount(invoice, "sla_credits"));
        Assert.Equal(742, Amount(invoice, "total"));
        var credit = invoice.GetProperty("credit_lines").EnumerateArray().Single();
        Assert.Equal(lease.LeaseId, credit.GetProperty("lease_id").GetGuid());
        Assert.Equal(247, Amount(credit, "amount"));
        var statement = StatementOf(run, provider);
        Assert.Equal((989, 74, 247, 668), (Amount(statement, "gross"), Amount(statement, "platform_fee"),
            Amount(statement, "sla_credits"), Amount(statement, "net")));    // fee = 10% of 9.89 − 2.47 = 0.742 → 0.74
        Assert.Equal((10_000 - 742, 0), await fx.WalletAsync(renter));
        Assert.True(await fx.LedgerBalancedAsync());
    }

    [Fact]
    public async Task Downtime_of_every_cause_is_never_billed_and_only_the_providers_and_the_platforms_count_for_the_credit()
    {
        var (renter, provider) = (Guid.NewGuid(), Guid.NewGuid());
        await fx.FundAsync(renter, 10_000);
        var lease = await fx.BookAsync(Lease(renter, provider, 1_000, 1, DayStart(25), TimeSpan.FromHours(1)));
        // Four intervals of four causes and four lengths: the run must pair each interval with its own cause.
        static (TimeSpan, TimeSpan, string) Down(int atMinute, int seconds, string cause) =>
            (TimeSpan.FromMinutes(atMinute), TimeSpan.FromMinutes(atMinute) + TimeSpan.FromSeconds(seconds), cause);
        await fx.RunAsync(lease, TimeSpan.FromHours(1),
            downtime: [Down(10, 20, "provider"), Down(20, 300, "renter"), Down(40, 20, "platform"), Down(50, 60, "market")]);

        var run = await fx.RunPeriodAsync(Day(25));

        var line = InvoiceOf(run, renter).GetProperty("lines").EnumerateArray().Single();
        Assert.Equal(400, line.GetProperty("downtime_seconds").GetInt64());   // 20 + 300 + 20 + 60 s, none billed
        Assert.Equal(3200, line.GetProperty("seconds").GetInt64());
        Assert.Equal(889, Amount(line, "amount"));                            // 10.00 CNY/h × 3200 s = 8.8889 → 8.89
        // Only the provider's 20 s and the platform's 20 s count: 98.89% → standard tier "below 99%" → 25% credit. With
        // the causes paired wrongly (the renter's 300 s or the market's 60 s counted) it would be a 100% or 50% credit.
        Assert.Equal(0.988888m, line.GetProperty("availability").GetDecimal());
        Assert.Equal(222, Amount(line, "sla_credit"));                        // 25% of 8.89 = 2.2225 → 2.22
        Assert.True(await fx.LedgerBalancedAsync());
    }

    [Fact]
    public async Task A_downtime_cause_holding_the_runs_separator_is_stored_with_a_space_and_the_period_still_closes()
    {
        var (renter, provider) = (Guid.NewGuid(), Guid.NewGuid());
        await fx.FundAsync(renter, 10_000);
        var lease = await fx.BookAsync(Lease(renter, provider, 1_000, 1, DayStart(26), TimeSpan.FromHours(1)));
        // The run reads a lease's causes joined by U+001F: a cause holding one must neither split into two nor stop the run.
        await fx.RunAsync(lease, TimeSpan.FromHours(1),
            downtime: [(TimeSpan.FromMinutes(10), TimeSpan.FromMinutes(10) + TimeSpan.FromSeconds(40), "provider\u001fnode"),
                       (TimeSpan.FromMinutes(30), TimeSpan.FromMinutes(30) + TimeSpan.FromSeconds(20), "platform")]);
        Assert.Equal(1, await fx.ScalarAsync("SELECT count(*) FROM downtime WHERE lease_id = @LeaseId AND cause = 'provider node'", new { lease.LeaseId }));

        var run = await fx.RunPeriodAsync(Day(26));

        var line = InvoiceOf(run, renter).GetProperty("lines").EnumerateArray().Single();
        Assert.Equal(60, line.GetProperty("downtime_seconds").GetInt64());    // both intervals, neither billed
        Assert.Equal(3540, line.GetProperty("seconds").GetInt64());
        Assert.Equal(0.994444m, line.GetProperty("availability").GetDecimal()); // the platform's 20 s; "provider node" is no known cause

        // And whoever writes a row, the database keeps the separator out of every cause.
        await using var c = fx.Database.OpenAdmin();
        var e = await Assert.ThrowsAsync<Npgsql.PostgresException>(() => Dapper.SqlMapper.ExecuteAsync(c,
            "INSERT INTO billing.downtime (lease_id, started_at, ended_at, cause, reason) VALUES (@LeaseId, now(), now(), 'a' || chr(31) || 'b', 'x')",
            new { lease.LeaseId }));
        Assert.Equal(Npgsql.PostgresErrorCodes.CheckViolation, e.SqlState);
    }

    [Fact]
    public async Task Downtime_whose_resumes_arrive_out_of_order_is_paired_as_it_happened()
    {
        var (renter, provider) = (Guid.NewGuid(), Guid.NewGuid());
        await fx.FundAsync(renter, 10_000);
        var lease = await fx.BookAsync(Lease(renter, provider, 1_000, 1, DayStart(27), TimeSpan.FromHours(1)));
        await fx.Publish(new LeaseStarted(lease.LeaseId, lease.OrderId, lease.Start));
        // Provider down 10:00-10:20, renter down 20:00-25:00; after an outage of Billing they arrive in this order, each
        // consumed before the next. The second resume must not close the first interval, nor leave the second open.
        var at = (int minutes, int seconds) => lease.Start + TimeSpan.FromMinutes(minutes) + TimeSpan.FromSeconds(seconds);
        Task<long> Rows() => fx.ScalarAsync("SELECT count(*) FROM downtime WHERE lease_id = @LeaseId", new { lease.LeaseId });
        await fx.Publish(new LeaseInterrupted(lease.LeaseId, lease.OrderId, "node lost", "provider", at(10, 0)));
        await Eventually.True(async () => await Rows() == 1, what: "the first interruption");
        await fx.Publish(new LeaseResumed(lease.LeaseId, lease.OrderId, at(25, 0)));
        await Eventually.True(async () => await fx.ScalarAsync(
            "SELECT count(*) FROM downtime WHERE lease_id = @LeaseId AND ended_at IS NOT NULL", new { lease.LeaseId }) == 1, what: "the second resume");
        await fx.Publish(new LeaseResumed(lease.LeaseId, lease.OrderId, at(10, 20)));
        await Eventually.True(async () => await Rows() == 2, what: "the first resume");
        await fx.Publish(new LeaseInterrupted(lease.LeaseId, lease.OrderId, "node lost", "renter", at(20, 0)));
        await Eventually.True(async () => await fx.ScalarAsync(
            "SELECT count(*) FROM downtime WHERE lease_id = @LeaseId AND cause = 'renter'", new { lease.LeaseId }) == 1, what: "the second interruption");
        await fx.Publish(new LeaseEnded(lease.LeaseId, lease.OrderId, "completed", "ended", "platform", lease.Start + TimeSpan.FromHours(1)));
        await Eventually.True(async () => await fx.ScalarAsync(
            "SELECT count(*) FROM usage WHERE lease_id = @LeaseId AND ended_at IS NOT NULL", new { lease.LeaseId }) == 1, what: "the end");

        var run = await fx.RunPeriodAsync(Day(27));

        var line = InvoiceOf(run, renter).GetProperty("lines").EnumerateArray().Single();
        Assert.Equal(320, line.GetProperty("downtime_seconds").GetInt64());   // 20 s + 300 s, neither billed
        Assert.Equal(3280, line.GetProperty("seconds").GetInt64());
        Assert.Equal(0.994444m, line.GetProperty("availability").GetDecimal()); // only the provider's 20 s count
    }

    [Fact]
    public async Task Downtime_that_reaches_Billing_after_the_lease_ended_is_waited_for_then_unbilled_and_credited()
    {
        var (renter, provider) = (Guid.NewGuid(), Guid.NewGuid());
        await fx.FundAsync(renter, 10_000);
        var lease = await fx.BookAsync(Lease(renter, provider, 1_000, 1, DayStart(30), TimeSpan.FromHours(1)));
        await fx.Publish(new LeaseStarted(lease.LeaseId, lease.OrderId, lease.Start));
        // The provider's node was down 10:00-10:40, but Billing's downtime queues are behind: the lease's end arrives
        // first, saying Scheduling recorded one interruption and one resume.
        await fx.Publish(new LeaseEnded(lease.LeaseId, lease.OrderId, "completed", "ended", "platform", lease.Start + TimeSpan.FromHours(1))
        {
            Interruptions = 1,
            Resumes = 1,
        });
        await Eventually.True(async () => await fx.ScalarAsync(
            "SELECT count(*) FROM usage WHERE lease_id = @LeaseId AND ended_at IS NOT NULL AND started_at IS NOT NULL", new { lease.LeaseId }) == 1,
            what: "the start and the end");
        static bool Invoiced(JsonElement run, Guid renter) =>
            run.GetProperty("invoices").EnumerateArray().Any(i => i.GetProperty("renter_org_id").GetGuid() == renter);

        // Finance runs the day now: the lease is not billed yet (the whole hour would be, with no credit), and the run
        // says a lease waits.
        var early = await fx.RunPeriodAsync(Day(30));
        Assert.False(Invoiced(early, renter));
        Assert.Equal(1, early.GetProperty("leases_waiting").GetInt32());
        Assert.Equal(1, await fx.HoldCount(lease.LeaseId, "pending"));

        // The interruption arrives, not its resume: billing now would leave the renter paying nothing after 10:00.
        var at = (int minutes, int seconds) => lease.Start + TimeSpan.FromMinutes(minutes) + TimeSpan.FromSeconds(seconds);
        await fx.Publish(new LeaseInterrupted(lease.LeaseId, lease.OrderId, "node lost", "provider", at(10, 0)));
        await Eventually.True(async () => await fx.ScalarAsync(
            "SELECT count(*) FROM downtime WHERE lease_id = @LeaseId", new { lease.LeaseId }) == 1, what: "the interruption");
        Assert.False(Invoiced(await fx.RunPeriodAsync(Day(30)), renter));
        Assert.Equal(1, await fx.HoldCount(lease.LeaseId, "pending"));

        await fx.Publish(new LeaseResumed(lease.LeaseId, lease.OrderId, at(10, 40)));
        await Eventually.True(async () => await fx.ScalarAsync(
            "SELECT count(*) FROM downtime WHERE lease_id = @LeaseId AND ended_at IS NOT NULL", new { lease.LeaseId }) == 1, what: "the resume");
        var run = await fx.RunPeriodAsync(Day(30));

        Assert.Equal(0, run.GetProperty("leases_waiting").GetInt32());
        var progress = await fx.Finance().GetFromJsonAsync<JsonElement>($"/v1/billing/periods/{Day(30)}/runs");
        Assert.Equal((0, 3), (progress.GetProperty("leases_waiting").GetInt32(), progress.GetProperty("runs").GetInt32()));
        var line = InvoiceOf(run, renter).GetProperty("lines").EnumerateArray().Single();
        Assert.Equal(40, line.GetProperty("downtime_seconds").GetInt64());    // the 40 s down, not billed
        Assert.Equal(3560, line.GetProperty("seconds").GetInt64());
        Assert.Equal(247, Amount(line, "sla_credit"));                        // 98.89 % → 25 % of 9.89
        Assert.Equal((10_000 - 742, 0), await fx.WalletAsync(renter));
        Assert.True(await fx.LedgerBalancedAsync());
    }

    [Fact]
    public async Task An_interruption_without_a_cause_is_still_downtime_never_billed_and_earns_no_credit()
    {
        var (renter, provider) = (Guid.NewGuid(), Guid.NewGuid());
        await fx.FundAsync(renter, 10_000);
        var lease = await fx.BookAsync(Lease(renter, provider, 1_000, 1, DayStart(28), TimeSpan.FromHours(1)));
        // Events from a publisher that names no cause: empty, blank, missing. An empty cause was stored as a resume
        // waiting for its interruption, so the interruption was lost and its seconds billed; a missing one failed the consumer.
        await fx.RunAsync(lease, TimeSpan.FromHours(1),
            downtime: [(TimeSpan.FromMinutes(10), TimeSpan.FromMinutes(10) + TimeSpan.FromSeconds(30), ""),
                       (TimeSpan.FromMinutes(20), TimeSpan.FromMinutes(20) + TimeSpan.FromSeconds(20), "  "),
                       (TimeSpan.FromMinutes(30), TimeSpan.FromMinutes(30) + TimeSpan.FromSeconds(10), null!)]);
        Assert.Equal(3, await fx.ScalarAsync("SELECT count(*) FROM downtime WHERE lease_id = @LeaseId AND cause = 'unknown'", new { lease.LeaseId }));

        var run = await fx.RunPeriodAsync(Day(28));

        var line = InvoiceOf(run, renter).GetProperty("lines").EnumerateArray().Single();
        Assert.Equal(60, line.GetProperty("downtime_seconds").GetInt64());    // 30 + 20 + 10 s, none billed
        Assert.Equal(3540, line.GetProperty("seconds").GetInt64());
        Assert.Equal(983, Amount(line, "amount"));                            // 10.00 CNY/h × 3540 s = 9.8333 → 9.83
        Assert.Equal(1m, line.GetProperty("availability").GetDecimal());     // no known cause: nothing counts for the SLA
        Assert.Equal(0, Amount(line, "sla_credit"));
        Assert.True(await fx.LedgerBalancedAsync());
    }

    [Fact]
    public async Task A_provider_failure_midway_bills_what_ran_and_credits_it_in_full()
    {
        var (renter, provider) = (Guid.NewGuid(), Guid.NewGuid());
        await fx.FundAsync(renter, 10_000);
        var lease = await fx.BookAsync(Lease(renter, provider, 1_200, 2, DayStart(21), TimeSpan.FromHours(1)));
        await fx.RunAsync(lease, TimeSpan.FromMinutes(30), status: "failed", cause: "provider");

        var run = await fx.RunPeriodAsync(Day(21));

        var invoice = InvoiceOf(run, renter);
        Assert.Equal(1_200, Amount(invoice, "subtotal"));    // 2 × 12.00 × 0.5 h
        Assert.Equal(1_200, Amount(invoice, "sla_credits")); // 50% availability → 100%
        Assert.Equal(0, Amount(invoice, "total"));
        Assert.Equal(0, Amount(StatementOf(run, provider), "net"));
        Assert.Equal((10_000, 0), await fx.WalletAsync(renter));
    }

    [Fact]
    public async Task A_preempted_interruptible_lease_pays_until_preemption_gets_the_rest_back_and_no_credit()
    {
        var (renter, provider) = (Guid.NewGuid(), Guid.NewGuid());
        await fx.FundAsync(renter, 10_000);
        var lease = await fx.BookAsync(Lease(renter, provider, 600, 1, DayStart(22), TimeSpan.FromHours(2), interruptible: true));
        Assert.Equal((10_000 - 1_200, 1_200), await fx.WalletAsync(renter));
        await fx.RunAsync(lease, TimeSpan.FromMinutes(15), status: "preempted", cause: "market");

        var invoice = InvoiceOf(await fx.RunPeriodAsync(Day(22)), renter);

        Assert.Equal(150, Amount(invoice, "total"));
        Assert.Equal(0, Amount(invoice, "sla_credits"));
        Assert.Equal((10_000 - 150, 0), await fx.WalletAsync(renter));
    }

    [Fact]
    public async Task An_extension_grows_the_hold_and_one_the_wallet_cannot_cover_is_rejected_with_the_old_end()
    {
        var renter = Guid.NewGuid();
        await fx.FundAsync(renter, 3_000);
        var lease = await fx.BookAsync(Lease(renter, Guid.NewGuid(), 1_000, 1, DateTimeOffset.UtcNow.AddHours(1), TimeSpan.FromHours(1)));

        await fx.Publish(new LeaseExtended(lease.LeaseId, lease.OrderId, lease.End, lease.End.AddHours(1), DateTimeOffset.UtcNow));
        await Eventually.True(async () => (await fx.WalletAsync(renter)).Held == 2_000, what: "the grown hold");
        await fx.Publish(new LeaseExtended(lease.LeaseId, lease.OrderId, lease.End.AddHours(1), lease.End.AddHours(3), DateTimeOffset.UtcNow));
        await Eventually.True(() => Task.FromResult(fx.Published.OfType<ExtensionRejected>().Any(r => r.LeaseId == lease.LeaseId)), what: "the rejection");

        var rejected = fx.Published.OfType<ExtensionRejected>().Single(r => r.LeaseId == lease.LeaseId);
        Assert.Equal(lease.End.AddHours(1), rejected.RevertTo);
        Assert.StartsWith("wallet holds 10.00 CNY available; extending the lease", rejected.Reason);
        Assert.Equal((1_000, 2_000), await fx.WalletAsync(renter));
        Assert.Equal(2_000, await fx.ScalarAsync("SELECT amount FROM holds WHERE lease_id = @LeaseId", new { lease.LeaseId }));
    }

    [Fact]
    public async Task An_extension_counts_against_the_monthly_cap_of_the_month_its_lease_was_booked_in()
    {
        var renter = Guid.NewGuid();
        await fx.FundAsync(renter, 100_000);
        Assert.Equal(HttpStatusCode.OK, (await fx.Renter(renter).PutAsJsonAsync("/v1/wallet/spend-cap",
            new { amount = new { amount = 5_000, currency = "CNY" } })).StatusCode);
        var start = DateTimeOffset.UtcNow.AddHours(1);
        // Two leases booked last month for 45.00 of its 50.00 cap (booked now, their holds dated back a month).
        var booked = await fx.BookAsync(Lease(renter, Guid.NewGuid(), 1_000, 1, start, TimeSpan.FromHours(1)));   // 10.00
        await fx.BookAsync(Lease(renter, Guid.NewGuid(), 3_500, 1, start, TimeSpan.FromHours(1)));                // 35.00
        await using (var c = fx.Database.OpenAdmin())
            await Dapper.SqlMapper.ExecuteAsync(c, "UPDATE billing.holds SET created_at = created_at - interval '1 month' WHERE renter_org_id = @renter",
                new { renter });

        // Extending the first by an hour costs 10.00 more: last month would have committed 55.00 of its 50.00. Checked
        // against this month (nothing committed yet), it was allowed, and the extension counted in no month's cap.
        await fx.Publish(new LeaseExtended(booked.LeaseId, booked.OrderId, booked.End, booked.End.AddHours(1), DateTimeOffset.UtcNow));
        await Eventually.True(() => Task.FromResult(fx.Published.OfType<ExtensionRejected>().Any(r => r.LeaseId == booked.LeaseId)),
            what: "the rejection");

        var rejected = fx.Published.OfType<ExtensionRejected>().Single(r => r.LeaseId == booked.LeaseId);
        var month = DateTime.UtcNow.AddMonths(-1).ToString("yyyy-MM");
        Assert.Contains($"45.00 CNY of the monthly spend cap of 50.00 CNY is already committed in {month}, the month the lease was booked in",
            rejected.Reason);
        Assert.Equal(1_000, await fx.ScalarAsync("SELECT amount FROM holds WHERE lease_id = @LeaseId", new { booked.LeaseId }));
        Assert.Equal((100_000 - 4_500, 4_500), await fx.WalletAsync(renter));
    }

    [Fact]
    public async Task Spend_caps_refuse_a_booking_above_the_per_order_or_the_monthly_cap_with_the_reason()
    {
        var renter = Guid.NewGuid();
        await fx.FundAsync(renter, 100_000);
        var put = await fx.Renter(renter).PutAsJsonAsync("/v1/wallet/spend-cap",
            new { amount = new { amount = 5_000, currency = "CNY" }, per_order = new { amount = 3_000, currency = "CNY" } });
        Assert.Equal(HttpStatusCode.OK, put.StatusCode);
        var start = DateTimeOffset.UtcNow.AddHours(1);

        var tooBig = Lease(renter, Guid.NewGuid(), 4_000, 1, start, TimeSpan.FromHours(1));   // 40.00 > per-order 30.00
        var first = Lease(renter, Guid.NewGuid(), 2_500, 1, start, TimeSpan.FromHours(1));    // 25.00
        var second = Lease(renter, Guid.NewGuid(), 2_800, 1, start, TimeSpan.FromHours(1));   // 25.00 + 28.00 > monthly 50.00
        await fx.Publish(tooBig);
        await fx.BookAsync(first);
        await fx.Publish(second);
        await Eventually.True(() => Task.FromResult(fx.Published.OfType<HoldRejected>().Count(r => r.RenterOrgId == renter) == 2), what: "two refusals");

        var reasons = fx.Published.OfType<HoldRejected>().Where(r => r.RenterOrgId == renter).ToDictionary(r => r.LeaseId, r => r.Reason);
        Assert.Contains("above the per-order spend cap of 30.00 CNY", reasons[tooBig.LeaseId]);
        Assert.Contains("monthly spend cap of 50.00 CNY", reasons[second.LeaseId]);
        Assert.Equal((100_000 - 2_500, 2_500), await fx.WalletAsync(renter));
        var wallet = await fx.Renter(renter).GetFromJsonAsync<JsonElement>("/v1/wallet");
        var cny = wallet.GetProperty("balances").EnumerateArray().Single();
        Assert.Equal(2_500, Amount(cny, "spent_this_month"));
        Assert.Equal(5_000, Amount(cny, "spend_cap"));
    }

    [Fact]
    public async Task A_spend_cap_put_sets_both_caps_so_each_can_be_changed_and_removed()
    {
        var renter = Guid.NewGuid();
        var client = fx.Renter(renter);
        async Task<(long? Monthly, long? PerOrder)> PutAsync(object body)
        {
            var response = await client.PutAsJsonAsync("/v1/wallet/spend-cap", body);
            Assert.Equal(HttpStatusCode.OK, response.StatusCode);
            var caps = await response.Content.ReadFromJsonAsync<JsonElement>(Json);
            long? Cap(string name) => caps.GetProperty(name).ValueKind == JsonValueKind.Null ? null : Amount(caps, name);
            var answered = (Cap("spend_cap"), Cap("per_order_cap"));
            var wallet = await client.GetFromJsonAsync<JsonElement>("/v1/wallet", Json);
            var cny = wallet.GetProperty("balances").EnumerateArray().Single();
            long? Kept(string name) => cny.GetProperty(name).ValueKind == JsonValueKind.Null ? null : Amount(cny, name);
            Assert.Equal(answered, (Kept("spend_cap"), Kept("per_order_cap")));
            return answered;
        }

        Assert.Equal((5_000, 3_000), await PutAsync(new { amount = new { amount = 5_000, currency = "CNY" }, per_order = new { amount = 3_000, currency = "CNY" } }));
        // Only the per-order cap given: the monthly cap is removed, as documented, and the per-order cap changes.
        Assert.Equal((null, 2_000), await PutAsync(new { per_order = new { amount = 2_000, currency = "CNY" } }));
        // Only the monthly cap given: the per-order cap is removed (it used to stay for good).
        Assert.Equal((6_000, null), await PutAsync(new { amount = new { amount = 6_000, currency = "CNY" } }));
        Assert.Equal((null, 1_000), await PutAsync(new { per_order = new { amount = 1_000, currency = "CNY" } }));
        // Neither: both removed.
        Assert.Equal((null, null), await PutAsync(new { currency = "CNY" }));
    }

    [Fact]
    public async Task Bad_spend_cap_and_threshold_requests_get_a_problem_and_write_nothing()
    {
        var renter = Guid.NewGuid();
        var client = fx.Renter(renter);
        var responses = new[]
        {
            await client.PutAsJsonAsync("/v1/wallet/spend-cap", new { }),
            await client.PutAsJsonAsync("/v1/wallet/spend-cap", new { amount = new { amount = -1, currency = "CNY" } }),
            await client.PutAsJsonAsync("/v1/wallet/spend-cap", new { amount = new { amount = 1, currency = "yuan" } }),
            await client.PutAsJsonAsync("/v1/wallet/spend-cap", new { amount = new { amount = 1, currency = "CNY" }, per_order = new { amount = 1, currency = "USD" } }),
            await client.PutAsJsonAsync("/v1/wallet/low-balance-threshold", new { amount = new { amount = -5, currency = "CNY" } }),
        };
        foreach (var r in responses)
        {
            Assert.Equal(HttpStatusCode.BadRequest, r.StatusCode);
            Assert.Equal("application/problem+json", r.Content.Headers.ContentType?.MediaType);
        }
        Assert.Equal(0, await fx.ScalarAsync("SELECT count(*) FROM wallet_settings WHERE renter_org_id = @renter", new { renter }));
        Assert.Equal(HttpStatusCode.Forbidden, (await fx.Factory.ClientFor(renter, "provider")
            .PutAsJsonAsync("/v1/wallet/spend-cap", new { amount = new { amount = 1, currency = "CNY" } })).StatusCode);
    }

    [Fact]
    public async Task Low_balance_is_published_once_when_available_falls_below_the_threshold()
    {
        var renter = Guid.NewGuid();
        await fx.FundAsync(renter, 10_000);
        (await fx.Renter(renter).PutAsJsonAsync("/v1/wallet/low-balance-threshold", new { amount = new { amount = 5_000, currency = "CNY" } }))
            .EnsureSuccessStatusCode();
        var start = DateTimeOffset.UtcNow.AddHours(1);

        await fx.BookAsync(Lease(renter, Guid.NewGuid(), 4_000, 1, start, TimeSpan.FromHours(1)));  // 60.00 left: above
        await fx.BookAsync(Lease(renter, Guid.NewGuid(), 2_000, 1, start, TimeSpan.FromHours(1)));  // 40.00 left: crosses
        await fx.BookAsync(Lease(renter, Guid.NewGuid(), 1_000, 1, start, TimeSpan.FromHours(1)));  // 30.00 left: still below

        await Eventually.True(() => Task.FromResult(fx.Published.OfType<LowBalance>().Any(l => l.RenterOrgId == renter)), what: "the alert");
        await fx.BookAsync(Lease(renter, Guid.NewGuid(), 100, 1, start, TimeSpan.FromHours(1)));    // a later hold proves the earlier ones were relayed
        await Eventually.True(() => Task.FromResult(fx.Published.OfType<HoldPlaced>().Count(h => h.RenterOrgId == renter) == 4), what: "all holds relayed");
        var alert = fx.Published.OfType<LowBalance>().Single(l => l.RenterOrgId == renter);
        Assert.Equal(new Money(4_000, "CNY"), alert.Available);
        Assert.Equal(new Money(5_000, "CNY"), alert.Threshold);
    }

    [Fact]
    public async Task A_finalized_invoice_never_changes_and_is_corrected_by_a_credit_note_only_finance_issues()
    {
        var (renter, provider) = (Guid.NewGuid(), Guid.NewGuid());
        await fx.FundAsync(renter, 10_000);
        var lease = await fx.BookAsync(Lease(renter, provider, 1_000, 1, DayStart(23), TimeSpan.FromHours(1)));
        await fx.RunAsync(lease, TimeSpan.FromHours(1));
        var invoice = InvoiceOf(await fx.RunPeriodAsync(Day(23)), renter);
        var id = invoice.GetProperty("id").GetGuid();
        Assert.Equal("finalized", invoice.GetProperty("status").GetString());

        // The database refuses to change a finalized invoice, whatever the code does.
        await Assert.ThrowsAnyAsync<Exception>(() => fx.ScalarAsync("UPDATE invoices SET total = 1 WHERE id = @id", new { id }));

        Task<HttpResponseMessage> Credit(HttpClient client, object body, string? key = "k1")
        {
            var request = new HttpRequestMessage(HttpMethod.Post, $"/v1/invoices/{id}/credit-notes") { Content = JsonContent.Create(body) };
            if (key is not null) request.Headers.Add("Idempotency-Key", key);
            return client.SendAsync(request);
        }
        var finance = fx.Finance();
        var bad = new[]
        {
            await Credit(finance, new { amount = new { amount = 100, currency = "CNY" }, reason = "goodwill" }, key: null),
            await Credit(finance, new { amount = new { amount = 0, currency = "CNY" }, reason = "goodwill" }),
            await Credit(finance, new { amount = new { amount = 100, currency = "CNY" } }),
        };
        Assert.All(bad, r => Assert.Equal(HttpStatusCode.BadRequest, r.StatusCode));
        Assert.Equal(HttpStatusCode.UnprocessableEntity, (await Credit(finance, new { amount = new { amount = 1_001, currency = "CNY" }, reason = "too much" })).StatusCode);
        Assert.Equal(HttpStatusCode.Forbidden, (await Credit(fx.Renter(renter), new { amount = new { amount = 100, currency = "CNY" }, reason = "please" })).StatusCode);
        Assert.Equal(0, await fx.ScalarAsync("SELECT count(*) FROM credit_notes WHERE invoice_id = @id", new { id }));

        var created = await Credit(finance, new { amount = new { amount = 250, currency = "CNY" }, reason = "slow storage" });
        var replay = await Credit(finance, new { amount = new { amount = 250, currency = "CNY" }, reason = "slow storage" });

        Assert.Equal(HttpStatusCode.Created, created.StatusCode);
        Assert.Equal(HttpStatusCode.OK, replay.StatusCode);
        Assert.Equal((10_000 - 1_000 + 250, 0), await fx.WalletAsync(renter));
        var read = await fx.Renter(renter).GetFromJsonAsync<JsonElement>($"/v1/invoices/{id}");
        Assert.Equal(1_000, Amount(read, "total"));      // the invoice itself is unchanged
        Assert.Equal(250, Amount(read.GetProperty("credit_notes").EnumerateArray().Single(), "amount"));
        Assert.True(await fx.LedgerBalancedAsync());
    }

    [Fact]
    public async Task A_credit_note_retried_with_the_same_key_and_body_is_answered_with_the_first_even_when_its_reason_has_spaces_around_it()
    {
        var renter = Guid.NewGuid();
        await fx.FundAsync(renter, 10_000);
        var lease = await fx.BookAsync(Lease(renter, Guid.NewGuid(), 1_000, 1, DayStart(29), TimeSpan.FromHours(1)));
        await fx.RunAsync(lease, TimeSpan.FromHours(1));
        var id = InvoiceOf(await fx.RunPeriodAsync(Day(29)), renter).GetProperty("id").GetGuid();

        Task<HttpResponseMessage> Credit()
        {
            var request = new HttpRequestMessage(HttpMethod.Post, $"/v1/invoices/{id}/credit-notes")
            {
                Content = JsonContent.Create(new { amount = new { amount = 300, currency = "CNY" }, reason = "slow storage\n" }),
            };
            request.Headers.Add("Idempotency-Key", "retry-1");
            return fx.Finance().SendAsync(request);
        }
        var created = await Credit();
        var retried = await Credit(); // the client did not see the first answer and sends the very same request again

        Assert.Equal(HttpStatusCode.Created, created.StatusCode);
        Assert.Equal(HttpStatusCode.OK, retried.StatusCode);
        Assert.Equal((await created.Content.ReadFromJsonAsync<JsonElement>()).GetProperty("id").GetGuid(),
            (await retried.Content.ReadFromJsonAsync<JsonElement>()).GetProperty("id").GetGuid());
        Assert.Equal((10_000 - 1_000 + 300, 0), await fx.WalletAsync(renter));
    }

    [Fact]
    public async Task Csv_exports_are_scoped_to_the_org_and_the_ledger_export_is_for_finance()
    {
        var (renter, other, provider) = (Guid.NewGuid(), Guid.NewGuid(), Guid.NewGuid());
        await fx.FundAsync(renter, 10_000);
        await fx.FundAsync(other, 10_000);
        await fx.OnboardAsync(provider);
        var mine = await fx.BookAsync(Lease(renter, provider, 1_000, 1, DayStart(24), TimeSpan.FromHours(1)));
        var theirs = await fx.BookAsync(Lease(other, Guid.NewGuid(), 1_000, 1, DayStart(24), TimeSpan.FromHours(1)));
        await fx.RunAsync(mine, TimeSpan.FromHours(1));
        await fx.RunAsync(theirs, TimeSpan.FromHours(1));
        await fx.RunPeriodAsync(Day(24));

        var csv = await fx.Renter(renter).GetStringAsync("/v1/invoices/export.csv");
        var rows = csv.Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
        Assert.StartsWith("invoice_id,renter_org_id,period,status,lease_id,", rows[0]);
        Assert.Equal(2, rows.Length);
        Assert.Contains(mine.LeaseId.ToString(), rows[1]);
        Assert.DoesNotContain(theirs.LeaseId.ToString(), csv);

        var statements = await fx.Factory.ClientFor(provider, "provider").GetStringAsync("/v1/statements/export.csv");
        Assert.Equal(2, statements.Split('\n', StringSplitOptions.RemoveEmptyEntries).Length);
        Assert.Contains(",1000,100,0,900,paid,tr_", statements);

        Assert.Equal(HttpStatusCode.Forbidden, (await fx.Renter(renter).GetAsync("/v1/ledger/entries.csv")).StatusCode);
        var ledger = await fx.Finance().GetStringAsync("/v1/ledger/entries.csv");
        Assert.StartsWith("id,transaction_id,idempotency_key,kind,created_at,account,currency,amount", ledger);
        Assert.Contains($"hold:{mine.LeaseId}", ledger);
        Assert.Contains($",settle,", ledger);
        Assert.Contains($"renter:{renter}:held", ledger);
        var page = await fx.Finance().GetFromJsonAsync<JsonElement>("/v1/ledger/entries?limit=2");
        Assert.Equal(2, page.GetProperty("data").GetArrayLength());
        Assert.NotNull(page.GetProperty("next_cursor").GetString());
    }

    [Fact]
    public async Task The_ledger_export_writes_a_debit_as_a_negative_number_not_as_escaped_text()
    {
        var renter = Guid.NewGuid();
        await fx.FundAsync(renter, 10_000);
        var lease = await fx.BookAsync(Lease(renter, Guid.NewGuid(), 1_000, 1, DateTimeOffset.UtcNow.AddHours(1), TimeSpan.FromHours(1)));

        var csv = await fx.Finance().GetStringAsync("/v1/ledger/entries.csv");

        // id,transaction_id,idempotency_key,kind,created_at,account,currency,amount: the hold moves 10.00 CNY available → held.
        var hold = csv.Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries)
            .Where(r => r.Contains($"hold:{lease.LeaseId}", StringComparison.Ordinal)).Select(r => r.Split(','))
            .ToDictionary(f => f[5], f => f[7]);
        Assert.Equal("-1000", hold[$"renter:{renter}:available"]); // a number a spreadsheet sums, not the text '-1000
        Assert.Equal("1000", hold[$"renter:{renter}:held"]);
    }
}
