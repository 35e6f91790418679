using Dapper;
using Marketplace.Billing.Domain;
using Marketplace.Billing.Invoices;
using Marketplace.Billing.Ledger;
using Marketplace.ServiceDefaults.Data;
using Marketplace.ServiceDefaults.Web;
using MassTransit;
using Microsoft.AspNetCore.Http.HttpResults;
using Microsoft.Extensions.Options;
using Stripe;
using Invoice = Marketplace.Billing.Invoices.Invoice;

namespace Marketplace.Billing.Runs;

/// <summary>
/// Closes a billing period: every lease whose usage ended inside it (and before now) and is not yet invoiced gets an
/// invoice line, its charge posted from the hold (held → provider payable + platform fee) and the rest of the hold
/// voided; statements sum the lines per provider; what a statement still owes is paid out by a Stripe Transfer.
/// Idempotent: leases are invoiced once (invoice_lines.lease_id is unique), ledger keys are deterministic, and an
/// advisory lock makes concurrent runs take turns, so the second run finds nothing left to do.
/// </summary>
internal static class RunBillingPeriod
{
    public sealed record Response(string Period, string Status, IReadOnlyList<Invoice> Invoices, IReadOnlyList<Statement> Statements);

    private sealed record Candidate(Guid LeaseId, Guid RenterOrgId, Guid ProviderOrgId, string AcceleratorModel, int AcceleratorCount,
        DateTime StartAt, DateTime EndAt, long PricePerHour, string Currency, DateTime? StartedAt, DateTime EndedAt,
        Guid HoldId, long HoldAmount);

    private sealed record PendingPayout(Guid Id, Guid StatementId, int Sequence, long Amount, string Currency, string Destination, Guid ProviderOrgId);

    public static async Task<Results<Ok<Response>, ValidationProblem, ProblemHttpResult>> Handle(
        Caller caller, string period, Db db, StripeClient stripe, IOptions<BillingOptions> options, ILogger<Response> logger, CancellationToken ct)
    {
        if (!caller.IsFinanceOrAdmin) return Problems.Forbidden("Only finance can run a billing period.");
        if (!BillingPeriod.TryParse(period, out var p))
            return Problems.Invalid(new Dictionary<string, string[]>
            {
                ["period"] = [$"'{period}' is not a period; use a month (YYYY-MM, e.g. 2026-11) or a day (YYYY-MM-DD)."],
            });
        await using (var tx = await db.BeginAsync(ct))
        {
            if (p.From > tx.Now.UtcDateTime)
                return Problems.Unprocessable("period-not-started", $"The period {p.Name} has not started yet; nothing can be billed for it.");
            await CloseUsageAsync(tx, p, options.Value.PlatformFeeBasisPoints, ct);
            await tx.CommitAsync(ct);
        }

        var allPaid = await PayOutAsync(db, stripe, p, logger, ct);

        await using var c = await db.DataSource.OpenConnectionAsync(ct);
        var invoices = await BillingReads.InvoicesAsync(c, null, null, p.Name, null, int.MaxValue, ct);
        var statements = await BillingReads.StatementsAsync(c, null, p.Name, null, int.MaxValue, ct);
        return TypedResults.Ok(new Response(p.Name, allPaid ? "completed" : "payouts_pending", invoices, statements));
    }

    private static async Task CloseUsageAsync(Tx tx, BillingPeriod p, int feeBasisPoints, CancellationToken ct)
    {
        // One lock for all runs, not per period: a day and its month overlap, and must not both bill one lease.
        await tx.Connection.ExecuteAsync(new CommandDefinition(
            "SELECT pg_advisory_xact_lock(hashtextextended('billing-run', 0))", transaction: tx.Transaction, cancellationToken: ct));
        await tx.Connection.ExecuteAsync(new CommandDefinition("""
            INSERT INTO billing_runs (period, first_run_at, last_run_at, runs) VALUES (@Name, @now, @now, 1)
            ON CONFLICT (period) DO UPDATE SET last_run_at = excluded.last_run_at, runs = billing_runs.runs + 1
            """, new { p.Name, now = tx.Now }, tx.Transaction, cancellationToken: ct));

        var candidates = await tx.Connection.QueryAsync<Candidate>(new CommandDefinition("""
            SELECT l.lease_id, l.renter_org_id, l.provider_org_id, l.accelerator_model, l.accelerator_count, l.start_at, l.end_at,
                   l.price_per_hour, l.currency, u.started_at, u.ended_at, h.id AS hold_id, h.amount AS hold_amount
            FROM usage u JOIN leases l USING (lease_id) JOIN holds h USING (lease_id)
            WHERE u.ended_at >= @From AND u.ended_at < @To AND u.ended_at <= @now AND h.status = 'pending'
            ORDER BY u.ended_at, l.lease_id
            """, new { p.From, p.To, now = tx.Now }, tx.Transaction, cancellationToken: ct));

        foreach (var lease in candidates)
        {
            var renterHeld = Accounts.RenterHeld(lease.RenterOrgId);
            if (lease.StartedAt is not { } startedAt)
            {
                // Never ran: no usage, no invoice line; the whole hold goes back.
                await ReleaseAsync(tx, lease, lease.HoldAmount, ct);
                await SettleHoldAsync(tx, lease.HoldId, "voided", ct);
                continue;
            }
            // Per-second metering, never beyond the booked window (the hold covers exactly that).
            var booked = (long)Math.Ceiling((lease.EndAt - lease.StartAt).TotalSeconds);
            var seconds = Math.Clamp((long)Math.Floor((lease.EndedAt - startedAt).TotalSeconds), 0, booked);
            var amount = Math.Min(Rating.Cost(lease.PricePerHour, lease.AcceleratorCount, seconds), lease.HoldAmount);
            var fee = Rating.Fee(amount, feeBasisPoints);

            var invoiceId = await UpsertAsync(tx, "invoices", "renter_org_id", lease.RenterOrgId, p.Name, lease.Currency, ct);
            var statementId = await UpsertAsync(tx, "statements", "provider_org_id", lease.ProviderOrgId, p.Name, lease.Currency, ct);
            await tx.Connection.ExecuteAsync(new CommandDefinition("""
                INSERT INTO invoice_lines (id, invoice_id, statement_id, lease_id, provider_org_id, accelerator_model, accelerator_count,
                                           started_at, ended_at, seconds, unit_price, amount, platform_fee, currency)
                VALUES (@id, @invoiceId, @statementId, @LeaseId, @ProviderOrgId, @AcceleratorModel, @AcceleratorCount,
                        @startedAt, @EndedAt, @seconds, @PricePerHour, @amount, @fee, @Currency)
                """, new { id = NewId.NextSequentialGuid(), invoiceId, statementId, lease.LeaseId, lease.ProviderOrgId, lease.AcceleratorModel,
                    lease.AcceleratorCount, startedAt, lease.EndedAt, seconds, lease.PricePerHour, amount, fee, lease.Currency },
                tx.Transaction, cancellationToken: ct));

            if (amount > 0)
            {
                List<LedgerEntry> entries = [new(renterHeld, lease.Currency, -amount)];
                if (amount - fee != 0) entries.Add(new(Accounts.ProviderPayable(lease.ProviderOrgId), lease.Currency, amount - fee));
                if (fee != 0) entries.Add(new(Accounts.PlatformRevenue, lease.Currency, fee));
                await LedgerStore.PostAsync(tx, new LedgerTransaction($"charge:{lease.LeaseId}", "charge", entries), ct);
            }
            await ReleaseAsync(tx, lease, lease.HoldAmount - amount, ct);
            await SettleHoldAsync(tx, lease.HoldId, amount > 0 ? "posted" : "voided", ct);
        }

        await tx.Connection.ExecuteAsync(new CommandDefinition("""
            UPDATE invoices i SET total = COALESCE((SELECT SUM(amount) FROM invoice_lines WHERE invoice_id = i.id), 0)
            WHERE period = @Name;
            UPDATE statements s SET gross = t.gross, platform_fee = t.fee, net = t.gross - t.fee - s.sla_credits
            FROM (SELECT l.statement_id, SUM(l.amount) AS gross, SUM(l.platform_fee) AS fee
                  FROM invoice_lines l JOIN statements st ON st.id = l.statement_id
                  WHERE st.period = @Name GROUP BY l.statement_id) t
            WHERE t.statement_id = s.id AND s.period = @Name;
            -- What a statement still owes becomes the next payout (one per run that added to it).
            INSERT INTO payouts (id, statement_id, sequence, amount, currency, destination, status, created_at)
            SELECT gen_random_uuid(), s.id, COALESCE(MAX(po.sequence) + 1, 0), s.net - COALESCE(SUM(po.amount), 0), s.currency,
                   'acct_' || replace(s.provider_org_id::text, '-', ''), 'pending', @now
            FROM statements s LEFT JOIN payouts po ON po.statement_id = s.id
            WHERE s.period = @Name
            GROUP BY s.id
            HAVING s.net - COALESCE(SUM(po.amount), 0) > 0;
            """, new { p.Name, now = tx.Now }, tx.Transaction, cancellationToken: ct));
    }

    private static async Task<Guid> UpsertAsync(Tx tx, string table, string orgColumn, Guid org, string period, string currency, CancellationToken ct)
    {
        var extra = table == "statements" ? ", gross, platform_fee, net" : ", total";
        var zeros = table == "statements" ? ", 0, 0, 0" : ", 0";
        await tx.Connection.ExecuteAsync(new CommandDefinition($"""
            INSERT INTO {table} (id, {orgColumn}, period, currency, created_at{extra})
            VALUES (@id, @org, @period, @currency, @now{zeros})
            ON CONFLICT ({orgColumn}, period, currency) DO NOTHING
            """, new { id = NewId.NextSequentialGuid(), org, period, currency, now = tx.Now }, tx.Transaction, cancellationToken: ct));
        return await tx.Connection.ExecuteScalarAsync<Guid>(new CommandDefinition(
            $"SELECT id FROM {table} WHERE {orgColumn} = @org AND period = @period AND currency = @currency",
            new { org, period, currency }, tx.Transaction, cancellationToken: ct));
    }

    private static async Task ReleaseAsync(Tx tx, Candidate lease, long rest, CancellationToken ct)
    {
        if (rest <= 0) return;
        await LedgerStore.PostAsync(tx, LedgerTransaction.Transfer($"release:{lease.LeaseId}", "release",
            Accounts.RenterHeld(lease.RenterOrgId), Accounts.RenterAvailable(lease.RenterOrgId), lease.Currency, rest), ct);
    }

    private static Task SettleHoldAsync(Tx tx, Guid holdId, string status, CancellationToken ct) =>
        tx.Connection.ExecuteAsync(new CommandDefinition(
            "UPDATE holds SET status = @status, settled_at = @now WHERE id = @holdId",
            new { holdId, status, now = tx.Now }, tx.Transaction, cancellationToken: ct));

    /// <summary>
    /// Sends every pending payout of the period as a Stripe Transfer, outside the run's transaction (no lock held across
    /// the network). The idempotency key comes from the statement, so a retry or a concurrent run gets the same transfer.
    /// </summary>
    private static async Task<bool> PayOutAsync(Db db, StripeClient stripe, BillingPeriod p, ILogger logger, CancellationToken ct)
    {
        List<PendingPayout> pending;
        await using (var c = await db.DataSource.OpenConnectionAsync(ct))
        {
            pending = (await c.QueryAsync<PendingPayout>(new CommandDefinition("""
                SELECT po.id, po.statement_id, po.sequence, po.amount, po.currency, po.destination, s.provider_org_id
                FROM payouts po JOIN statements s ON s.id = po.statement_id
                WHERE s.period = @Name AND po.status = 'pending' ORDER BY po.created_at
                """, new { p.Name }, cancellationToken: ct))).ToList();
        }
        var allPaid = true;
        foreach (var payout in pending)
        {
            string? transferId = null, error = null;
            try
            {
                var transfer = await new TransferService(stripe).CreateAsync(new TransferCreateOptions
                {
                    Amount = payout.Amount,
                    Currency = payout.Currency.ToLowerInvariant(),
                    Destination = payout.Destination,
                    TransferGroup = $"statement_{payout.StatementId:N}",
                    Metadata = new Dictionary<string, string> { ["payout_id"] = payout.Id.ToString(), ["statement_id"] = payout.StatementId.ToString() },
                }, new RequestOptions { IdempotencyKey = $"payout:{payout.StatementId}:{payout.Sequence}" }, ct);
                transferId = transfer.Id;
            }
            catch (StripeException ex)
            {
                logger.LogWarning(ex, "Stripe refused payout {Payout}; it stays pending for the next run", payout.Id);
                error = ex.Message;
                allPaid = false;
            }

            await using var tx = await db.BeginAsync(ct);
            if (transferId is null)
            {
                await tx.Connection.ExecuteAsync(new CommandDefinition("UPDATE payouts SET last_error = @error WHERE id = @Id",
                    new { payout.Id, error }, tx.Transaction, cancellationToken: ct));
            }
            else
            {
                var updated = await tx.Connection.ExecuteAsync(new CommandDefinition("""
                    UPDATE payouts SET status = 'paid', transfer_id = @transferId, paid_at = @now, last_error = NULL
                    WHERE id = @Id AND status = 'pending'
                    """, new { payout.Id, transferId, now = tx.Now }, tx.Transaction, cancellationToken: ct));
                if (updated == 1)
                    await LedgerStore.PostAsync(tx, LedgerTransaction.Transfer($"payout:{payout.Id}", "payout",
                        Accounts.ProviderPayable(payout.ProviderOrgId), Accounts.PayoutsClearing, payout.Currency, payout.Amount), ct);
            }
            await tx.CommitAsync(ct);
        }
        return allPaid;
    }
}
