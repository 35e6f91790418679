using Dapper;
using Marketplace.Billing.Invoices;
using Marketplace.ServiceDefaults.Web;
using Microsoft.AspNetCore.Http.HttpResults;
using Npgsql;

namespace Marketplace.Billing.Runs;

/// <summary>
/// POST /v1/billing/periods/{period}/runs (finance): closes the period's usage (see <see cref="BillingRunner"/>) and answers
/// with the period's invoices and statements. Idempotent: running it again, or twice at once, changes nothing.
/// GET of the same path: the run's progress, for the finance CLI's progress bar.
/// </summary>
internal static class RunBillingPeriod
{
    /// <summary>
    /// <paramref name="LeasesWaiting"/>: leases of the period this run left for a later one, because some of their events
    /// (the start, an interruption, a resume) had not reached Billing yet; run the period again when they have.
    /// </summary>
    public sealed record Response(string Period, string Status, int LeasesClosed, IReadOnlyList<Invoice> Invoices, IReadOnlyList<Statement> Statements,
        int LeasesWaiting);

    public sealed record Progress(string Period, string State, int LeasesTotal, int LeasesDone, int Runs, DateTime FirstRunAt,
        DateTime LastRunAt, DateTime? CompletedAt, int LeasesWaiting);

    public static async Task<Results<Ok<Response>, ValidationProblem, ProblemHttpResult>> Handle(
        Caller caller, string period, BillingRunner runner, NpgsqlDataSource db, TimeProvider time, CancellationToken ct)
    {
        if (!caller.IsFinanceOrAdmin) return Problems.Forbidden("Only finance can run a billing period.");
        if (!BillingPeriod.TryParse(period, out var p)) return PeriodProblem(period);
        if (p.From > time.GetUtcNow().UtcDateTime)
            return Problems.Unprocessable("period-not-started", $"The period {p.Name} has not started yet; nothing can be billed for it.");

        var outcome = await runner.RunAsync(p, ct);

        await using var c = await db.OpenConnectionAsync(ct);
        var invoices = await BillingReads.InvoicesAsync(c, null, null, p.Name, null, int.MaxValue, ct);
        var statements = await BillingReads.StatementsAsync(c, null, p.Name, null, int.MaxValue, ct);
        // payouts_pending: a transfer failed and is retried by the next run; payouts_held: some wait for their provider's
        // payout account (see each statement's payout.held_reason).
        var status = !outcome.AllPaid ? "payouts_pending" : statements.Any(s => s.Payout?.Status == "held") ? "payouts_held" : "completed";
        return TypedResults.Ok(new Response(p.Name, status, outcome.LeasesClosed, invoices, statements, outcome.LeasesWaiting));
    }

    public static async Task<Results<Ok<Progress>, ValidationProblem, ProblemHttpResult>> GetProgress(
        Caller caller, string period, NpgsqlDataSource db, CancellationToken ct)
    {
        if (!caller.IsFinanceOrAdmin) return Problems.Forbidden("Only finance can see billing runs.");
        if (!BillingPeriod.TryParse(period, out var p)) return PeriodProblem(period);
        await using var c = await db.OpenConnectionAsync(ct);
        var row = await c.QuerySingleOrDefaultAsync<Progress>(new CommandDefinition("""
            SELECT period, state, leases_total, leases_done, runs, first_run_at, last_run_at, completed_at, leases_waiting
            FROM billing_runs WHERE period = @Name
            """, new { p.Name }, cancellationToken: ct));
        return row is null ? Problems.Of(StatusCodes.Status404NotFound, "not-found", "Not found", $"The period {p.Name} has not been run yet.")
            : TypedResults.Ok(row);
    }

    private static ValidationProblem PeriodProblem(string period) => Problems.Invalid(new Dictionary<string, string[]>
    {
        ["period"] = [$"'{period}' is not a period; use a month (YYYY-MM, e.g. 2026-11) or a day (YYYY-MM-DD)."],
    });
}
