using Dapper;
using Marketplace.Bidding.Domain;
using Marketplace.Contracts;
using Marketplace.ServiceDefaults.Data;
using Marketplace.ServiceDefaults.Web;
using Microsoft.AspNetCore.Http.HttpResults;

namespace Marketplace.Bidding.Market;

public sealed record Trade(Guid Id, string Market, Money PricePerHour, int AcceleratorCount, DateTimeOffset Start, DateTimeOffset End,
    string OrderType, bool Interruptible, DateTimeOffset At);

public sealed record HourlyPrice(DateTimeOffset Hour, Money Vwap, decimal AcceleratorHours, int Trades);

/// <param name="Hourly">The last 24 hours' volume-weighted prices (hours with trades), newest first; in the newest trade's currency.</param>
public sealed record HistoryResponse(IReadOnlyList<Trade> Data, string? NextCursor, IReadOnlyList<HourlyPrice> Hourly);

internal static class GetHistory
{
    /// <summary>The market's trades (every match made, even if later released), newest first; cursor = the last trade's id.</summary>
    public static async Task<Results<Ok<HistoryResponse>, ValidationProblem>> HandleAsync(string model, string? region, string? cursor,
        int? limit, Db db, CancellationToken ct)
    {
        var v = new Validation();
        v.Require(limit is null or (>= 1 and <= 500), "limit", "must be between 1 and 500 (default 50).");
        Guid after = default;
        v.Require(cursor is null || Guid.TryParse(cursor, out after), "cursor", "must be a next_cursor from a previous page.");
        if (v.Failed) return v.Problem;
        var take = limit ?? 50;
        var group = string.IsNullOrWhiteSpace(region) ? null : Markets.RegionGroup(region);
        var market = group is null ? null : Markets.Key(model, group);

        await using var tx = await db.BeginAsync(ct);
        var rows = (await tx.Connection.QueryAsync<TradeRow>(new CommandDefinition("""
            SELECT m.id, m.market, m.price_amount, m.price_currency, m.accelerator_count, m.start_at, m.end_at, m.order_type,
                   m.interruptible, m.created_at
            FROM matches m
            WHERE (m.market = @market OR (@market::text IS NULL AND m.market LIKE @model || '/%'))
              AND (@cursor::uuid IS NULL OR (m.created_at, m.id) < (SELECT created_at, id FROM matches WHERE id = @cursor))
            ORDER BY m.created_at DESC, m.id DESC
            LIMIT @take
            """, new { model, market, cursor = cursor is null ? (Guid?)null : after, take = take + 1 }, tx.Transaction, cancellationToken: ct))).AsList();
        var page = rows.Take(take).Select(r => new Trade(r.Id, r.Market ?? "", new Money(r.PriceAmount, r.PriceCurrency), r.AcceleratorCount,
            r.StartAt, r.EndAt, r.OrderType ?? "on_demand", r.Interruptible, r.CreatedAt)).ToList();

        var currency = page.FirstOrDefault()?.PricePerHour.Currency;
        var hourly = currency is null ? [] : (await tx.Connection.QueryAsync<(DateTime Hour, long Vwap, decimal Hours, int Trades)>(new CommandDefinition("""
            SELECT date_trunc('hour', created_at AT TIME ZONE 'UTC') AS hour,
                   round(sum(price_amount::numeric * accelerator_count * extract(epoch FROM end_at - start_at))
                         / nullif(sum(accelerator_count * extract(epoch FROM end_at - start_at)), 0))::bigint,
                   round(sum(accelerator_count * extract(epoch FROM end_at - start_at)) / 3600, 2),
                   count(*)::int
            FROM matches
            WHERE (market = @market OR (@market::text IS NULL AND market LIKE @model || '/%'))
              AND price_currency = @currency AND created_at > @since
            GROUP BY 1 ORDER BY 1 DESC
            """, new { model, market, currency, since = tx.Now.AddHours(-24) }, tx.Transaction, cancellationToken: ct)))
            .Select(h => new HourlyPrice(new DateTimeOffset(DateTime.SpecifyKind(h.Hour, DateTimeKind.Utc)), new Money(h.Vwap, currency), h.Hours, h.Trades))
            .ToList();
        return TypedResults.Ok(new HistoryResponse(page, rows.Count > take ? page[^1].Id.ToString() : null, hourly));
    }

    private sealed class TradeRow
    {
        public Guid Id { get; init; }
        public string? Market { get; init; }
        public long PriceAmount { get; init; }
        public string PriceCurrency { get; init; } = "";
        public int AcceleratorCount { get; init; }
        public DateTimeOffset StartAt { get; init; }
        public DateTimeOffset EndAt { get; init; }
        public string? OrderType { get; init; }
        public bool Interruptible { get; init; }
        public DateTimeOffset CreatedAt { get; init; }
    }
}
