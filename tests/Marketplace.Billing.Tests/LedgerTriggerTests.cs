using Dapper;
using Xunit;

namespace Marketplace.Billing.Tests;

/// <summary>
/// The database's own checks on the journal and on invoice lines hold for any session, also one that names the tables
/// with their schema and keeps PostgreSQL's default search_path (finance correcting something from psql).
/// </summary>
public sealed class LedgerTriggerTests(AutoConfirmingStripe fx) : IClassFixture<AutoConfirmingStripe>
{
    private async Task<Npgsql.NpgsqlConnection> DefaultSearchPathAsync()
    {
        var c = fx.Database.OpenAdmin();
        await c.ExecuteAsync("SET search_path = \"$user\", public");
        return c;
    }

    [Fact]
    public async Task A_balanced_journal_posted_by_schema_qualified_names_is_kept_and_moves_the_wallet_balance()
    {
        var (id, account) = (Guid.NewGuid(), $"renter:{Guid.NewGuid()}:available");
        await using var c = await DefaultSearchPathAsync();
        await c.ExecuteAsync("""
            INSERT INTO billing.ledger_transactions (id, idempotency_key, kind, created_at) VALUES (@id, @key, 'adjustment', now());
            INSERT INTO billing.ledger_entries (transaction_id, account, currency, amount) VALUES (@id, @account, 'CNY', 500), (@id, @revenue, 'CNY', -500);
            """, new { id, key = $"test:{id}", account, revenue = Marketplace.Billing.Domain.Accounts.PlatformRevenue });

        Assert.Equal(500, await c.ExecuteScalarAsync<long>(
            "SELECT balance FROM billing.wallet_balances WHERE account = @account AND currency = 'CNY'", new { account }));
    }

    [Fact]
    public async Task An_unbalanced_journal_posted_by_schema_qualified_names_is_refused_by_the_balance_check_and_writes_nothing()
    {
        var (id, account) = (Guid.NewGuid(), $"renter:{Guid.NewGuid()}:available");
        await using var c = await DefaultSearchPathAsync();
        var e = await Assert.ThrowsAsync<Npgsql.PostgresException>(() => c.ExecuteAsync("""
            INSERT INTO billing.ledger_transactions (id, idempotency_key, kind, created_at) VALUES (@id, @key, 'adjustment', now());
            INSERT INTO billing.ledger_entries (transaction_id, account, currency, amount) VALUES (@id, @account, 'CNY', 500), (@id, @revenue, 'CNY', -400);
            """, new { id, key = $"test:{id}", account, revenue = Marketplace.Billing.Domain.Accounts.PlatformRevenue }));

        Assert.Contains($"ledger transaction {id} does not sum to zero", e.MessageText);
        Assert.Equal(0, await c.ExecuteScalarAsync<long>("SELECT count(*) FROM billing.ledger_transactions WHERE id = @id", new { id }));
        Assert.Equal(0, await c.ExecuteScalarAsync<long>("SELECT count(*) FROM billing.wallet_balances WHERE account = @account", new { account }));
    }

    [Fact]
    public async Task An_invoice_line_for_an_invoice_that_does_not_exist_is_refused_by_the_line_check_whatever_the_search_path()
    {
        var invoice = Guid.NewGuid();
        await using var c = await DefaultSearchPathAsync();
        var e = await Assert.ThrowsAsync<Npgsql.PostgresException>(() => c.ExecuteAsync("""
            INSERT INTO billing.invoice_lines (id, invoice_id, statement_id, lease_id, provider_org_id, accelerator_model, accelerator_count,
                                               started_at, ended_at, seconds, unit_price, amount, platform_fee, currency)
            VALUES (@id, @invoice, @id, @id, @id, 'h100-sxm', 1, now() - interval '1 hour', now(), 3600, 100, 100, 10, 'CNY')
            """, new { id = Guid.NewGuid(), invoice }));

        Assert.Contains($"invoice {invoice} is finalized or does not exist", e.MessageText);
    }
}
