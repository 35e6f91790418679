using Dapper;
using Marketplace.Contracts;
using Marketplace.ServiceDefaults.Data;

namespace Marketplace.Bidding.Market;

/// <summary>Best bid and ask of a market in one currency (a null group: every group of the model).</summary>
internal sealed record MarketQuote(Money? BestBid, Money? BestAsk)
{
    /// <remarks>
    /// The best bid is the highest max price of an open on-demand or reserved order; interruptible bids are a separate
    /// price (they buy what nobody else has bought), shown as the interruptible clearing price. The best ask is the lowest
    /// ask of an offer with an accelerator free now.
    /// </remarks>
    public static async Task<MarketQuote> ReadAsync(Tx tx, string model, string? group, string currency, CancellationToken ct,
        Guid[]? exceptOrders = null)
    {
        var (bid, ask) = await tx.Connection.QuerySingleAsync<(long? Bid, long? Ask)>(new CommandDefinition("""
            SELECT (SELECT max(max_price_amount) FROM orders
                    WHERE accelerator_model = @model AND status = 'open' AND type <> 'interruptible' AND max_price_currency = @currency
                      AND (@group::text IS NULL OR region_group = @group OR region_group IS NULL)
                      AND (@exceptOrders::uuid[] IS NULL OR id <> ALL(@exceptOrders))),
                   (SELECT min(ask_amount) FROM offers o
                    WHERE accelerator_model = @model AND status = 'active' AND window_start <= @now AND window_end > @now
                      AND ask_currency = @currency AND (@group::text IS NULL OR region_group = @group)
                      AND accelerator_count > (SELECT coalesce(sum(m.accelerator_count), 0) FROM matches m
                                               WHERE m.offer_id = o.offer_id AND m.state = 'active'
                                                 AND m.start_at <= @now AND m.end_at > @now))
            """, new { model, group, currency, now = tx.Now, exceptOrders }, tx.Transaction, cancellationToken: ct));
        return new MarketQuote(bid is { } b ? new Money(b, currency) : null, ask is { } a ? new Money(a, currency) : null);
    }

    /// <summary>The best bid alone (no offer or match is read): see <see cref="ReadAsync"/>.</summary>
    public static async Task<Money?> ReadBestBidAsync(Tx tx, string model, string? group, string currency, CancellationToken ct,
        Guid[]? exceptOrders = null)
    {
        var bid = await tx.Connection.QuerySingleAsync<long?>(new CommandDefinition("""
            SELECT max(max_price_amount) FROM orders
            WHERE accelerator_model = @model AND status = 'open' AND type <> 'interruptible' AND max_price_currency = @currency
              AND (@group::text IS NULL OR region_group = @group OR region_group IS NULL)
              AND (@exceptOrders::uuid[] IS NULL OR id <> ALL(@exceptOrders))
            """, new { model, group, currency, exceptOrders }, tx.Transaction, cancellationToken: ct));
        return bid is { } b ? new Money(b, currency) : null;
    }
}
