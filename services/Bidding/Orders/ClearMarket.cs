using System.Text.Json;
using Dapper;
using Marketplace.Bidding.Domain;
using Marketplace.ServiceDefaults.Data;
using Marketplace.ServiceDefaults.Messaging;

namespace Marketplace.Bidding.Orders;

/// <summary>
/// Due work "market.clear" (one item per market, keyed "model/group"): clears the market's standing book again when the
/// capacity its open orders wait for comes back. A lease that runs to its end sends no event Bidding acts on, so without
/// this a good-till-cancelled order that found every accelerator booked would wait for the market's next order or offer
/// while the accelerators it wants stand idle. Scheduled by every clearing that leaves an order waiting for capacity
/// (<see cref="Clearing.CapacityReturnsAt"/>), and after Scheduling could not place a match (<see cref="AfterPlacementFailedAsync"/>).
/// </summary>
internal sealed class ClearMarket(ILogger<ClearMarket> logger) : IDueWorkHandler
{
    public const string Kind = "market.clear";

    /// <summary>The soonest a market's book is cleared again for its waiting orders: at most once a second per market.</summary>
    public static readonly TimeSpan MinInterval = TimeSpan.FromSeconds(1);

    /// <summary>
    /// How long the item waits for its market's lock. A clearing that holds the lock may be about to schedule this very
    /// item and wait for its row, which this transaction holds: that wait ends with this one, and the item runs again
    /// after the runner's poll interval. Under load the market's order batches hold the lock most of the time, so not
    /// waiting at all would rarely get it.
    /// </summary>
    public static readonly TimeSpan LockWait = TimeSpan.FromMilliseconds(100);

    string IDueWorkHandler.Kind => Kind;

    public async Task HandleAsync(DueItem item, Tx tx, CancellationToken ct)
    {
        var market = JsonSerializer.Deserialize<Market>(item.Payload, JsonSerializerOptions.Web)
                     ?? throw new InvalidOperationException($"due work {Kind}/{item.Key} has no market");
        await OrderBook.LockWithinAsync(tx, market.Model, market.Group, LockWait, ct);
        // Schedules this item again if orders still wait for capacity.
        var filled = await OrderBook.ClearStandingAsync(tx, market.Model, market.Group, ct);
        logger.LogDebug("Market {Market} cleared again for its waiting orders ({Late:0} ms after due): {Filled} filled",
            item.Key, (tx.Now - item.DueAt).TotalMilliseconds, filled);
    }

    /// <summary>
    /// Schedules the market's clearing at <paramref name="at"/> (no sooner than <see cref="MinInterval"/> from now), or
    /// keeps the earlier time if one is already pending. Call holding the market's lock (<see cref="OrderBook.LockAsync"/>),
    /// as every clearing does: a running item holds its row while it takes that lock, waiting at most <see cref="LockWait"/>,
    /// so a clearing waiting here for the row is never kept longer than that.
    /// </summary>
    public static Task ScheduleAsync(Tx tx, string model, string group, DateTimeOffset at, CancellationToken ct, TimeSpan? minInterval = null) =>
        tx.Connection.ExecuteAsync(new CommandDefinition("""
            INSERT INTO due_work (kind, key, due_at, payload) VALUES (@kind, @key, @at, @payload::jsonb)
            ON CONFLICT (kind, key) DO UPDATE
              SET due_at = CASE WHEN due_work.done_at IS NULL THEN least(due_work.due_at, excluded.due_at) ELSE excluded.due_at END,
                  payload = excluded.payload, done_at = NULL, attempts = 0, last_error = NULL
            """, new
            {
                kind = Kind, key = Markets.Key(model, group),
                at = Max(at, tx.Now + (minInterval ?? MinInterval)),
                payload = JsonSerializer.Serialize(new Market(model, group), JsonSerializerOptions.Web),
            }, tx.Transaction, cancellationToken: ct));

    /// <summary>
    /// Scheduling refused a match and its order went back to the book: Bidding's view of the offer was off (matches still
    /// in flight counted by their peak, docs/market.md "Capacity over a whole window"). The market is cleared again after
    /// 1, 2, 4 … 60 s (by how many of the order's matches were released before), by which time the matches in flight have
    /// been placed and the view is exact, rather than at once, which would likely pick the same accelerators again.
    /// </summary>
    public static Task AfterPlacementFailedAsync(Tx tx, string model, string group, int releasedBefore, CancellationToken ct)
    {
        var delay = TimeSpan.FromSeconds(Math.Min(60, Math.Pow(2, Math.Min(releasedBefore, 6))));
        return ScheduleAsync(tx, model, group, tx.Now + delay, ct, minInterval: delay);
    }

    private static DateTimeOffset Max(DateTimeOffset a, DateTimeOffset b) => a > b ? a : b;

    private sealed record Market(string Model, string Group);
}
