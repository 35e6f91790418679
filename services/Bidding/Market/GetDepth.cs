using Dapper;
using Marketplace.Bidding.Domain;
using Marketplace.Bidding.Orders;
using Marketplace.Contracts;
using Marketplace.ServiceDefaults.Data;
using Marketplace.ServiceDefaults.Web;
using Microsoft.AspNetCore.Http.HttpResults;
using Microsoft.AspNetCore.Mvc;

namespace Marketplace.Bidding.Market;

/// <param name="Accelerators">Asks: accelerators free for the whole window at this price; bids: accelerators wanted.</param>
public sealed record DepthLevel(Money PricePerHour, int Accelerators, int Count);

public sealed record DepthWindow(DateTimeOffset Start, DateTimeOffset End);

public sealed record DepthResponse(string Model, string? Market, string? RegionGroup, string? Currency, DepthWindow Window,
    IReadOnlyList<DepthLevel> Bids, IReadOnlyList<DepthLevel> Asks, IReadOnlyList<DepthLevel> InterruptibleBids);

internal static class GetDepth
{
    /// <summary>
    /// Depth for one window: asks are offers that can hold a lease over the whole window (their free capacity, by ask);
    /// bids are open orders that would run in it (on-demand: from now; reserved: their window overlaps), by max price.
    /// </summary>
    public static async Task<Results<Ok<DepthResponse>, ValidationProblem>> HandleAsync(string model, string? region, string? currency,
        [FromQuery(Name = "window_start")] DateTimeOffset? windowStart, [FromQuery(Name = "window_end")] DateTimeOffset? windowEnd,
        Db db, CancellationToken ct)
    {
        await using var tx = await db.BeginAsync(ct);
        var start = windowStart ?? tx.Now;
        var v = new Validation();
        // Nothing is sold that far ahead (orders start within 90 days), and the default end must not overflow the calendar.
        v.Require(start <= tx.Now.AddDays(366), "window_start", "must be within 366 days from now.");
        if (v.Failed) return v.Problem;
        var end = windowEnd ?? start.AddHours(1);
        v.Require(end > start, "window_end", "must be after window_start (default: one hour after it).");
        v.Require(end - start <= TimeSpan.FromDays(31), "window_end", "the window may span at most 31 days.");
        if (v.Failed) return v.Problem;

        var group = string.IsNullOrWhiteSpace(region) ? null : Markets.RegionGroup(region);
        var supply = await OrderBook.LoadSupplyAsync(tx, model, group, ct);
        currency ??= supply.Candidates.OrderBy(o => o.AskAmount).Select(o => o.Currency).FirstOrDefault();
        var asks = supply.Candidates
            .Where(o => o.Currency == currency && o.Covers(start, end))
            .Select(o => (o.AskAmount, Free: Clearing.Free(o.Capacity, o.Bookings, start, end)))
            .Where(x => x.Free > 0)
            .GroupBy(x => x.AskAmount).OrderBy(g => g.Key)
            .Select(g => new DepthLevel(new Money(g.Key, currency!), g.Sum(x => x.Free), g.Count())).ToList();

        var bids = (await tx.Connection.QueryAsync<(string Type, long Price, int Accelerators, int Orders)>(new CommandDefinition("""
            SELECT type, max_price_amount, sum(accelerator_count)::int, count(*)::int FROM orders
            WHERE accelerator_model = @model AND status = 'open' AND max_price_currency = @currency
              AND (@group::text IS NULL OR region_group = @group OR region_group IS NULL)
              AND CASE WHEN type = 'reserved' THEN earliest_start < @end AND latest_end > @start
                       ELSE @start < @now + make_interval(secs => duration_seconds) AND @end > @now END
            GROUP BY type, max_price_amount
            ORDER BY max_price_amount DESC
            """, new { model, group, currency, start, end, now = tx.Now }, tx.Transaction, cancellationToken: ct))).AsList();
        DepthLevel Level((string Type, long Price, int Accelerators, int Orders) b) => new(new Money(b.Price, currency!), b.Accelerators, b.Orders);
        return TypedResults.Ok(new DepthResponse(model, group is null ? null : Markets.Key(model, group), group, currency,
            new DepthWindow(start, end),
            bids.Where(b => b.Type != "interruptible").GroupBy(b => b.Price)
                .Select(g => new DepthLevel(new Money(g.Key, currency!), g.Sum(b => b.Accelerators), g.Sum(b => b.Orders))).ToList(),
            asks,
            bids.Where(b => b.Type == "interruptible").Select(Level).ToList()));
    }
}
