using Dapper;
using Marketplace.Billing.Domain;
using Marketplace.Contracts;
using Marketplace.ServiceDefaults.Web;
using Microsoft.AspNetCore.Http.HttpResults;
using Npgsql;

namespace Marketplace.Billing.Wallet;

/// <summary>
/// A renter's own limits, per currency: PUT /v1/wallet/spend-cap {amount?, per_order?} (hard caps: what leases booked in one
/// UTC month may cost at most, and what one order's lease may cost at most; a PUT sets both, so a cap left out or null is
/// removed: otherwise a per-order cap, once set, could never be taken away) and
/// PUT /v1/wallet/low-balance-threshold {amount} (LowBalance is published when available drops below it).
/// </summary>
internal static class WalletSettings
{
    public sealed record SpendCapRequest(Money? Amount, Money? PerOrder, string? Currency);
    public sealed record ThresholdRequest(Money? Amount);
    public sealed record Response(string Currency, Money? SpendCap, Money? PerOrderCap, Money? LowBalanceThreshold);

    private sealed record Row(string Currency, long? SpendCap, long? PerOrderCap, long? LowBalanceThreshold)
    {
        public Response ToResponse() => new(Currency, M(SpendCap), M(PerOrderCap), M(LowBalanceThreshold));
        private Money? M(long? v) => v is { } x ? new Money(x, Currency) : null;
    }

    public static async Task<Results<Ok<Response>, ValidationProblem, ProblemHttpResult>> PutSpendCap(
        Caller caller, SpendCapRequest request, NpgsqlDataSource db, TimeProvider time, CancellationToken ct)
    {
        if (!caller.Has(OrgRoles.Renter)) return Problems.Forbidden("Only renters have a wallet.");
        var v = new Validation();
        var currency = request.Amount?.Currency ?? request.PerOrder?.Currency ?? request.Currency;
        if (request.Amount is null && request.PerOrder is null && request.Currency is null)
            v.Add("amount", "Give the monthly cap as {\"amount\": 100000, \"currency\": \"CNY\"} and/or per_order the same way.");
        if (!Currencies.IsCode(currency)) v.Add("amount.currency", "Use a 3-letter upper-case ISO 4217 code such as CNY.");
        if (request.Amount is { Amount: < 0 }) v.Add("amount.amount", "A cap cannot be negative (0 blocks all new leases).");
        if (request.PerOrder is { Amount: < 0 }) v.Add("per_order.amount", "A cap cannot be negative.");
        if (request.Amount is not null && request.PerOrder is not null && request.Amount.Currency != request.PerOrder.Currency)
            v.Add("per_order.currency", "Both caps must be in the same currency; set each currency with its own request.");
        if (v.Failed) return v.Problem;

        await using var c = await db.OpenConnectionAsync(ct);
        var row = await c.QuerySingleAsync<Row>(new CommandDefinition("""
            INSERT INTO wallet_settings (renter_org_id, currency, spend_cap, per_order_cap, updated_at)
            VALUES (@org, @currency, @cap, @perOrder, @now)
            ON CONFLICT (renter_org_id, currency) DO UPDATE SET spend_cap = excluded.spend_cap,
                per_order_cap = excluded.per_order_cap, updated_at = excluded.updated_at
            RETURNING currency, spend_cap, per_order_cap, low_balance_threshold
            """, new { org = caller.OrgId, currency, cap = request.Amount?.Amount, perOrder = request.PerOrder?.Amount, now = time.GetUtcNow() },
            cancellationToken: ct));
        return TypedResults.Ok(row.ToResponse());
    }

    public static async Task<Results<Ok<Response>, ValidationProblem, ProblemHttpResult>> PutLowBalanceThreshold(
        Caller caller, ThresholdRequest request, NpgsqlDataSource db, TimeProvider time, CancellationToken ct)
    {
        if (!caller.Has(OrgRoles.Renter)) return Problems.Forbidden("Only renters have a wallet.");
        var v = new Validation();
        if (request.Amount is null) v.Add("amount", "Give the threshold as {\"amount\": 10000, \"currency\": \"CNY\"} in minor units (0 = no alert).");
        else
        {
            v.Require(request.Amount.Amount >= 0, "amount.amount", "The threshold cannot be negative (0 = no alert).");
            v.Require(Currencies.IsCode(request.Amount.Currency), "amount.currency", "Use a 3-letter upper-case ISO 4217 code such as CNY.");
        }
        if (v.Failed) return v.Problem;
        await using var c = await db.OpenConnectionAsync(ct);
        var row = await c.QuerySingleAsync<Row>(new CommandDefinition("""
            INSERT INTO wallet_settings (renter_org_id, currency, low_balance_threshold, updated_at) VALUES (@org, @Currency, @Amount, @now)
            ON CONFLICT (renter_org_id, currency) DO UPDATE SET low_balance_threshold = excluded.low_balance_threshold, updated_at = excluded.updated_at
            RETURNING currency, spend_cap, per_order_cap, low_balance_threshold
            """, new { org = caller.OrgId, request.Amount!.Currency, request.Amount.Amount, now = time.GetUtcNow() }, cancellationToken: ct));
        return TypedResults.Ok(row.ToResponse());
    }
}
