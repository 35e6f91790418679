using Xunit;
using System.Net;
using System.Text.Json;
using Marketplace.Billing.Runs;
using Microsoft.Extensions.DependencyInjection;
using static Marketplace.Billing.Tests.BillingFixture;

namespace Marketplace.Billing.Tests;

/// <summary>A billing run that dies midway leaves committed batches behind; the next run finishes the job exactly once.</summary>
public sealed class RunResumeTests(AutoConfirmingStripe fx) : IClassFixture<AutoConfirmingStripe>
{
    private static DateTimeOffset DayStart(int daysAgo) => new DateTimeOffset(DateTime.UtcNow.Date, TimeSpan.Zero).AddDays(-daysAgo).AddHours(9);
    private static string Day(int daysAgo) => DayStart(daysAgo).ToString("yyyy-MM-dd");

    /// <summary>The same five leases (prices, lengths, downtime) for a fresh renter and provider, in the given day.</summary>
    private async Task<(Guid Renter, Guid Provider)> FiveLeasesAsync(int daysAgo, Guid? from = null)
    {
        var (renter, provider) = (Guid.NewGuid(), from ?? Guid.NewGuid());
        await fx.FundAsync(renter, 100_000);
        var start = DayStart(daysAgo);
        for (var i = 0; i < 5; i++)
        {
            var lease = await fx.BookAsync(Lease(renter, provider, 1_000 + 333 * i, 1 + i % 2, start.AddMinutes(7 * i), TimeSpan.FromHours(1)));
            var down = i % 2 == 0 ? [(TimeSpan.FromMinutes(5), TimeSpan.FromMinutes(5) + TimeSpan.FromSeconds(20 * i + 10), "provider")]
                : Array.Empty<(TimeSpan, TimeSpan, string)>();
            await fx.RunAsync(lease, TimeSpan.FromMinutes(50 + i), downtime: down);
        }
        return (renter, provider);
    }

    private static string Shape(JsonElement invoice, JsonElement statement) => string.Join("|",
        invoice.GetProperty("status").GetString(), Amount(invoice, "subtotal"), Amount(invoice, "sla_credits"), Amount(invoice, "total"),
        string.Join(",", invoice.GetProperty("lines").EnumerateArray()
            .Select(l => $"{l.GetProperty("seconds")}/{Amount(l, "amount")}/{Amount(l, "sla_credit")}").Order()),
        Amount(statement, "gross"), Amount(statement, "platform_fee"), Amount(statement, "sla_credits"), Amount(statement, "net"),
        statement.GetProperty("payout").GetProperty("status").GetString());

    /// <summary>The org's accounts with their balances, the org's id taken out so two orgs compare.</summary>
    private async Task<string> Balances(Guid org)
    {
        await using var c = fx.Database.OpenAdmin();
        var rows = await Dapper.SqlMapper.QueryAsync<(string Account, long Balance)>(c, """
            SELECT replace(account, @org::text, 'ORG'), SUM(amount)::bigint FROM billing.ledger_entries
            WHERE account LIKE '%' || @org::text || '%' GROUP BY account ORDER BY 1
            """, new { org });
        return string.Join(";", rows.Select(r => $"{r.Account}={r.Balance}"));
    }

    [Fact]
    public async Task A_run_that_crashes_midway_resumes_to_the_same_end_state_as_an_uninterrupted_run()
    {
        var crashed = await FiveLeasesAsync(daysAgo: 30);
        var clean = await FiveLeasesAsync(daysAgo: 31);
        var hooks = fx.Factory.Services.GetRequiredService<BillingRunHooks>();

        // Batches are four leases (two chunks of two), chunks go to two writers in turn: [0, 1] and [4] to one, [2, 3] to the
        // other. The run dies after the first batch that commits; what the other writer had committed stays, what it had
        // open rolls back.
        hooks.AfterBatch = (batch, _) => batch == 1 ? throw new InvalidOperationException("simulated crash") : Task.CompletedTask;
        try
        {
            var dead = await fx.Finance().PostAsync($"/v1/billing/periods/{Day(30)}/runs", null);
            Assert.Equal(HttpStatusCode.InternalServerError, dead.StatusCode);
        }
        finally
        {
            hooks.AfterBatch = null;
        }
        // The progress counts exactly the leases whose lines and settled holds the committed batches left.
        var done = await fx.ScalarAsync("SELECT leases_done FROM billing_runs WHERE period = @p", new { p = Day(30) });
        Assert.InRange(done, 2L, 5L);
        Assert.Equal(1, await fx.ScalarAsync("SELECT count(*) FROM billing_runs WHERE period = @p AND state = 'running'", new { p = Day(30) }));
        Assert.Equal(done, await fx.ScalarAsync("SELECT count(*) FROM invoice_lines l JOIN invoices i ON i.id = l.invoice_id WHERE i.status = 'draft' AND i.renter_org_id = @Renter", new { crashed.Renter }));
        Assert.Equal(done, await fx.ScalarAsync("SELECT count(*) FROM holds WHERE renter_org_id = @Renter AND status <> 'pending'", new { crashed.Renter }));

        var resumed = await fx.RunPeriodAsync(Day(30));
        var uninterrupted = await fx.RunPeriodAsync(Day(31));
        var again = await fx.RunPeriodAsync(Day(30));

        Assert.Equal(Shape(InvoiceOf(uninterrupted, clean.Renter), StatementOf(uninterrupted, clean.Provider)),
            Shape(InvoiceOf(resumed, crashed.Renter), StatementOf(resumed, crashed.Provider)));
        Assert.Equal(await Balances(clean.Renter), await Balances(crashed.Renter));
        Assert.Equal(await Balances(clean.Provider), await Balances(crashed.Provider));
        Assert.Equal(0, await fx.ScalarAsync("SELECT count(*) FROM holds WHERE renter_org_id = @Renter AND (status = 'pending' OR settled_by IS NULL)", new { crashed.Renter }));
        Assert.Equal(await fx.WalletAsync(clean.Renter), await fx.WalletAsync(crashed.Renter));
        Assert.Equal(InvoiceOf(resumed, crashed.Renter).GetRawText(), InvoiceOf(again, crashed.Renter).GetRawText());
        Assert.Equal(1, await fx.ScalarAsync("SELECT count(*) FROM invoices WHERE renter_org_id = @Renter", new { crashed.Renter }));
        Assert.Equal(1, await fx.ScalarAsync("SELECT count(*) FROM billing_runs WHERE period = @p AND state = 'completed'", new { p = Day(30) }));
        Assert.True(await fx.LedgerBalancedAsync());
    }

    [Fact]
    public async Task A_run_whose_two_writers_are_stopped_by_a_crash_resumes_to_the_same_end_state_and_pays_the_shared_provider_once()
    {
        // Four renters of five leases each, all renting from one provider, whose statement both writers write to: chunks of
        // two go to the two writers in turn, so a renter's leases are written by both. The same again in another day, run
        // without a crash.
        var (crashedProvider, cleanProvider) = (Guid.NewGuid(), Guid.NewGuid());
        List<Guid> crashed = [], clean = [];
        for (var i = 0; i < 4; i++)
        {
            crashed.Add((await FiveLeasesAsync(34, crashedProvider)).Renter);
            clean.Add((await FiveLeasesAsync(35, cleanProvider)).Renter);
        }
        var total = crashed.Count * 5;
        var hooks = fx.Factory.Services.GetRequiredService<BillingRunHooks>();
        hooks.AfterBatch = (batch, _) => batch == 1 ? throw new InvalidOperationException("simulated crash") : Task.CompletedTask;
        try
        {
            var dead = await fx.Finance().PostAsync($"/v1/billing/periods/{Day(34)}/runs", null);
            Assert.Equal(HttpStatusCode.InternalServerError, dead.StatusCode);
        }
        finally
        {
            hooks.AfterBatch = null;
        }
        // The failing writer stopped the other one: what each committed stays (and is counted), the rest waits.
        var done = await fx.ScalarAsync("SELECT leases_done FROM billing_runs WHERE period = @p", new { p = Day(34) });
        Assert.InRange(done, 4L, total - 1L);
        Assert.Equal(done, await fx.ScalarAsync("SELECT count(*) FROM invoice_lines WHERE provider_org_id = @crashedProvider", new { crashedProvider }));
        Assert.Equal(done, await fx.ScalarAsync("SELECT count(*) FROM holds WHERE renter_org_id = ANY(@crashed) AND status <> 'pending'",
            new { crashed = crashed.ToArray() }));

        var resumed = await fx.RunPeriodAsync(Day(34));
        var uninterrupted = await fx.RunPeriodAsync(Day(35));
        var expected = Shape(InvoiceOf(uninterrupted, clean[0]), StatementOf(uninterrupted, cleanProvider));
        Assert.All(crashed, renter => Assert.Equal(expected, Shape(InvoiceOf(resumed, renter), StatementOf(resumed, crashedProvider))));
        Assert.All(clean, renter => Assert.Equal(expected, Shape(InvoiceOf(uninterrupted, renter), StatementOf(uninterrupted, cleanProvider))));
        Assert.Equal(await Balances(cleanProvider), await Balances(crashedProvider));
        Assert.Equal(total, await fx.ScalarAsync("SELECT count(*) FROM invoice_lines WHERE provider_org_id = @crashedProvider", new { crashedProvider }));
        Assert.Equal(crashed.Count, await fx.ScalarAsync("SELECT count(*) FROM invoices WHERE renter_org_id = ANY(@crashed)", new { crashed = crashed.ToArray() }));
        Assert.Equal(1, await fx.ScalarAsync("SELECT count(*) FROM statements WHERE provider_org_id = @crashedProvider", new { crashedProvider }));
        Assert.True(await fx.LedgerBalancedAsync());
    }

    [Fact]
    public async Task A_run_that_dies_at_its_end_after_the_invoices_are_final_but_before_the_payouts_resumes_and_pays_once()
    {
        // The end finalizes the invoices on one connection while the statements are recomputed and their payouts queued on
        // another: a crash before the payouts leaves final invoices and an unpaid statement; the next run pays it, once.
        var crashed = await FiveLeasesAsync(daysAgo: 36);
        var clean = await FiveLeasesAsync(daysAgo: 37);
        var hooks = fx.Factory.Services.GetRequiredService<BillingRunHooks>();
        hooks.BeforePayoutsQueued = _ => throw new InvalidOperationException("simulated crash");
        try
        {
            var dead = await fx.Finance().PostAsync($"/v1/billing/periods/{Day(36)}/runs", null);
            Assert.Equal(HttpStatusCode.InternalServerError, dead.StatusCode);
        }
        finally
        {
            hooks.BeforePayoutsQueued = null;
        }
        Assert.Equal(5, await fx.ScalarAsync("SELECT leases_done FROM billing_runs WHERE period = @p AND state = 'running'", new { p = Day(36) }));
        Assert.Equal(1, await fx.ScalarAsync("SELECT count(*) FROM invoices WHERE renter_org_id = @Renter AND status = 'finalized'", new { crashed.Renter }));
        Assert.Equal(0, await fx.ScalarAsync("SELECT count(*) FROM payouts po JOIN statements s ON s.id = po.statement_id WHERE s.provider_org_id = @Provider", new { crashed.Provider }));

        var resumed = await fx.RunPeriodAsync(Day(36));
        var uninterrupted = await fx.RunPeriodAsync(Day(37));
        var again = await fx.RunPeriodAsync(Day(36));

        Assert.Equal(Shape(InvoiceOf(uninterrupted, clean.Renter), StatementOf(uninterrupted, clean.Provider)),
            Shape(InvoiceOf(resumed, crashed.Renter), StatementOf(resumed, crashed.Provider)));
        static string Payout(JsonElement statement) => statement.GetProperty("payout") is var p
            ? $"{p.GetProperty("status")}/{Amount(p, "amount")}/{p.GetProperty("held_reason")}" : "";
        Assert.Equal(Payout(StatementOf(uninterrupted, clean.Provider)), Payout(StatementOf(again, crashed.Provider)));
        Assert.Equal(1, await fx.ScalarAsync("SELECT count(*) FROM payouts po JOIN statements s ON s.id = po.statement_id WHERE s.provider_org_id = @Provider", new { crashed.Provider }));
        Assert.Equal(await Balances(clean.Provider), await Balances(crashed.Provider));
        Assert.Equal(await Balances(clean.Renter), await Balances(crashed.Renter));
        Assert.Equal(1, await fx.ScalarAsync("SELECT count(*) FROM billing_runs WHERE period = @p AND state = 'completed'", new { p = Day(36) }));
        Assert.True(await fx.LedgerBalancedAsync());
    }

    [Theory]
    [InlineData(32, 0)] // chunk [0, 1], the first of its writer's batch
    [InlineData(33, 4)] // chunk [4], the second of its writer's batch (after [0, 1]; [2, 3] went to the other writer): the first chunk is written already
    public async Task A_hold_extended_while_the_run_rates_it_is_rated_again_and_its_extra_funds_are_released(int daysAgo, int lease)
    {
        var (renter, _) = await FiveLeasesAsync(daysAgo);
        Assert.Equal(5, await fx.ScalarAsync("SELECT count(*) FROM holds WHERE renter_org_id = @renter AND status = 'pending'", new { renter }));
        Guid target;
        await using (var c = fx.Database.OpenAdmin())
            target = await Dapper.SqlMapper.ExecuteScalarAsync<Guid>(c,
                "SELECT lease_id FROM billing.holds WHERE renter_org_id = @renter ORDER BY lease_id OFFSET @lease LIMIT 1", new { renter, lease });
        var hooks = fx.Factory.Services.GetRequiredService<BillingRunHooks>();
        var extended = 0;
        // An extension commits between the run's read of the lease's chunk and its claim: 1 000 more held on the lease,
        // moved from available to held in the journal, as the extension consumer does. The writer's whole batch is rated again.
        hooks.BeforeClaim = async (leases, _) =>
        {
            if (!leases.Contains(target) || Interlocked.Exchange(ref extended, 1) == 1) return;
            await using var c = fx.Database.OpenAdmin();
            await Dapper.SqlMapper.ExecuteAsync(c, """
                SET search_path = billing;
                UPDATE holds SET amount = amount + 1000 WHERE lease_id = @target;
                WITH t AS (INSERT INTO ledger_transactions (id, idempotency_key, kind, created_at)
                           VALUES (gen_random_uuid(), 'test-extension:' || @renter::text, 'hold', now()) RETURNING id)
                INSERT INTO ledger_entries (transaction_id, account, currency, amount)
                SELECT t.id, e.account, 'CNY', e.amount FROM t,
                       (VALUES ('renter:' || @renter::text || ':available', -1000::bigint), ('renter:' || @renter::text || ':held', 1000::bigint)) e(account, amount);
                """, new { renter, target });
        };
        try
        {
            await fx.RunPeriodAsync(Day(daysAgo));
        }
        finally
        {
            hooks.BeforeClaim = null;
        }
        Assert.Equal(1, extended);
        // The run saw the change and rated the batch again: every hold settled, nothing stays held (the 1 000 extra included).
        Assert.Equal(0, (await fx.WalletAsync(renter)).Held);
        Assert.Equal(0, await fx.ScalarAsync("SELECT count(*) FROM holds WHERE renter_org_id = @renter AND status = 'pending'", new { renter }));
        Assert.Equal(5, await fx.ScalarAsync("SELECT count(*) FROM invoice_lines l JOIN invoices i ON i.id = l.invoice_id WHERE i.renter_org_id = @renter", new { renter }));
        Assert.True(await fx.LedgerBalancedAsync());
    }

    [Fact]
    public async Task Connections_a_run_hands_back_to_the_pool_keep_no_lock_and_none_of_the_runs_settings_even_after_a_crash()
    {
        // The pool does not reset a connection handed back to it (DatabaseExtensions.AddServiceDatabase): whatever a run set
        // on its connections, or a lock it took, would stay for whoever gets the connection next.
        await FiveLeasesAsync(daysAgo: 42);
        var hooks = fx.Factory.Services.GetRequiredService<BillingRunHooks>();
        hooks.AfterBatch = (batch, _) => batch == 1 ? throw new InvalidOperationException("simulated crash") : Task.CompletedTask;
        try
        {
            Assert.Equal(HttpStatusCode.InternalServerError, (await fx.Finance().PostAsync($"/v1/billing/periods/{Day(42)}/runs", null)).StatusCode);
        }
        finally
        {
            hooks.AfterBatch = null;
        }
        await fx.RunPeriodAsync(Day(42));

        // Every idle connection of the pool at once (a run uses fewer than ten), each asked what it carries.
        var dataSource = fx.Factory.Services.GetRequiredService<Npgsql.NpgsqlDataSource>();
        var connections = new List<Npgsql.NpgsqlConnection>();
        try
        {
            for (var i = 0; i < 10; i++) connections.Add(await dataSource.OpenConnectionAsync());
            foreach (var c in connections)
            {
                var (locks, jit, workMem, bitmap, path) = await Dapper.SqlMapper.QuerySingleAsync<(long, string, string, string, string)>(c, """
                    SELECT (SELECT count(*) FROM pg_locks WHERE pid = pg_backend_pid() AND locktype = 'advisory'),
                           current_setting('jit'), current_setting('work_mem'), current_setting('enable_bitmapscan'), current_setting('search_path')
                    """);
                Assert.Equal((0L, "on", "4MB", "on", "billing,public"), (locks, jit, workMem, bitmap, path));
            }
        }
        finally
        {
            foreach (var c in connections) await c.DisposeAsync();
        }
        Assert.Equal(0, await fx.ScalarAsync("SELECT count(*) FROM billing_runs WHERE period = @p AND state <> 'completed'", new { p = Day(42) }));
    }
}
