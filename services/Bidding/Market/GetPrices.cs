using System.Text.Json.Serialization;
using Dapper;
using Marketplace.Bidding.Domain;
using Marketplace.Contracts;
using Marketplace.ServiceDefaults.Data;

namespace Marketplace.Bidding.Market;

public sealed record LastTrade(Money PricePerHour, DateTimeOffset At);

/// <param name="Market">"model/group" when a region group was asked for; null: every group of the model.</param>
/// <param name="Vwap1h">Volume-weighted price of the last hour's trades (weighted by accelerator-hours).</param>
/// <param name="InterruptibleClearingPrice">What an interruptible bid must reach now: the highest bid left in the book, at least the lowest floor.</param>
public sealed record PricesResponse(string Model, LastTrade? LastTrade, Money? BestAsk, string? Market, string? RegionGroup, Money? BestBid,
    [property: JsonPropertyName("vwap_1h")] Money? Vwap1h, Money? InterruptibleClearingPrice);

internal static class GetPrices
{
    /// <param name="region">A region group ("cn") or a region ("cn-east", meaning its group); none: every group.</param>
    /// <param name="currency">
    /// Prices in different currencies do not compare: the figures are in this currency, else in the last trade's, else
    /// in the cheapest ask's.
    /// </param>
    public static async Task<PricesResponse> HandleAsync(string model, string? region, string? currency, Db db, CancellationToken ct)
    {
        var group = string.IsNullOrWhiteSpace(region) ? null : Markets.RegionGroup(region);
        var market = group is null ? null : Markets.Key(model, group);
        await using var tx = await db.BeginAsync(ct);
        var last = await tx.Connection.QuerySingleOrDefaultAsync<TradeRow>(new CommandDefinition("""
            SELECT price_amount, price_currency, created_at FROM matches
            WHERE (market = @market OR (@market::text IS NULL AND market LIKE @model || '/%'))
              AND (@currency::text IS NULL OR price_currency = @currency)
            ORDER BY created_at DESC, id DESC LIMIT 1
            """, new { model, market, currency }, tx.Transaction, cancellationToken: ct));
        currency ??= last?.PriceCurrency ?? await tx.Connection.QuerySingleOrDefaultAsync<string?>(new CommandDefinition("""
            SELECT ask_currency FROM offers WHERE accelerator_model = @model AND status = 'active' AND window_end > @now
              AND (@group::text IS NULL OR region_group = @group)
            ORDER BY ask_amount, published_at LIMIT 1
            """, new { model, group, now = tx.Now }, tx.Transaction, cancellationToken: ct));
        if (currency is null)
            return new PricesResponse(model, null, null, market, group, null, null, null);

        var quote = await MarketQuote.ReadAsync(tx, model, group, currency, ct);
        var (vwap, clearing) = await tx.Connection.QuerySingleAsync<(long? Vwap, long? Clearing)>(new CommandDefinition("""
            SELECT (SELECT round(sum(price_amount::numeric * accelerator_count * extract(epoch FROM end_at - start_at))
                                 / nullif(sum(accelerator_count * extract(epoch FROM end_at - start_at)), 0))::bigint
                    FROM matches
                    WHERE (market = @market OR (@market::text IS NULL AND market LIKE @model || '/%'))
                      AND price_currency = @currency AND created_at > @hourAgo),
                   (SELECT greatest(
                        (SELECT min(coalesce(interruptible_floor_amount, ask_amount)) FROM offers
                         WHERE accelerator_model = @model AND status = 'active' AND interruptible_allowed AND window_end > @now
                           AND ask_currency = @currency AND (@group::text IS NULL OR region_group = @group)),
                        (SELECT max(max_price_amount) FROM orders
                         WHERE accelerator_model = @model AND status = 'open' AND type = 'interruptible' AND max_price_currency = @currency
                           AND (@group::text IS NULL OR region_group = @group OR region_group IS NULL))))
            """, new { model, market, group, currency, now = tx.Now, hourAgo = tx.Now.AddHours(-1) }, tx.Transaction, cancellationToken: ct));
        return new PricesResponse(model,
            last is null ? null : new LastTrade(new Money(last.PriceAmount, last.PriceCurrency), last.CreatedAt),
            quote.BestAsk, market, group, quote.BestBid,
            vwap is { } v ? new Money(v, currency) : null,
            clearing is { } c ? new Money(c, currency) : null);
    }

    private sealed class TradeRow
    {
        public long PriceAmount { get; init; }
        public string PriceCurrency { get; init; } = "";
        public DateTimeOffset CreatedAt { get; init; }
    }
}
