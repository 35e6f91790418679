using System.Globalization;
using System.Text.Json;
using CsvHelper;
using Dapper;
using Marketplace.ServiceDefaults.Web;
using Microsoft.AspNetCore.Http.HttpResults;
using Npgsql;

namespace Marketplace.Billing.Invoices;

/// <summary>
/// CSV exports (CsvHelper, RFC 4180, invariant culture, amounts in minor units with their currency). Scoped like the
/// reads: a renter gets its own invoice lines, a provider its own statements, finance everything. Rows are streamed
/// from the database (unbuffered), so a large ledger is never held in memory.
/// Paths sit under the gateway's /v1/invoices/**, /v1/statements/** and /v1/ledger/** routes.
/// </summary>
internal static class Exports
{
    public sealed record InvoiceLineCsv(Guid InvoiceId, Guid RenterOrgId, string Period, string Status, Guid LeaseId, Guid ProviderOrgId,
        string AcceleratorModel, int AcceleratorCount, DateTime StartedAt, DateTime EndedAt, long Seconds, long DowntimeSeconds,
        long UnitPrice, long Amount, long SlaCredit, string Currency, DateTime? FinalizedAt);

    public sealed record StatementCsv(Guid StatementId, Guid ProviderOrgId, string Period, string Currency, long Gross, long PlatformFee,
        long SlaCredits, long Net, string? PayoutStatus, string? TransferId);

    public sealed record LedgerEntry(long Id, Guid TransactionId, string IdempotencyKey, string Kind, DateTime CreatedAt, string Account,
        string Currency, long Amount);

    public sealed record LedgerPage(IReadOnlyList<LedgerEntry> Data, string? NextCursor);

    public static Results<PushStreamHttpResult, ProblemHttpResult> InvoicesCsv(Caller caller, NpgsqlDataSource db, string? period)
    {
        if (!caller.IsFinanceOrAdmin && !caller.Has(OrgRoles.Renter)) return Problems.Forbidden("Invoices are for renters and finance.");
        return Csv<InvoiceLineCsv>(db, "invoices.csv", """
            SELECT i.id AS invoice_id, i.renter_org_id, i.period, i.status, l.lease_id, l.provider_org_id, l.accelerator_model,
                   l.accelerator_count, l.started_at, l.ended_at, l.seconds, l.downtime_seconds, l.unit_price, l.amount, l.sla_credit,
                   l.currency, i.finalized_at
            FROM invoices i JOIN invoice_lines l ON l.invoice_id = i.id
            WHERE (@org::uuid IS NULL OR i.renter_org_id = @org) AND (@period::text IS NULL OR i.period = @period)
            ORDER BY i.id, l.ended_at, l.lease_id
            """, new { org = caller.IsFinanceOrAdmin ? (Guid?)null : caller.OrgId, period });
    }

    public static Results<PushStreamHttpResult, ProblemHttpResult> StatementsCsv(Caller caller, NpgsqlDataSource db, string? period)
    {
        if (!caller.IsFinanceOrAdmin && !caller.Has(OrgRoles.Provider)) return Problems.Forbidden("Statements are for providers and finance.");
        return Csv<StatementCsv>(db, "statements.csv", """
            SELECT s.id AS statement_id, s.provider_org_id, s.period, s.currency, s.gross, s.platform_fee, s.sla_credits, s.net,
                   po.status AS payout_status, po.transfer_id
            FROM statements s
            LEFT JOIN LATERAL (SELECT status, transfer_id FROM payouts WHERE statement_id = s.id ORDER BY sequence DESC LIMIT 1) po ON true
            WHERE (@org::uuid IS NULL OR s.provider_org_id = @org) AND (@period::text IS NULL OR s.period = @period)
            ORDER BY s.id
            """, new { org = caller.IsFinanceOrAdmin ? (Guid?)null : caller.OrgId, period });
    }

    private const string LedgerSql = """
        SELECT e.id, e.transaction_id, t.idempotency_key, t.kind, t.created_at, e.account, e.currency, e.amount
        FROM ledger_entries e JOIN ledger_transactions t ON t.id = e.transaction_id
        WHERE e.id > @after ORDER BY e.id LIMIT @limit
        """;

    public static Results<PushStreamHttpResult, ProblemHttpResult> LedgerCsv(Caller caller, NpgsqlDataSource db)
    {
        if (!caller.IsFinanceOrAdmin) return Problems.Forbidden("Only finance reads the ledger.");
        return Csv<LedgerEntry>(db, "ledger-entries.csv", LedgerSql, new { after = 0L, limit = long.MaxValue });
    }

    public static async Task<Results<Ok<LedgerPage>, ValidationProblem, ProblemHttpResult>> LedgerJson(
        Caller caller, NpgsqlDataSource db, string? cursor, int? limit, CancellationToken ct)
    {
        if (!caller.IsFinanceOrAdmin) return Problems.Forbidden("Only finance reads the ledger.");
        long after = 0;
        if ((cursor is not null && !long.TryParse(cursor, NumberStyles.None, CultureInfo.InvariantCulture, out after)) || limit is < 1 or > 1000)
            return Problems.Invalid(new Dictionary<string, string[]>
            {
                ["cursor"] = ["Pass back the next_cursor of the previous page unchanged; limit must be between 1 and 1000."],
            });
        var take = limit ?? 100;
        await using var c = await db.OpenConnectionAsync(ct);
        var rows = (await c.QueryAsync<LedgerEntry>(new CommandDefinition(LedgerSql, new { after, limit = take + 1 }, cancellationToken: ct))).ToList();
        return TypedResults.Ok(rows.Count > take
            ? new LedgerPage(rows.Take(take).ToList(), rows[take - 1].Id.ToString(CultureInfo.InvariantCulture))
            : new LedgerPage(rows, null));
    }

    private static PushStreamHttpResult Csv<T>(NpgsqlDataSource db, string fileName, string sql, object args)
    {
        // Columns in declaration order, headers in snake_case like the JSON API.
        var properties = typeof(T).GetProperties();
        var header = properties.Select(p => JsonNamingPolicy.SnakeCaseLower.ConvertName(p.Name)).ToArray();
        return TypedResults.Stream(async stream =>
        {
            // Escape text that a spreadsheet would run as a formula (account names and reasons are ours, but still).
            await using var csv = CsvWriter.Create(stream, new CsvWriterOptions { Injection = CsvInjection.Escape }, leaveOpen: true);
            csv.WriteHeader(header);
            await using var c = await db.OpenConnectionAsync();
            foreach (var row in await c.QueryAsync<T>(new CommandDefinition(sql, args, flags: CommandFlags.None)))
            {
                foreach (var p in properties) WriteField(csv, p.GetValue(row));
                await csv.EndRecordAsync();
            }
            await csv.FlushAsync();
        }, "text/csv; charset=utf-8", fileName);
    }

    /// <summary>
    /// Amounts and counts as numbers, everything else as text: the injection escape applies to text only, and a debit
    /// written as the text "-1000" would come out as '-1000, which no spreadsheet sums.
    /// </summary>
    private static void WriteField(CsvWriter csv, object? value)
    {
        switch (value)
        {
            case long n: csv.WriteField(n, ""); break;
            case int n: csv.WriteField(n, ""); break;
            case null: csv.WriteField((string?)null); break;
            case DateTime t: csv.WriteField(t.ToUniversalTime().ToString("yyyy-MM-ddTHH:mm:ss.ffffff'Z'", CultureInfo.InvariantCulture)); break;
            case IFormattable f: csv.WriteField(f.ToString(null, CultureInfo.InvariantCulture)); break;
            default: csv.WriteField(value.ToString()); break;
        }
    }
}
