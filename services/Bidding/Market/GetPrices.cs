using Dapper;
using Marketplace.Contracts;
using Marketplace.ServiceDefaults.Data;

namespace Marketplace.Bidding.Market;

public sealed record LastTrade(Money PricePerHour, DateTimeOffset At);

public sealed record PricesResponse(string Model, LastTrade? LastTrade, Money? BestAsk);

internal static class GetPrices
{
    /// <param name="currency">
    /// Asks in different currencies do not compare: best_ask is in this currency, else in the last trade's, else the
    /// lowest ask of any currency.
    /// </param>
    public static async Task<PricesResponse> HandleAsync(string model, string? currency, Db db, CancellationToken ct)
    {
        await using var tx = await db.BeginAsync(ct);
        var last = await tx.Connection.QuerySingleOrDefaultAsync<TradeRow>(new CommandDefinition("""
            SELECT m.price_amount, m.price_currency, m.created_at FROM matches m JOIN offers o USING (offer_id)
            WHERE o.accelerator_model = @model AND m.state = 'active' AND (@currency::text IS NULL OR m.price_currency = @currency)
            ORDER BY m.created_at DESC, m.id DESC LIMIT 1
            """, new { model, currency }, tx.Transaction, cancellationToken: ct));
        var askCurrency = currency ?? last?.PriceCurrency;
        var best = await tx.Connection.QuerySingleOrDefaultAsync<(long Amount, string Currency)?>(new CommandDefinition("""
            SELECT ask_amount, ask_currency FROM offers
            WHERE accelerator_model = @model AND status = 'active' AND window_end > @now
              AND (@askCurrency::text IS NULL OR ask_currency = @askCurrency)
            ORDER BY ask_amount, published_at LIMIT 1
            """, new { model, now = tx.Now, askCurrency }, tx.Transaction, cancellationToken: ct));
        return new PricesResponse(model,
            last is null ? null : new LastTrade(new Money(last.PriceAmount, last.PriceCurrency), last.CreatedAt),
            best is { } b ? new Money(b.Amount, b.Currency) : null);
    }

    private sealed class TradeRow
    {
        public long PriceAmount { get; init; }
        public string PriceCurrency { get; init; } = "";
        public DateTimeOffset CreatedAt { get; init; }
    }
}
