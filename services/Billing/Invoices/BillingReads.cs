using Dapper;
using Marketplace.Contracts;
using Marketplace.ServiceDefaults.Web;
using Microsoft.AspNetCore.Http.HttpResults;
using Npgsql;

namespace Marketplace.Billing.Invoices;

public sealed record InvoiceLine(Guid Id, Guid LeaseId, Guid ProviderOrgId, string AcceleratorModel, int AcceleratorCount,
    DateTime StartedAt, DateTime EndedAt, long Seconds, Money UnitPrice, Money Amount, long DowntimeSeconds, decimal Availability,
    string SlaLevel, Money SlaCredit, string? EndStatus);

/// <summary>A credit on the invoice for a lease's downtime, charged to its provider.</summary>
public sealed record CreditLine(Guid LeaseId, string Kind, string Description, Money Amount);

public sealed record CreditNote(Guid Id, Guid InvoiceId, Money Amount, string Reason, DateTime CreatedAt);

/// <summary>total = subtotal (the lines) − sla_credits: what the renter pays. Credit notes correct a finalized invoice.</summary>
public sealed record Invoice(Guid Id, Guid RenterOrgId, string Period, string Status, Money Subtotal, Money SlaCredits, Money Total,
    DateTime CreatedAt, DateTime? FinalizedAt, IReadOnlyList<InvoiceLine> Lines, IReadOnlyList<CreditLine> CreditLines,
    IReadOnlyList<CreditNote> CreditNotes);

/// <summary>status: held (waiting for the provider's payout account; see held_reason), pending (to be sent), paid.</summary>
public sealed record Payout(Guid Id, string Status, Money Amount, string? TransferId, string? LastError, string? Destination, string? HeldReason);

public sealed record Statement(Guid Id, Guid ProviderOrgId, string Period, Money Gross, Money PlatformFee, Money SlaCredits, Money Net,
    DateTime CreatedAt, Payout? Payout);

public sealed record Page<T>(IReadOnlyList<T> Data, string? NextCursor);

/// <summary>Invoices and statements as the API shows them; the billing run returns the same shapes.</summary>
internal static class BillingReads
{
    private sealed record InvoiceRow(Guid Id, Guid RenterOrgId, string Period, string Currency, string Status, long Subtotal, long SlaCredits,
        long Total, DateTime CreatedAt, DateTime? FinalizedAt);
    private sealed record LineRow(Guid Id, Guid InvoiceId, Guid LeaseId, Guid ProviderOrgId, string AcceleratorModel, int AcceleratorCount,
        DateTime StartedAt, DateTime EndedAt, long Seconds, long UnitPrice, long Amount, string Currency, long DowntimeSeconds,
        int AvailabilityPpm, string SlaLevel, int SlaCreditBp, long SlaCredit, string? EndStatus);
    private sealed record NoteRow(Guid Id, Guid InvoiceId, long Amount, string Currency, string Reason, DateTime CreatedAt);
    private sealed record StatementRow(Guid Id, Guid ProviderOrgId, string Period, string Currency, long Gross, long PlatformFee,
        long SlaCredits, long Net, DateTime CreatedAt);
    private sealed record PayoutRow(Guid Id, Guid StatementId, string Status, long Amount, string Currency, string? TransferId, string? LastError,
        string? Destination, string? HeldReason);

    /// <summary>Invoices matching the filter (null = any), in id order (ids are sequential), after the cursor.</summary>
    public static async Task<List<Invoice>> InvoicesAsync(NpgsqlConnection c, Guid? id, Guid? renter, string? period,
        Guid? after, int limit, CancellationToken ct)
    {
        var invoices = (await c.QueryAsync<InvoiceRow>(new CommandDefinition("""
            SELECT id, renter_org_id, period, currency, status, subtotal, sla_credits, total, created_at, finalized_at FROM invoices
            WHERE (@id::uuid IS NULL OR id = @id) AND (@renter::uuid IS NULL OR renter_org_id = @renter)
              AND (@period::text IS NULL OR period = @period) AND (@after::uuid IS NULL OR id > @after)
            ORDER BY id LIMIT @limit
            """, new { id, renter, period, after, limit }, cancellationToken: ct))).ToList();
        var lines = (await c.QueryAsync<LineRow>(new CommandDefinition("""
            SELECT id, invoice_id, lease_id, provider_org_id, accelerator_model, accelerator_count, started_at, ended_at,
                   seconds, unit_price, amount, currency, downtime_seconds, availability_ppm, sla_level, sla_credit_bp, sla_credit, end_status
            FROM invoice_lines WHERE invoice_id = ANY(@ids) ORDER BY ended_at, lease_id
            """, new { ids = invoices.Select(i => i.Id).ToArray() }, cancellationToken: ct))).ToLookup(l => l.InvoiceId);
        var notes = (await c.QueryAsync<NoteRow>(new CommandDefinition("""
            SELECT id, invoice_id, amount, currency, reason, created_at FROM credit_notes WHERE invoice_id = ANY(@ids) ORDER BY created_at, id
            """, new { ids = invoices.Select(i => i.Id).ToArray() }, cancellationToken: ct))).ToLookup(n => n.InvoiceId);
        return invoices.Select(i => new Invoice(i.Id, i.RenterOrgId, i.Period, i.Status, new Money(i.Subtotal, i.Currency),
            new Money(i.SlaCredits, i.Currency), new Money(i.Total, i.Currency), i.CreatedAt, i.FinalizedAt,
            lines[i.Id].Select(l => new InvoiceLine(l.Id, l.LeaseId, l.ProviderOrgId, l.AcceleratorModel, l.AcceleratorCount,
                l.StartedAt, l.EndedAt, l.Seconds, new Money(l.UnitPrice, l.Currency), new Money(l.Amount, l.Currency), l.DowntimeSeconds,
                l.AvailabilityPpm / 1_000_000m, l.SlaLevel, new Money(l.SlaCredit, l.Currency), l.EndStatus)).ToList(),
            lines[i.Id].Where(l => l.SlaCredit > 0).Select(l => new CreditLine(l.LeaseId, "sla_credit",
                $"SLA credit ({l.SlaLevel}): availability {l.AvailabilityPpm / 10_000m:0.####}% with {l.DowntimeSeconds} s down → {l.SlaCreditBp / 100m:0.##}% of the line",
                new Money(l.SlaCredit, l.Currency))).ToList(),
            notes[i.Id].Select(n => new CreditNote(n.Id, n.InvoiceId, new Money(n.Amount, n.Currency), n.Reason, n.CreatedAt)).ToList())).ToList();
    }

    public static async Task<List<Statement>> StatementsAsync(NpgsqlConnection c, Guid? provider, string? period,
        Guid? after, int limit, CancellationToken ct)
    {
        var statements = (await c.QueryAsync<StatementRow>(new CommandDefinition("""
            SELECT id, provider_org_id, period, currency, gross, platform_fee, sla_credits, net, created_at FROM statements
            WHERE (@provider::uuid IS NULL OR provider_org_id = @provider) AND (@period::text IS NULL OR period = @period)
              AND (@after::uuid IS NULL OR id > @after)
            ORDER BY id LIMIT @limit
            """, new { provider, period, after, limit }, cancellationToken: ct))).ToList();
        // The latest payout of each statement is the one that matters to the provider.
        var payouts = (await c.QueryAsync<PayoutRow>(new CommandDefinition("""
            SELECT DISTINCT ON (statement_id) id, statement_id, status, amount, currency, transfer_id, last_error, destination, held_reason
            FROM payouts WHERE statement_id = ANY(@ids) ORDER BY statement_id, sequence DESC
            """, new { ids = statements.Select(s => s.Id).ToArray() }, cancellationToken: ct))).ToDictionary(p => p.StatementId);
        return statements.Select(s => new Statement(s.Id, s.ProviderOrgId, s.Period, new Money(s.Gross, s.Currency),
            new Money(s.PlatformFee, s.Currency), new Money(s.SlaCredits, s.Currency), new Money(s.Net, s.Currency), s.CreatedAt,
            payouts.TryGetValue(s.Id, out var p) ? new Payout(p.Id, p.Status, new Money(p.Amount, p.Currency), p.TransferId, p.LastError, p.Destination, p.HeldReason) : null))
            .ToList();
    }

    public static async Task<Results<Ok<Page<Invoice>>, ValidationProblem, ProblemHttpResult>> ListInvoices(
        Caller caller, NpgsqlDataSource db, string? cursor, int? limit, CancellationToken ct)
    {
        if (!caller.IsFinanceOrAdmin && !caller.Has(OrgRoles.Renter)) return Problems.Forbidden("Invoices are for renters and finance.");
        if (ParsePaging(cursor, limit) is not { } paging) return PagingProblem;
        await using var c = await db.OpenConnectionAsync(ct);
        var rows = await InvoicesAsync(c, null, caller.IsFinanceOrAdmin ? null : caller.OrgId, null, paging.After, paging.Limit + 1, ct);
        return TypedResults.Ok(ToPage(rows, paging.Limit, i => i.Id));
    }

    public static async Task<Results<Ok<Invoice>, ProblemHttpResult>> GetInvoice(Caller caller, Guid id, NpgsqlDataSource db, CancellationToken ct)
    {
        await using var c = await db.OpenConnectionAsync(ct);
        var rows = await InvoicesAsync(c, id, caller.IsFinanceOrAdmin ? null : caller.OrgId, null, null, 1, ct);
        return rows.Count == 1 ? TypedResults.Ok(rows[0]) : Problems.NotFound("invoice", id);
    }

    public static async Task<Results<Ok<Page<Statement>>, ValidationProblem, ProblemHttpResult>> ListStatements(
        Caller caller, NpgsqlDataSource db, string? cursor, int? limit, CancellationToken ct)
    {
        if (!caller.IsFinanceOrAdmin && !caller.Has(OrgRoles.Provider)) return Problems.Forbidden("Statements are for providers and finance.");
        if (ParsePaging(cursor, limit) is not { } paging) return PagingProblem;
        await using var c = await db.OpenConnectionAsync(ct);
        var rows = await StatementsAsync(c, caller.IsFinanceOrAdmin ? null : caller.OrgId, null, paging.After, paging.Limit + 1, ct);
        return TypedResults.Ok(ToPage(rows, paging.Limit, s => s.Id));
    }

    private static (Guid? After, int Limit)? ParsePaging(string? cursor, int? limit)
    {
        Guid? after = null;
        if (cursor is not null)
        {
            if (!Guid.TryParse(cursor, out var g)) return null;
            after = g;
        }
        if (limit is < 1 or > 100) return null;
        return (after, limit ?? 50);
    }

    private static ValidationProblem PagingProblem => Problems.Invalid(new Dictionary<string, string[]>
    {
        ["cursor"] = ["Pass back the next_cursor of the previous page unchanged; limit must be between 1 and 100."],
    });

    private static Page<T> ToPage<T>(List<T> rows, int limit, Func<T, Guid> id) =>
        rows.Count > limit ? new Page<T>(rows.Take(limit).ToList(), id(rows[limit - 1]).ToString()) : new Page<T>(rows, null);
}
