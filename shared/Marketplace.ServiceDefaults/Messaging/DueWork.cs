using System.Collections.Concurrent;
using System.ComponentModel.DataAnnotations;
using Dapper;
using Marketplace.ServiceDefaults.Data;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;
using Npgsql;

namespace Marketplace.ServiceDefaults.Messaging;

/// <summary>A row of due_work whose time has come.</summary>
public sealed record DueItem(long Id, string Kind, string Key, DateTimeOffset DueAt, string Payload, int Attempts);

/// <summary>
/// Handles due work of one kind inside the transaction that claimed it (outbox writes commit with it). That transaction
/// holds the item's due_work row, so a handler must not wait for a lock that a holder may keep while it changes this
/// item's row (a lease that its cancel, extension or end reschedules): it locks such an object with <c>FOR UPDATE NOWAIT</c>,
/// and the runner leaves the item for a moment when the object is taken (SQLSTATE 55P03).
/// </summary>
public interface IDueWorkHandler
{
    string Kind { get; }
    Task HandleAsync(DueItem item, Tx tx, CancellationToken ct);
}

public sealed class DueWorkOptions
{
    /// <summary>
    /// Items run at once by one instance (each in its own transaction, claimed with SKIP LOCKED like another instance's).
    /// One at a time fell behind under load: the long fault runs needed 40 lease starts and ends a second, one loop did
    /// about 9 on the busy machine, and leases then started only after their end ("it never ran").
    /// 0: this instance runs due work only when <see cref="DueWorkRunner.RunOneAsync"/> is called (tests that pick the moment).
    /// </summary>
    [Range(0, 64)] public int Workers { get; set; } = 4;

    /// <summary>The longest the watching worker waits between two looks at the table.</summary>
    [Range(typeof(TimeSpan), "00:00:00.010", "01:00:00")]
    public TimeSpan PollInterval { get; set; } = DueWorkRunner.DefaultPollInterval;

    /// <summary>The longest a resting worker waits for a wake-up before it looks itself (a wake-up lost in a race costs no more).</summary>
    [Range(typeof(TimeSpan), "00:00:00.010", "01:00:00")]
    public TimeSpan RestInterval { get; set; } = TimeSpan.FromSeconds(2);
}

/// <summary>
/// Runs due_work, claimed with FOR UPDATE SKIP LOCKED, so any number of instances (and of workers in one,
/// <see cref="DueWorkOptions.Workers"/>) share it and each item runs once.
/// One idle worker of an instance watches the table (looks every <see cref="DueWorkOptions.PollInterval"/>, and at once
/// when the instance commits work due now, <see cref="DueWorkSignal"/>); the other idle workers rest. A worker that
/// claims an item goes on claiming until none is due, and wakes a resting one when the item it claimed was already a poll
/// interval late: a backlog (after an outage, or more due at once than one worker keeps up with) fans out to every worker.
/// Four workers that each polled every 200 ms made about 20 claims a second per service that found nothing, idle or not.
/// "Now" comes from <see cref="TimeProvider"/>, so tests move time; a failed item is retried with backoff and
/// keeps its last error visible. An item whose handler found its object locked (55P03) is not a failure: it is skipped
/// by this instance for 200 ms (<see cref="DefaultPollInterval"/>) and then claimed again.
/// </summary>
public sealed class DueWorkRunner(
    Db db,
    IEnumerable<IDueWorkHandler> handlers,
    TimeProvider time,
    IOptions<DueWorkOptions> options,
    ILogger<DueWorkRunner> logger,
    DueWorkSignal? signal = null) : BackgroundService
{
    private readonly Dictionary<string, IDueWorkHandler> _handlers = handlers.ToDictionary(h => h.Kind);

    /// <summary>
    /// Items whose object was locked by another transaction, with when (<see cref="Environment.TickCount64"/>: lock waits
    /// are real time, not the business clock tests move) this instance claims them again.
    /// </summary>
    private readonly ConcurrentDictionary<long, long> _busyUntil = new();

    /// <summary>1 while a worker watches the table for this instance.</summary>
    private int _watching;

    /// <summary>Workers resting, and what wakes one of them.</summary>
    private int _resting;
    private readonly SemaphoreSlim _wakeOne = new(0);

    /// <summary>Workers resting now (an idle instance has all but one: the one that watches).</summary>
    public int RestingWorkers => Volatile.Read(ref _resting);

    /// <summary>The watch's default poll interval; work committed due sooner than this wakes it (<see cref="DueWorkSignal"/>).</summary>
    public static readonly TimeSpan DefaultPollInterval = TimeSpan.FromMilliseconds(200);

    protected override Task ExecuteAsync(CancellationToken stoppingToken) => _handlers.Count == 0
        ? Task.CompletedTask
        : Task.WhenAll(Enumerable.Range(0, options.Value.Workers).Select(_ => Task.Run(() => PollAsync(stoppingToken))));

    private async Task PollAsync(CancellationToken stoppingToken)
    {
        while (!stoppingToken.IsCancellationRequested)
        {
            try
            {
                if (!await RunNextAsync(wakeAnother: true, stoppingToken)) await IdleAsync(stoppingToken);
            }
            catch (OperationCanceledException) when (stoppingToken.IsCancellationRequested)
            {
                return;
            }
            catch (Exception ex)
            {
                logger.LogWarning(ex, "Due-work poll failed; retrying");
                try { await Task.Delay(TimeSpan.FromSeconds(1), stoppingToken); } catch (OperationCanceledException) { return; }
            }
        }
    }

    /// <summary>
    /// Nothing due for this worker now: it watches if no other worker does, for the poll interval or until work due now
    /// is committed here; otherwise it rests until woken.
    /// </summary>
    private async Task IdleAsync(CancellationToken ct)
    {
        if (Interlocked.CompareExchange(ref _watching, 1, 0) == 0)
        {
            try
            {
                var wait = options.Value.PollInterval;
                if (signal is null) await Task.Delay(wait, ct);
                else await signal.WaitAsync(wait, ct);
            }
            finally
            {
                Volatile.Write(ref _watching, 0);
            }
            return;
        }
        Interlocked.Increment(ref _resting);
        try
        {
            await _wakeOne.WaitAsync(options.Value.RestInterval, ct);
        }
        finally
        {
            Interlocked.Decrement(ref _resting);
        }
    }

    /// <summary>Wakes one resting worker, if one rests and none is being woken already.</summary>
    private void WakeAnother()
    {
        if (Volatile.Read(ref _resting) > 0 && _wakeOne.CurrentCount == 0) _wakeOne.Release();
    }

    /// <summary>Runs every item that is due now; returns how many ran (tests call this after moving the clock).</summary>
    public async Task<int> RunDueAsync(CancellationToken ct)
    {
        var count = 0;
        while (await RunOneAsync(ct)) count++;
        return count;
    }

    /// <summary>Claims and runs one due item (or finds its object busy and leaves it for a moment); false when none is due.</summary>
    public Task<bool> RunOneAsync(CancellationToken ct) => RunNextAsync(wakeAnother: false, ct);

    /// <summary>
    /// Claims and runs one due item (false when none is due). With <paramref name="wakeAnother"/>, an item claimed a poll
    /// interval or more after its time wakes a resting worker before it runs: the work is behind.
    /// </summary>
    private async Task<bool> RunNextAsync(bool wakeAnother, CancellationToken ct)
    {
        var now = time.GetUtcNow();
        DueItem? item;
        await using (var tx = await db.BeginAsync(ct))
        {
            // Claimed and marked done in one statement, before the handler runs: a handler that reschedules the same
            // (kind, key) reopens the row. The item keeps the attempts it had before this one. (A version that also
            // looked up when the next item was due, to wake workers only for it, made the claim 2-7 times as costly,
            // 0.05 -> 0.37 ms in Bidding, and used more database time than the claims it saved.)
            var row = await tx.Connection.QuerySingleOrDefaultAsync<DueRow>(new CommandDefinition("""
                UPDATE due_work SET done_at = @now, attempts = attempts + 1
                WHERE id = (SELECT id FROM due_work
                            WHERE done_at IS NULL AND due_at <= @now AND kind = ANY(@kinds) AND id <> ALL(@busy)
                            ORDER BY due_at LIMIT 1 FOR UPDATE SKIP LOCKED)
                RETURNING id, kind, key, due_at, payload::text AS payload, attempts - 1 AS attempts
                """, new { now, kinds = _handlers.Keys.ToArray(), busy = BusyItems() }, tx.Transaction, cancellationToken: ct));
            if (row is null) return false;
            item = new DueItem(row.Id, row.Kind, row.Key, new DateTimeOffset(row.DueAt, TimeSpan.Zero), row.Payload, row.Attempts);
            if (wakeAnother && now - item.DueAt >= options.Value.PollInterval) WakeAnother();
            try
            {
                await _handlers[item.Kind].HandleAsync(item, tx, ct);
                await tx.CommitAsync(ct);
                return true;
            }
            catch (PostgresException ex) when (ex.SqlState == PostgresErrorCodes.LockNotAvailable && !ct.IsCancellationRequested)
            {
                // Its object is locked by a transaction that may be waiting for this very row: let go of it, try it again soon.
                logger.LogDebug("Due work {Kind}/{Key}: its object is locked by another transaction; retrying shortly", item.Kind, item.Key);
                await tx.Transaction.RollbackAsync(ct);
                _busyUntil[item.Id] = Environment.TickCount64 + (long)DefaultPollInterval.TotalMilliseconds;
                return true;
            }
            catch (Exception ex) when (!ct.IsCancellationRequested)
            {
                logger.LogWarning(ex, "Due work {Kind}/{Key} failed (attempt {Attempt})", item.Kind, item.Key, item.Attempts + 1);
                await tx.Transaction.RollbackAsync(ct);
                await RecordFailureAsync(item, ex, now, ct);
                return true;
            }
        }
    }

    private long[] BusyItems()
    {
        var tick = Environment.TickCount64;
        foreach (var (id, until) in _busyUntil)
            if (until <= tick) _busyUntil.TryRemove(id, out _);
        return [.. _busyUntil.Keys];
    }

    // Npgsql reads timestamptz as a UTC DateTime; Dapper maps records by exact constructor types.
    private sealed record DueRow(long Id, string Kind, string Key, DateTime DueAt, string Payload, int Attempts);

    private async Task RecordFailureAsync(DueItem item, Exception ex, DateTimeOffset now, CancellationToken ct)
    {
        var backoff = TimeSpan.FromSeconds(Math.Min(300, Math.Pow(2, Math.Min(item.Attempts + 1, 9))));
        await using var tx = await db.BeginAsync(ct);
        // Only if nobody cancelled or moved the item meanwhile (a lease's end extended): a retry must not undo that.
        await tx.Connection.ExecuteAsync(new CommandDefinition("""
            UPDATE due_work SET attempts = attempts + 1, last_error = @error, due_at = @retryAt
            WHERE id = @Id AND done_at IS NULL AND due_at = @DueAt
            """, new { item.Id, item.DueAt, error = ex.Message, retryAt = now + backoff }, tx.Transaction, cancellationToken: ct));
        await tx.CommitAsync(ct);
    }
}

public static class DueWorkExtensions
{
    public static IServiceCollection AddDueWorkHandler<T>(this IServiceCollection services) where T : class, IDueWorkHandler =>
        services.AddSingleton<IDueWorkHandler, T>();
}
