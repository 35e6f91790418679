using Dapper;
using Marketplace.Billing.Domain;
using Marketplace.Billing.Ledger;
using Marketplace.Contracts;
using Marketplace.ServiceDefaults.Data;
using Marketplace.ServiceDefaults.Web;
using MassTransit;
using Microsoft.AspNetCore.Http.HttpResults;
using Microsoft.AspNetCore.Mvc;

namespace Marketplace.Billing.Invoices;

/// <summary>
/// POST /v1/invoices/{id}/credit-notes (finance): a finalized invoice is never changed; a correction is a credit note
/// that gives the renter money back (platform:credit_notes → renter available), at most what the invoice still stands at.
/// </summary>
internal static class CreateCreditNote
{
    public sealed record Request(Money? Amount, string? Reason);

    private sealed record Target(Guid Id, Guid RenterOrgId, string Status, string Currency, long Total, long Credited);

    public static async Task<Results<Created<CreditNote>, Ok<CreditNote>, ValidationProblem, ProblemHttpResult>> Handle(
        Caller caller, Guid id, Request request, [FromHeader(Name = "Idempotency-Key")] string? idempotencyKey, Db db, CancellationToken ct)
    {
        if (!caller.IsFinanceOrAdmin) return Problems.Forbidden("Only finance issues credit notes.");
        var v = new Validation()
            .Require(!string.IsNullOrWhiteSpace(idempotencyKey), "Idempotency-Key",
                "Send an Idempotency-Key header (e.g. a UUID) so a retried request never credits twice.")
            .Require(idempotencyKey is null || idempotencyKey.Length <= 255, "Idempotency-Key", "Use at most 255 characters.")
            .Require(!string.IsNullOrWhiteSpace(request.Reason), "reason", "Say why the invoice is corrected; the renter reads it.")
            .Require(request.Reason is null || request.Reason.Length <= 500, "reason", "Use at most 500 characters.");
        if (request.Amount is null) v.Add("amount", "Give the amount as {\"amount\": 100, \"currency\": \"CNY\"} in minor units.");
        else v.Require(request.Amount.Amount > 0, "amount.amount", "The amount must be more than zero (minor units).");
        if (v.Failed) return v.Problem;
        var amount = request.Amount!;

        await using var tx = await db.BeginAsync(ct);
        var invoice = await tx.Connection.QuerySingleOrDefaultAsync<Target>(new CommandDefinition("""
            SELECT i.id, i.renter_org_id, i.status, i.currency, i.total,
                   COALESCE((SELECT SUM(amount) FROM credit_notes WHERE invoice_id = i.id), 0)::bigint AS credited
            FROM invoices i WHERE i.id = @id FOR UPDATE
            """, new { id }, tx.Transaction, cancellationToken: ct));
        if (invoice is null) return Problems.NotFound("invoice", id);

        var existing = await tx.Connection.QuerySingleOrDefaultAsync<NoteRow>(new CommandDefinition("""
            SELECT id, invoice_id, amount, currency, reason, created_at FROM credit_notes WHERE invoice_id = @id AND idempotency_key = @idempotencyKey
            """, new { id, idempotencyKey }, tx.Transaction, cancellationToken: ct));
        if (existing is not null)
            return existing.Amount == amount.Amount && existing.Currency == amount.Currency && existing.Reason == request.Reason!.Trim() // stored trimmed
                ? TypedResults.Ok(existing.ToNote())
                : Problems.Unprocessable("idempotency-key-reused", $"Idempotency-Key {idempotencyKey} was already used for another credit note on this invoice.");

        if (invoice.Status != "finalized")
            return Problems.Conflict("invoice-not-finalized", "The invoice is still a draft of a running billing run; credit it once the run finalized it.");
        if (amount.Currency != invoice.Currency)
            return Problems.Unprocessable("currency-mismatch", $"The invoice is in {invoice.Currency}; a credit note on it must be too.");
        var open = invoice.Total - invoice.Credited;
        if (amount.Amount > open)
            return Problems.Unprocessable("credit-exceeds-invoice",
                $"The invoice stands at {Currencies.Format(open, invoice.Currency)} after earlier credit notes; a credit note cannot exceed that.");

        var note = new NoteRow(NewId.NextSequentialGuid(), id, amount.Amount, amount.Currency, request.Reason!.Trim(), tx.Now.UtcDateTime);
        await tx.Connection.ExecuteAsync(new CommandDefinition("""
            INSERT INTO credit_notes (id, invoice_id, idempotency_key, amount, currency, reason, created_by, created_at)
            VALUES (@Id, @InvoiceId, @idempotencyKey, @Amount, @Currency, @Reason, @by, @CreatedAt)
            """, new { note.Id, note.InvoiceId, idempotencyKey, note.Amount, note.Currency, note.Reason, by = caller.OrgId, note.CreatedAt },
            tx.Transaction, cancellationToken: ct));
        await LedgerStore.PostAsync(tx, LedgerTransaction.Transfer($"credit_note:{note.Id}", "credit_note",
            Accounts.PlatformCreditNotes, Accounts.RenterAvailable(invoice.RenterOrgId), note.Currency, note.Amount), ct);
        await tx.CommitAsync(ct);
        return TypedResults.Created($"/v1/invoices/{id}/credit-notes/{note.Id}", note.ToNote());
    }

    private sealed record NoteRow(Guid Id, Guid InvoiceId, long Amount, string Currency, string Reason, DateTime CreatedAt)
    {
        public CreditNote ToNote() => new(Id, InvoiceId, new Money(Amount, Currency), Reason, CreatedAt);
    }
}
