using Xunit;
using System.Net;
using System.Net.Http.Json;
using System.Text.Json;
using Marketplace.Contracts;
using Marketplace.Testing;

namespace Marketplace.Billing.Tests;

/// <summary>Holds at booking, usage from lease events, and the finance billing run, end to end on the real servers.</summary>
public sealed class HoldAndRunTests(AutoConfirmingStripe fx) : IClassFixture<AutoConfirmingStripe>
{
    private static LeaseScheduled Lease(Guid renter, Guid provider, long pricePerHour, int count, DateTimeOffset start, TimeSpan length) =>
        new(Guid.NewGuid(), Guid.NewGuid(), Guid.NewGuid(), renter, provider, "h100-sxm", count, start, start + length,
            new Money(pricePerHour, "CNY"), [], DateTimeOffset.UtcNow);

    private Task<long> HoldCount(Guid lease, string status) =>
        fx.ScalarAsync("SELECT count(*) FROM holds WHERE lease_id = @lease AND status = @status", new { lease, status });

    private int Placed(Guid lease) => fx.Published.OfType<HoldPlaced>().Count(m => m.LeaseId == lease);
    private int Rejected(Guid lease) => fx.Published.OfType<HoldRejected>().Count(m => m.LeaseId == lease);

    private Task<long> LedgerRows() => fx.ScalarAsync("SELECT (SELECT count(*) FROM ledger_entries) + (SELECT count(*) FROM ledger_transactions)");

    /// <summary>A lease that ran from its start for <paramref name="used"/> and ended; returns it once Billing metered it.</summary>
    private async Task<LeaseScheduled> RunLeaseAsync(Guid renter, Guid provider, long price, int count, DateTimeOffset start, TimeSpan length, TimeSpan used)
    {
        var lease = Lease(renter, provider, price, count, start, length);
        await fx.Publish(lease);
        await Eventually.True(async () => await HoldCount(lease.LeaseId, "pending") == 1, what: "the hold");
        await fx.Publish(new LeaseStarted(lease.LeaseId, lease.OrderId, start));
        await Eventually.True(async () => await fx.ScalarAsync(
            "SELECT count(*) FROM usage WHERE lease_id = @LeaseId AND started_at IS NOT NULL", new { lease.LeaseId }) == 1, what: "usage start");
        await fx.Publish(new LeaseEnded(lease.LeaseId, lease.OrderId, "completed", "lease reached its end", "platform", start + used));
        await Eventually.True(async () => await fx.ScalarAsync(
            "SELECT count(*) FROM usage WHERE lease_id = @LeaseId AND ended_at IS NOT NULL", new { lease.LeaseId }) == 1, what: "usage end");
        return lease;
    }

    private async Task<JsonElement> RunAsync(string period)
    {
        var response = await fx.Finance().PostAsync($"/v1/billing/periods/{period}/runs", null);
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        return await response.Content.ReadFromJsonAsync<JsonElement>();
    }

    private static JsonElement InvoiceOf(JsonElement run, Guid renter) =>
        run.GetProperty("invoices").EnumerateArray().Single(i => i.GetProperty("renter_org_id").GetGuid() == renter);

    private static JsonElement StatementOf(JsonElement run, Guid provider) =>
        run.GetProperty("statements").EnumerateArray().Single(s => s.GetProperty("provider_org_id").GetGuid() == provider);

    private static string PeriodOf(DateTimeOffset at) => at.UtcDateTime.ToString("yyyy-MM");

    [Fact]
    public async Task A_top_up_through_stripe_credits_the_wallet_when_the_signed_webhook_arrives()
    {
        var org = Guid.NewGuid();
        await fx.FundAsync(org, 12_345);
        Assert.Equal((12_345, 0), await fx.WalletAsync(org));
    }

    [Fact]
    public async Task A_lease_the_wallet_covers_is_held_and_one_it_cannot_cover_is_rejected_with_the_numbers()
    {
        var renter = Guid.NewGuid();
        await fx.FundAsync(renter, 10_000); // 100.00 CNY
        var start = DateTimeOffset.UtcNow.AddHours(1);
        var affordable = Lease(renter, Guid.NewGuid(), 235, 1, start, TimeSpan.FromMinutes(30));      // up to 1.18 CNY
        var tooDear = Lease(renter, Guid.NewGuid(), 5_000, 8, start, TimeSpan.FromHours(1));          // up to 400.00 CNY

        await fx.Publish(affordable);
        await Eventually.True(async () => await HoldCount(affordable.LeaseId, "pending") == 1, what: "the hold");
        await fx.Publish(tooDear);
        await Eventually.True(() => Task.FromResult(Rejected(tooDear.LeaseId) == 1 && Placed(affordable.LeaseId) == 1), what: "the decisions");

        Assert.Equal(0, await fx.ScalarAsync("SELECT count(*) FROM holds WHERE lease_id = @LeaseId", new { tooDear.LeaseId }));
        Assert.Equal((10_000 - 118, 118), await fx.WalletAsync(renter));
        var reason = fx.Published.OfType<HoldRejected>().Single(m => m.LeaseId == tooDear.LeaseId).Reason;
        Assert.StartsWith("wallet holds 98.82 CNY available; this lease needs up to 400.00 CNY", reason);
    }

    [Fact]
    public async Task Two_leases_booked_at_once_cannot_both_spend_the_same_funds()
    {
        var renter = Guid.NewGuid();
        await fx.FundAsync(renter, 10_000);
        var start = DateTimeOffset.UtcNow.AddHours(1);
        var a = Lease(renter, Guid.NewGuid(), 6_000, 1, start, TimeSpan.FromHours(1)); // 60.00 each, 100.00 in the wallet
        var b = Lease(renter, Guid.NewGuid(), 6_000, 1, start, TimeSpan.FromHours(1));

        await Task.WhenAll(fx.Publish(a), fx.Publish(b));
        await Eventually.True(() => Task.FromResult(
            Placed(a.LeaseId) + Rejected(a.LeaseId) + Placed(b.LeaseId) + Rejected(b.LeaseId) == 2), what: "both decisions");

        Assert.Equal(1, Placed(a.LeaseId) + Placed(b.LeaseId));
        Assert.Equal((4_000, 6_000), await fx.WalletAsync(renter));
    }

    [Fact]
    public async Task The_same_lease_scheduled_again_under_another_message_id_holds_nothing_more_and_is_not_a_failure()
    {
        var renter = Guid.NewGuid();
        await fx.FundAsync(renter, 10_000);
        var lease = Lease(renter, Guid.NewGuid(), 1_000, 1, DateTimeOffset.UtcNow.AddHours(1), TimeSpan.FromHours(1));
        await fx.Publish(lease);
        await Eventually.True(async () => await HoldCount(lease.LeaseId, "pending") == 1, what: "the hold");
        Task<long> Handled() => fx.ScalarAsync("SELECT count(*) FROM inbox WHERE consumer = 'lease-scheduled'");
        var handled = await Handled();

        // The same event again as a new message (republished by hand from a log, or by a publisher's retry that lost
        // its message id): the inbox cannot tell, the lease can.
        await fx.Publish(lease);
        await Eventually.True(async () => await Handled() == handled + 1, what: "the second delivery handled (not failed)");

        Assert.Equal(1, await HoldCount(lease.LeaseId, "pending"));
        Assert.Equal((9_000, 1_000), await fx.WalletAsync(renter));
        Assert.Equal(1, Placed(lease.LeaseId));
        Assert.Equal(0, Rejected(lease.LeaseId));
        Assert.True(await fx.LedgerBalancedAsync());
    }

    [Fact]
    public async Task A_refused_lease_scheduled_again_under_another_message_id_after_a_top_up_is_not_held()
    {
        var renter = Guid.NewGuid();
        await fx.FundAsync(renter, 500);
        var lease = Lease(renter, Guid.NewGuid(), 1_000, 1, DateTimeOffset.UtcNow.AddHours(1), TimeSpan.FromHours(1));
        await fx.Publish(lease);
        await Eventually.True(() => Task.FromResult(Rejected(lease.LeaseId) == 1), what: "the refusal");
        await fx.FundAsync(renter, 10_000);
        Task<long> Handled() => fx.ScalarAsync("SELECT count(*) FROM inbox WHERE consumer = 'lease-scheduled'");
        var handled = await Handled();

        // Scheduling cancelled the lease when it was refused: the same event again must not reserve funds for it.
        await fx.Publish(lease);
        await Eventually.True(async () => await Handled() == handled + 1, what: "the second delivery handled");

        Assert.Equal(0, await fx.ScalarAsync("SELECT count(*) FROM holds WHERE lease_id = @LeaseId", new { lease.LeaseId }));
        Assert.Equal((10_500, 0), await fx.WalletAsync(renter));
        Assert.Equal(0, Placed(lease.LeaseId));
    }

    [Fact]
    public async Task A_lease_cancelled_before_it_started_gets_its_whole_hold_back_at_once()
    {
        var renter = Guid.NewGuid();
        await fx.FundAsync(renter, 5_000);
        var lease = Lease(renter, Guid.NewGuid(), 1_000, 2, DateTimeOffset.UtcNow.AddHours(2), TimeSpan.FromHours(1));
        await fx.Publish(lease);
        await Eventually.True(async () => await HoldCount(lease.LeaseId, "pending") == 1, what: "the hold");
        Assert.Equal((3_000, 2_000), await fx.WalletAsync(renter));

        await fx.Publish(new LeaseEnded(lease.LeaseId, lease.OrderId, "cancelled", "cancelled by the renter", "renter", DateTimeOffset.UtcNow));
        await Eventually.True(async () => await HoldCount(lease.LeaseId, "voided") == 1, what: "the void");

        Assert.Equal((5_000, 0), await fx.WalletAsync(renter));
    }

    [Fact]
    public async Task A_billing_run_invoices_the_usage_pays_the_provider_and_leaves_the_ledger_balanced()
    {
        var (renter, provider) = (Guid.NewGuid(), Guid.NewGuid());
        await fx.FundAsync(renter, 10_000);
        await fx.OnboardAsync(provider);
        var start = DateTimeOffset.UtcNow.AddHours(-2);
        // Booked for an hour, used 30 min 7 s: 2 × 2.35 CNY/h × 1807 s / 3600 = 2.3591… → 2.36 CNY.
        var lease = await RunLeaseAsync(renter, provider, 235, 2, start, TimeSpan.FromHours(1), TimeSpan.FromSeconds(1807));

        var run = await RunAsync(PeriodOf(start + TimeSpan.FromSeconds(1807)));

        // Other tests' providers in the same month may have no payout account (payouts_held); no transfer failed.
        Assert.NotEqual("payouts_pending", run.GetProperty("status").GetString());
        var invoice = InvoiceOf(run, renter);
        Assert.Equal(236, invoice.GetProperty("total").GetProperty("amount").GetInt64());
        var line = invoice.GetProperty("lines").EnumerateArray().Single();
        Assert.Equal(lease.LeaseId, line.GetProperty("lease_id").GetGuid());
        Assert.Equal(1807, line.GetProperty("seconds").GetInt64());
        Assert.Equal(235, line.GetProperty("unit_price").GetProperty("amount").GetInt64());
        var statement = StatementOf(run, provider);
        Assert.Equal(236, statement.GetProperty("gross").GetProperty("amount").GetInt64());
        Assert.Equal(24, statement.GetProperty("platform_fee").GetProperty("amount").GetInt64());   // 10 % of 2.36, half to even
        Assert.Equal(0, statement.GetProperty("sla_credits").GetProperty("amount").GetInt64());
        Assert.Equal(212, statement.GetProperty("net").GetProperty("amount").GetInt64());
        var payout = statement.GetProperty("payout");
        Assert.Equal("paid", payout.GetProperty("status").GetString());
        Assert.StartsWith("tr_", payout.GetProperty("transfer_id").GetString());

        Assert.Equal((10_000 - 236, 0), await fx.WalletAsync(renter));
        var trial = await fx.Finance().GetFromJsonAsync<JsonElement>("/v1/ledger/trial-balance");
        Assert.True(trial.GetProperty("balanced").GetBoolean());
        long Balance(string account) => trial.GetProperty("accounts").EnumerateArray()
            .Where(a => a.GetProperty("account").GetString() == account).Sum(a => a.GetProperty("balance").GetInt64());
        Assert.Equal(0, Balance($"provider:{provider}:payable"));
        Assert.Equal(0, Balance($"renter:{renter}:held"));
        Assert.Equal(0, await fx.ScalarAsync("SELECT COALESCE(SUM(amount), 0)::bigint FROM ledger_entries"));
    }

    [Fact]
    public async Task Running_a_period_twice_returns_the_same_invoices_and_writes_no_ledger_rows()
    {
        var (renter, provider) = (Guid.NewGuid(), Guid.NewGuid());
        await fx.FundAsync(renter, 10_000);
        var start = DateTimeOffset.UtcNow.AddHours(-3);
        await RunLeaseAsync(renter, provider, 100, 1, start, TimeSpan.FromHours(1), TimeSpan.FromHours(1));
        var period = PeriodOf(start + TimeSpan.FromHours(1));

        var first = await RunAsync(period);
        var rows = await LedgerRows();
        var second = await RunAsync(period);

        Assert.Equal(rows, await LedgerRows());
        Assert.Equal(InvoiceOf(first, renter).GetRawText(), InvoiceOf(second, renter).GetRawText());
        Assert.Equal(StatementOf(first, provider).GetRawText(), StatementOf(second, provider).GetRawText());
        Assert.Equal(1, await fx.ScalarAsync("SELECT count(*) FROM payouts p JOIN statements s ON s.id = p.statement_id WHERE s.provider_org_id = @provider", new { provider }));
    }

    [Fact]
    public async Task Two_finance_users_running_one_period_at_once_do_the_work_once()
    {
        var (renter, provider) = (Guid.NewGuid(), Guid.NewGuid());
        await fx.FundAsync(renter, 10_000);
        var start = DateTimeOffset.UtcNow.AddHours(-4);
        var lease = await RunLeaseAsync(renter, provider, 360, 3, start, TimeSpan.FromHours(1), TimeSpan.FromMinutes(40)); // 7.20 CNY
        var period = PeriodOf(start + TimeSpan.FromMinutes(40));

        var runs = await Task.WhenAll(RunAsync(period), RunAsync(period));
        var rows = await LedgerRows();
        await RunAsync(period);

        Assert.Equal(rows, await LedgerRows());
        Assert.Equal(InvoiceOf(runs[0], renter).GetRawText(), InvoiceOf(runs[1], renter).GetRawText());
        Assert.Equal(720, InvoiceOf(runs[0], renter).GetProperty("total").GetProperty("amount").GetInt64());
        Assert.Equal(1, await fx.ScalarAsync("SELECT count(*) FROM invoice_lines WHERE lease_id = @LeaseId", new { lease.LeaseId }));
        // The hold was settled once: one entry reserving it, one settling it, nothing else on the renter's held account.
        Assert.Equal(2, await fx.ScalarAsync("SELECT count(*) FROM ledger_entries WHERE account = @a", new { a = $"renter:{renter}:held" }));
        Assert.Equal(1, await fx.ScalarAsync("""
            SELECT count(*) FROM holds h JOIN ledger_transactions t ON t.id = h.settled_by WHERE h.lease_id = @LeaseId AND t.kind = 'settle'
            """, new { lease.LeaseId }));
        Assert.Equal((10_000 - 720, 0), await fx.WalletAsync(renter));
    }

    [Fact]
    public async Task The_database_refuses_a_second_invoice_line_for_a_lease_even_on_a_draft_invoice_of_another_period()
    {
        var (renter, provider) = (Guid.NewGuid(), Guid.NewGuid());
        await fx.FundAsync(renter, 10_000);
        var start = DateTimeOffset.UtcNow.AddHours(-3);
        var lease = await RunLeaseAsync(renter, provider, 100, 1, start, TimeSpan.FromHours(1), TimeSpan.FromHours(1));
        await RunAsync(PeriodOf(start + TimeSpan.FromHours(1)));

        // Everything else about the second line is valid: a draft invoice, an existing statement, a known lease.
        await using var c = fx.Database.OpenAdmin();
        var e = await Assert.ThrowsAsync<Npgsql.PostgresException>(() => Dapper.SqlMapper.ExecuteAsync(c, """
            SET search_path = billing;
            INSERT INTO invoices (id, renter_org_id, period, currency, created_at, total) VALUES (@invoice, @renter, '2099-01', 'CNY', now(), 0);
            INSERT INTO invoice_lines (id, invoice_id, statement_id, lease_id, provider_org_id, accelerator_model, accelerator_count,
                                       started_at, ended_at, seconds, unit_price, amount, platform_fee, currency)
            SELECT @line, @invoice, l.statement_id, l.lease_id, l.provider_org_id, l.accelerator_model, l.accelerator_count,
                   l.started_at, l.ended_at, l.seconds, l.unit_price, l.amount, l.platform_fee, l.currency
            FROM invoice_lines l WHERE l.lease_id = @LeaseId
            """, new { invoice = Guid.NewGuid(), line = Guid.NewGuid(), renter, lease.LeaseId }));

        Assert.Equal(Npgsql.PostgresErrorCodes.UniqueViolation, e.SqlState);
        Assert.Equal(1, await fx.ScalarAsync("SELECT count(*) FROM invoice_lines WHERE lease_id = @LeaseId", new { lease.LeaseId }));
        Assert.Equal(0, await fx.ScalarAsync("SELECT count(*) FROM invoices WHERE renter_org_id = @renter AND period = '2099-01'", new { renter }));
    }

    [Fact]
    public async Task A_renter_reads_only_its_own_invoices_and_a_provider_only_its_own_statements()
    {
        var (renter, other, provider) = (Guid.NewGuid(), Guid.NewGuid(), Guid.NewGuid());
        await fx.FundAsync(renter, 10_000);
        var start = DateTimeOffset.UtcNow.AddHours(-5);
        await RunLeaseAsync(renter, provider, 100, 1, start, TimeSpan.FromHours(1), TimeSpan.FromMinutes(10));
        var run = await RunAsync(PeriodOf(start + TimeSpan.FromMinutes(10)));
        var invoiceId = InvoiceOf(run, renter).GetProperty("id").GetGuid();

        var own = await fx.Renter(renter).GetAsync($"/v1/invoices/{invoiceId}");
        var foreign = await fx.Renter(other).GetAsync($"/v1/invoices/{invoiceId}");
        var otherList = await fx.Renter(other).GetFromJsonAsync<JsonElement>("/v1/invoices");
        var ownList = await fx.Renter(renter).GetFromJsonAsync<JsonElement>("/v1/invoices");
        var statements = await fx.Factory.ClientFor(provider, "provider").GetFromJsonAsync<JsonElement>("/v1/statements");
        var strangerStatements = await fx.Factory.ClientFor(Guid.NewGuid(), "provider").GetFromJsonAsync<JsonElement>("/v1/statements");

        Assert.Equal(HttpStatusCode.OK, own.StatusCode);
        Assert.Equal(HttpStatusCode.NotFound, foreign.StatusCode);
        Assert.Equal("application/problem+json", foreign.Content.Headers.ContentType?.MediaType);
        Assert.Empty(otherList.GetProperty("data").EnumerateArray());
        Assert.Equal(invoiceId, ownList.GetProperty("data").EnumerateArray().Single().GetProperty("id").GetGuid());
        Assert.Equal(provider, statements.GetProperty("data").EnumerateArray().Single().GetProperty("provider_org_id").GetGuid());
        Assert.Empty(strangerStatements.GetProperty("data").EnumerateArray());
    }

    [Theory]
    [InlineData("2026-13")]
    [InlineData("november")]
    [InlineData("2026-11-31")]
    [InlineData("2026-1")]
    public async Task A_malformed_period_is_a_problem_and_nothing_is_run(string period)
    {
        var runs = await fx.ScalarAsync("SELECT count(*) FROM billing_runs");

        var response = await fx.Finance().PostAsync($"/v1/billing/periods/{period}/runs", null);

        Assert.Equal(HttpStatusCode.BadRequest, response.StatusCode);
        Assert.Equal("application/problem+json", response.Content.Headers.ContentType?.MediaType);
        Assert.Contains("YYYY-MM", await response.Content.ReadAsStringAsync());
        Assert.Equal(runs, await fx.ScalarAsync("SELECT count(*) FROM billing_runs"));
    }

    [Theory]
    [InlineData("9999-12")]
    [InlineData("9999-12-31")]
    public async Task A_period_whose_end_is_past_the_last_representable_time_is_a_problem_not_a_server_error(string period)
    {
        var runs = await fx.ScalarAsync("SELECT count(*) FROM billing_runs");

        var run = await fx.Finance().PostAsync($"/v1/billing/periods/{period}/runs", null);
        var progress = await fx.Finance().GetAsync($"/v1/billing/periods/{period}/runs");

        foreach (var response in new[] { run, progress })
        {
            Assert.Equal(HttpStatusCode.BadRequest, response.StatusCode);
            Assert.Equal("application/problem+json", response.Content.Headers.ContentType?.MediaType);
        }
        Assert.Equal(runs, await fx.ScalarAsync("SELECT count(*) FROM billing_runs"));
    }

    [Fact]
    public async Task Only_finance_runs_periods_and_reads_the_trial_balance()
    {
        var renter = fx.Renter(Guid.NewGuid());
        Assert.Equal(HttpStatusCode.Forbidden, (await renter.PostAsync("/v1/billing/periods/2026-01/runs", null)).StatusCode);
        Assert.Equal(HttpStatusCode.Forbidden, (await renter.GetAsync("/v1/ledger/trial-balance")).StatusCode);
    }
}
