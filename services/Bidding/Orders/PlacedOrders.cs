using Dapper;
using Marketplace.ServiceDefaults.Data;
using Marketplace.ServiceDefaults.Messaging;

namespace Marketplace.Bidding.Orders;

/// <summary>
/// Clears newly placed orders in batches, one batch per market at a time in this instance (docs/market.md, "Placing an
/// order"). POST /v1/orders commits the order in a short transaction of its own and waits here; orders of the same market
/// that arrive while its batch clears join the next batch. One market lock, one load of the supply and one transaction
/// then serve every order of the batch, instead of each order holding the market lock for all of that in turn.
/// </summary>
internal sealed class PlacedOrders(Db db, ILogger<PlacedOrders> logger)
{
    /// <summary>The most orders one clearing takes; the rest wait for the next.</summary>
    public const int MaxBatch = 256;

    private readonly Lock _gate = new();
    private readonly Dictionary<(string Model, string? Group), Queue> _markets = [];

    private sealed class Queue
    {
        public readonly List<(Guid Id, TaskCompletionSource Done)> Pending = [];
        public bool Running;
    }

    /// <summary>Completes once a clearing has seen the order (matched, resting with its reason, or cancelled); throws if it failed.</summary>
    public Task ClearAsync(OrderRow order)
    {
        var key = (order.AcceleratorModel, order.RegionGroup);
        var done = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        Queue queue;
        bool start;
        lock (_gate)
        {
            if (!_markets.TryGetValue(key, out queue!)) _markets[key] = queue = new Queue();
            queue.Pending.Add((order.Id, done));
            start = !queue.Running;
            queue.Running = true;
        }
        if (start) _ = Task.Run(() => RunAsync(key, queue));
        return done.Task;
    }

    private async Task RunAsync((string Model, string? Group) market, Queue queue)
    {
        while (true)
        {
            List<(Guid Id, TaskCompletionSource Done)> batch;
            lock (_gate)
            {
                if (queue.Pending.Count == 0)
                {
                    queue.Running = false;
                    return;
                }
                batch = queue.Pending.Take(MaxBatch).ToList();
                queue.Pending.RemoveRange(0, batch.Count);
            }
            try
            {
                // Not the request's token: the batch serves other requests too, and a committed order must be cleared.
                await using (var tx = await db.BeginAsync(CancellationToken.None))
                {
                    await OrderBook.ClearPlacedAsync(tx, market.Model, market.Group, [.. batch.Select(b => b.Id)], CancellationToken.None);
                    await tx.CommitAsync(CancellationToken.None);
                }
                foreach (var (_, done) in batch) done.TrySetResult();
            }
            catch (Exception e)
            {
                // The orders stay accepted; due work "order.place" clears them a little later.
                logger.LogWarning(e, "Clearing {Count} new {Model} order(s) failed; due work retries them", batch.Count, market.Model);
                foreach (var (_, done) in batch) done.TrySetException(e);
            }
        }
    }
}

/// <summary>
/// Due work "order.place", scheduled with every new order: clears it if no clearing has seen it yet (the instance that
/// accepted it stopped before its batch ran, or the batch failed). Usually a no-op.
/// </summary>
internal sealed class ClearPlacedOrder : IDueWorkHandler
{
    public const string Kind = "order.place";

    /// <summary>How long after acceptance the safety net looks at an order.</summary>
    public static readonly TimeSpan Delay = TimeSpan.FromSeconds(15);

    string IDueWorkHandler.Kind => Kind;

    public async Task HandleAsync(DueItem item, Tx tx, CancellationToken ct)
    {
        var id = Guid.Parse(item.Key);
        var market = await tx.Connection.QuerySingleOrDefaultAsync<(string Model, string? Group)?>(new CommandDefinition(
            "SELECT accelerator_model, region_group FROM orders WHERE id = @id AND status = 'open' AND status_reason IS NULL",
            new { id }, tx.Transaction, cancellationToken: ct));
        if (market is { } m) await OrderBook.ClearPlacedAsync(tx, m.Model, m.Group, [id], ct);
    }
}
