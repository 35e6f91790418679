using System.Diagnostics;
using System.Text.Json;
using System.Text.Json.Serialization;
using System.Threading.Channels;
using Dapper;
using MassTransit;
using Marketplace.Contracts;
using Marketplace.Scheduling.Domain;
using Marketplace.ServiceDefaults.Data;
using Npgsql;

namespace Marketplace.Scheduling.Leases;

/// <summary>
/// Group commit for placements: the matches that are being consumed at the same moment are placed together in one
/// transaction (one read of the offered nodes' slots and bookings, one lock statement, one insert per table), instead
/// of one transaction of a dozen round trips each. Matches queue while a batch runs, so the next batch takes all of
/// them; a match alone is placed at once, without waiting for company.
/// </summary>
/// <remarks>
/// Only the plain case is decided here: every node known, a window still ahead, a placement found on slots nobody else
/// is booking. Anything else (a refusal with its reason, slots under preemption notice, a slot another transaction
/// holds, an exclusion conflict) is handed back, and the match takes <see cref="OrderMatchedConsumer"/>'s own path, one
/// transaction per match, as if there were no batch. Exactly once: the batch writes each match's inbox row in its
/// transaction and deletes the rows of the matches it hands back before commit; a match already in the inbox (a
/// redelivery) counts as done. The exclusion constraint stays the final arbiter: a conflict rolls the whole batch back,
/// and every match in it takes the single path.
/// </remarks>
internal sealed class PlacementBatcher(Db db, ILogger<PlacementBatcher> logger) : BackgroundService
{
    /// <summary>Most matches in one transaction (the consumer's concurrency bounds it as well).</summary>
    public const int MaxBatch = 64;

    /// <summary>Batches in progress at once: one decides while the other waits for the database.</summary>
    public const int Workers = 2;

    /// <summary>How long the slots of a committed batch stay busy for the other worker, whose read may predate the commit.</summary>
    private static readonly TimeSpan KeepCommitted = TimeSpan.FromSeconds(10);

    private readonly Channel<Request> _queue = Channel.CreateUnbounded<Request>();

    /// <summary>
    /// The slots the batches of this process chose and are booking (or booked moments ago), so that two workers never
    /// choose the same slot; across processes the slot locks do that. Guarded by its own lock.
    /// </summary>
    private readonly Dictionary<object, (List<(Guid[] Slots, DateTimeOffset Start, DateTimeOffset End)> Booking, long? CommittedAt)> _inFlight = [];

    private sealed record Request(Guid MessageId, OrderMatched Match)
    {
        public TaskCompletionSource<bool> Done { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);
    }

    /// <summary>
    /// Places the match with the others in flight. True: it is placed, or was already handled (a redelivery); false:
    /// nothing was written for it, and the caller places it on its own.
    /// </summary>
    public async Task<bool> TryPlaceAsync(Guid messageId, OrderMatched match, CancellationToken ct)
    {
        var request = new Request(messageId, match);
        if (!_queue.Writer.TryWrite(request)) return false;
        return await request.Done.Task.WaitAsync(ct);
    }

    /// <summary>Places these matches as one batch, now (what the queue does with the matches in flight; tests call it directly).</summary>
    internal Task<bool[]> PlaceBatchAsync(IReadOnlyList<(Guid MessageId, OrderMatched Match)> matches, CancellationToken ct) =>
        PlaceAsync(matches.Select(m => new Request(m.MessageId, m.Match)).ToList(), ct);

    protected override async Task ExecuteAsync(CancellationToken stoppingToken)
    {
        try
        {
            await Task.WhenAll(Enumerable.Range(0, Workers).Select(_ => WorkAsync(stoppingToken)));
        }
        finally
        {
            // Stopping: whatever still waits takes the single path (which stops with the bus).
            _queue.Writer.TryComplete();
            while (_queue.Reader.TryRead(out var r)) r.Done.TrySetResult(false);
        }
    }

    private async Task WorkAsync(CancellationToken stoppingToken)
    {
        var batch = new List<Request>(MaxBatch);
        try
        {
            while (await _queue.Reader.WaitToReadAsync(stoppingToken))
            {
                batch.Clear();
                while (batch.Count < MaxBatch && _queue.Reader.TryRead(out var r)) batch.Add(r);
                if (batch.Count == 0) continue; // the other worker took them
                var done = await PlaceAsync(batch, stoppingToken);
                for (var i = 0; i < batch.Count; i++) batch[i].Done.TrySetResult(done[i]);
            }
        }
        catch (OperationCanceledException) when (stoppingToken.IsCancellationRequested) { }
        finally
        {
            foreach (var r in batch) r.Done.TrySetResult(false);
        }
    }

    /// <summary>Places a batch; per request, whether it is done (placed or already handled).</summary>
    private async Task<bool[]> PlaceAsync(IReadOnlyList<Request> batch, CancellationToken ct)
    {
        var done = new bool[batch.Count];
        try
        {
            await PlaceAsync(batch, done, ct);
        }
        catch (Exception e) when (!ct.IsCancellationRequested)
        {
            // Rolled back (an exclusion conflict with a path that books without slot locks, a deadlock, the database
            // gone, whatever else): nothing of the batch was written, so every match takes the single path, which
            // handles each case (and retries or fails it visibly).
            logger.LogInformation(e, "A batch of {Count} placements was rolled back; each match is placed on its own", batch.Count);
            Array.Clear(done);
        }
        return done;
    }

    private async Task PlaceAsync(IReadOnlyList<Request> batch, bool[] done, CancellationToken ct)
    {
        var clock = Stopwatch.StartNew();
        await using var tx = await db.BeginAsync(ct);
        var now = tx.Now;
        var windows = batch.Select(r => OrderMatchedConsumer.WindowOf(r.Match, now)).ToArray();
        // A second copy of a message inside this batch takes the single path, after this one.
        var firstOfId = batch.Select((r, i) => (r.MessageId, i)).DistinctBy(p => p.MessageId).Select(p => p.i).ToList();
        var (claimed, view) = await ClaimAndReadAsync(tx, firstOfId.Select(i => (batch[i].MessageId, batch[i].Match.NodeIds, windows[i])).ToList(), ct);
        var fresh = new List<int>();
        foreach (var i in firstOfId)
            if (claimed.Contains(batch[i].MessageId)) fresh.Add(i);
            else done[i] = true; // in the inbox already: handled before (a redelivery)
        var readMs = clock.Elapsed.TotalMilliseconds;

        var placed = new List<(int Index, Guid[] Slots)>();
        var token = new object();
        lock (_inFlight)
        {
            // What the other worker is booking counts as booked; then this batch's choices count for it.
            var ticks = Stopwatch.GetTimestamp();
            foreach (var (key, other) in _inFlight.ToList())
                if (other.CommittedAt is { } at && Stopwatch.GetElapsedTime(at, ticks) > KeepCommitted) _inFlight.Remove(key);
                else foreach (var (slots, start, end) in other.Booking) view.Calendar.Book(slots, start, end);
            Decide(batch, windows, fresh, view, placed, now);
            _inFlight[token] = (Bookings(), null);
        }
        try
        {
            await LockWriteAndCommitAsync(tx, batch, windows, fresh, placed, ct);
            lock (_inFlight) _inFlight[token] = (Bookings(), Stopwatch.GetTimestamp()); // what was booked, lost slots left out
        }
        catch
        {
            lock (_inFlight) _inFlight.Remove(token);
            throw;
        }
        foreach (var p in placed) done[p.Index] = true;
        logger.LogDebug("Batch of {Count} matches: {Placed} placed, {Handled} handled before, {HandedBack} handed back in {Ms:0.0} ms (read {Read:0.0})",
            batch.Count, placed.Count, batch.Count - fresh.Count, fresh.Count - placed.Count, clock.Elapsed.TotalMilliseconds, readMs);

        List<(Guid[] Slots, DateTimeOffset Start, DateTimeOffset End)> Bookings() =>
            placed.Select(p => (p.Slots, windows[p.Index].Start, windows[p.Index].End)).ToList();
    }

    /// <summary>Places the fresh matches one after the other on the calendar; the unusual ones are left for the single path.</summary>
    private static void Decide(IReadOnlyList<Request> batch, (DateTimeOffset Start, DateTimeOffset End)[] windows, List<int> fresh,
        FleetView view, List<(int Index, Guid[] Slots)> placed, DateTimeOffset now)
    {
        foreach (var i in fresh)
        {
            var m = batch[i].Match;
            var (start, end) = windows[i];
            // The unusual cases (nodes not known yet, an empty or past window: refusals with reasons) take the single path.
            if (m.AcceleratorCount <= 0 || end <= start || end <= now || !m.NodeIds.All(view.Nodes.ContainsKey)) continue;
            // A late on-demand match runs the ordered duration from now: the single path re-anchors it (LateMatch).
            if (m.OrderType == "on_demand" && LateWindow.IsLate(start, now)) continue;
            var eligible = m.NodeIds.Where(id => view.Nodes[id] is var n && n.ProviderOrgId == m.ProviderOrgId && n.AcceleratorModel == m.AcceleratorModel);
            var placement = Placement.Place(view.Calendar.Candidates(eligible, start, end), OrderMatchedConsumer.Request(m));
            if (!placement.Placed) continue; // the single path explains why, or waits for a preemption that frees slots
            var chosen = placement.Slots.Select(s => s.SlotId).Order().ToArray();
            view.Calendar.Book(chosen, start, end);
            placed.Add((i, chosen));
        }
    }

    private static async Task LockWriteAndCommitAsync(Tx tx, IReadOnlyList<Request> batch, (DateTimeOffset Start, DateTimeOffset End)[] windows,
        List<int> fresh, List<(int Index, Guid[] Slots)> placed, CancellationToken ct)
    {
        if (placed.Count > 0)
        {
            var lost = await LockAsync(tx, windows, placed, ct);
            placed.RemoveAll(p => lost.Contains(p.Index));
        }
        var handedBack = fresh.Except(placed.Select(p => p.Index)).Select(i => batch[i].MessageId).ToArray();
        await WriteAsync(tx, batch, windows, placed, handedBack, ct);
        await tx.CommitAsync(ct);
    }

    /// <summary>
    /// One round trip: claims the matches in the inbox (the ids returned are new; a duplicate in flight elsewhere waits on
    /// the key) and reads their nodes, the nodes' slots, and the bookings (by node and end, one range of bookings_node_end per node)
    /// and maintenance over the batch's span.
    /// </summary>
    private static async Task<(HashSet<Guid> Claimed, FleetView View)> ClaimAndReadAsync(
        Tx tx, IReadOnlyList<(Guid MessageId, IReadOnlyList<Guid> NodeIds, (DateTimeOffset Start, DateTimeOffset End) Window)> matches, CancellationToken ct)
    {
        var from = matches.Min(m => m.Window.Start);
        var to = matches.Max(m => m.Window.End);
        using var read = await tx.Connection.QueryMultipleAsync(new CommandDefinition("""
            INSERT INTO inbox (message_id, consumer, received_at)
            SELECT id, @consumer, @now FROM unnest(@ids) AS m(id)
            ON CONFLICT DO NOTHING RETURNING message_id;
            SELECT id AS node_id, provider_org_id, accelerator_model, cluster_id, nvlink_domain, fabric,
                   health = 'healthy' AS healthy, verified
            FROM nodes WHERE id = ANY(@nodeIds);
            SELECT id AS slot_id, node_id, index FROM gpu_slots WHERE node_id = ANY(@nodeIds);
            SELECT slot_id, lower(during) AS start_at, upper(during) AS end_at FROM bookings
            WHERE node_id = ANY(@nodeIds) AND upper(during) > @from AND during && tstzrange(@from, greatest(@from, @to), '[)');
            SELECT node_id, lower(during) AS start_at, upper(during) AS end_at FROM node_maintenance
            WHERE node_id = ANY(@nodeIds) AND cancelled_at IS NULL AND during && tstzrange(@from, greatest(@from, @to), '[)');
            """, new
        {
            ids = matches.Select(m => m.MessageId).ToArray(), consumer = OrderMatchedConsumer.ConsumerName, now = tx.Now,
            nodeIds = matches.SelectMany(m => m.NodeIds).Distinct().ToArray(), from, to,
        }, tx.Transaction, cancellationToken: ct));
        var claimed = (await read.ReadAsync<Guid>()).ToHashSet();
        var nodes = (await read.ReadAsync<NodeRow>()).ToDictionary(n => n.NodeId);
        var slots = (await read.ReadAsync<SlotRow>()).ToLookup(s => s.NodeId);
        var bookings = (await read.ReadAsync<RangeRow>()).Select(b => (b.SlotId, new TimeRange(b.StartAt, b.EndAt)));
        var maintenance = (await read.ReadAsync<RangeRow>()).ToLookup(m => m.NodeId, m => new TimeRange(m.StartAt, m.EndAt));
        var calendar = new SlotCalendar(nodes.Values.Select(n => new CalendarNode(n.NodeId, n.ClusterId, n.NvlinkDomain, n.Fabric, n.Healthy, n.Verified,
            slots[n.NodeId].Select(s => (s.SlotId, s.Index)).ToList(), maintenance[n.NodeId].ToList())), bookings);
        return (claimed, new FleetView(nodes, calendar));
    }

    /// <summary>
    /// One round trip: takes the slot locks that are free (a slot another transaction is booking right now is lost to
    /// this batch; its match takes the single path, which waits for it) and then, in a statement of its own so that it
    /// sees every commit before the locks were granted, finds the chosen slots someone booked since the batch's read.
    /// Returns the batch entries that lost a slot either way.
    /// </summary>
    private static async Task<HashSet<int>> LockAsync(
        Tx tx, (DateTimeOffset Start, DateTimeOffset End)[] windows, List<(int Index, Guid[] Slots)> placed, CancellationToken ct)
    {
        var rows = placed.SelectMany(p => p.Slots.Select(s => (p.Index, Slot: s, Window: windows[p.Index]))).ToList();
        using var read = await tx.Connection.QueryMultipleAsync(new CommandDefinition($$"""
            SELECT slot_id FROM unnest(@lockSlots) AS s(slot_id)
            WHERE NOT pg_try_advisory_xact_lock({{SlotLocks.KeyOfSlotId}});
            SELECT DISTINCT c.item FROM unnest(@items, @slotIds, @starts, @ends) AS c(item, slot_id, start_at, end_at)
            WHERE EXISTS (SELECT 1 FROM bookings b WHERE b.slot_id = c.slot_id AND b.during && tstzrange(c.start_at, c.end_at, '[)'));
            """, new
        {
            lockSlots = placed.SelectMany(p => p.Slots).Distinct().Order().ToArray(),
            items = rows.Select(r => r.Index).ToArray(),
            slotIds = rows.Select(r => r.Slot).ToArray(),
            starts = rows.Select(r => r.Window.Start.UtcDateTime).ToArray(),
            ends = rows.Select(r => r.Window.End.UtcDateTime).ToArray(),
        }, tx.Transaction, cancellationToken: ct));
        var refused = (await read.ReadAsync<Guid>()).ToHashSet();
        var lost = (await read.ReadAsync<int>()).ToHashSet();
        lost.UnionWith(placed.Where(p => p.Slots.Any(refused.Contains)).Select(p => p.Index));
        return lost;
    }

    /// <summary>
    /// The leases and their bookings (with the inbox marks of the matches handed back taken out) in one round trip, then
    /// their start and end and their LeaseScheduled events.
    /// </summary>
    private static async Task WriteAsync(Tx tx, IReadOnlyList<Request> batch, (DateTimeOffset Start, DateTimeOffset End)[] windows,
        List<(int Index, Guid[] Slots)> placed, Guid[] handedBack, CancellationToken ct)
    {
        var leases = placed.Select(p => (batch[p.Index].Match, p.Slots,
            Lease: OrderMatchedConsumer.NewLeaseFor(batch[p.Index].Match, windows[p.Index].Start, windows[p.Index].End, tx.Now))).ToList();
        if (leases.Count == 0 && handedBack.Length == 0) return;
        await tx.Connection.ExecuteAsync(new CommandDefinition("""
            DELETE FROM inbox WHERE message_id = ANY(@handedBack) AND consumer = @consumer;
            INSERT INTO leases (id, order_id, match_id, renter_org_id, provider_org_id, accelerator_model, accelerator_count,
                                start_at, end_at, price_amount, price_currency, status, created_at,
                                interruptible, preemption_notice_seconds, sla_level,
                                offer_id, offered_node_ids, offered_slot_ids, verified_only)
            SELECT id, order_id, match_id, renter_org_id, provider_org_id, accelerator_model, accelerator_count,
                   start_at, end_at, price_amount, price_currency, 'scheduled', created_at,
                   interruptible, preemption_notice_seconds, sla_level,
                   offer_id, offered_node_ids, offered_slot_ids, verified_only
            FROM jsonb_to_recordset(@leases::jsonb) AS l(
                id uuid, order_id uuid, match_id uuid, renter_org_id uuid, provider_org_id uuid, accelerator_model text,
                accelerator_count int, start_at timestamptz, end_at timestamptz, price_amount bigint, price_currency text,
                created_at timestamptz, interruptible boolean, preemption_notice_seconds int, sla_level text,
                offer_id uuid, offered_node_ids uuid[], offered_slot_ids uuid[], verified_only boolean);
            INSERT INTO bookings (lease_id, slot_id, node_id, during)
            SELECT b.lease_id, b.slot_id, g.node_id, tstzrange(b.start_at, b.end_at, '[)')
            FROM unnest(@leaseIds, @slotIds, @starts, @ends) AS b(lease_id, slot_id, start_at, end_at)
                 LEFT JOIN gpu_slots g ON g.id = b.slot_id -- an unknown slot: no node, refused by NOT NULL
            ORDER BY b.slot_id;
            """, new
        {
            handedBack, consumer = OrderMatchedConsumer.ConsumerName,
            leases = JsonSerializer.Serialize(leases.Select(l => LeaseRow.Of(l.Lease))),
            leaseIds = leases.SelectMany(l => l.Slots.Select(_ => l.Lease.Id)).ToArray(),
            slotIds = leases.SelectMany(l => l.Slots).ToArray(),
            starts = leases.SelectMany(l => l.Slots.Select(_ => l.Lease.StartAt.UtcDateTime)).ToArray(),
            ends = leases.SelectMany(l => l.Slots.Select(_ => l.Lease.EndAt.UtcDateTime)).ToArray(),
        }, tx.Transaction, cancellationToken: ct));
        if (leases.Count == 0) return;
        await tx.ScheduleAllAsync(leases.SelectMany(l => new[]
        {
            (LeaseLifecycle.Activate, l.Lease.Id.ToString(), l.Lease.StartAt),
            (LeaseLifecycle.Complete, l.Lease.Id.ToString(), l.Lease.EndAt),
        }).ToList(), ct);
        await tx.PublishAllAsync(leases.Select(l => OrderMatchedConsumer.Scheduled(l.Match, l.Lease, l.Slots, tx.Now)).ToList(), ct);
    }

    private sealed record FleetView(Dictionary<Guid, NodeRow> Nodes, SlotCalendar Calendar);

    private sealed record NodeRow(Guid NodeId, Guid ProviderOrgId, string AcceleratorModel, Guid ClusterId, string? NvlinkDomain, string? Fabric,
        bool Healthy, bool Verified);

    private sealed record SlotRow(Guid SlotId, Guid NodeId, int Index);

    private sealed class RangeRow
    {
        public Guid SlotId { get; init; }
        public Guid NodeId { get; init; }
        public DateTimeOffset? StartAt { get; init; }
        public DateTimeOffset? EndAt { get; init; }
    }

    /// <summary>A lease as jsonb_to_recordset reads it (snake_case names, UTC times).</summary>
    private sealed record LeaseRow(
        [property: JsonPropertyName("id")] Guid Id,
        [property: JsonPropertyName("order_id")] Guid OrderId,
        [property: JsonPropertyName("match_id")] Guid MatchId,
        [property: JsonPropertyName("renter_org_id")] Guid RenterOrgId,
        [property: JsonPropertyName("provider_org_id")] Guid ProviderOrgId,
        [property: JsonPropertyName("accelerator_model")] string AcceleratorModel,
        [property: JsonPropertyName("accelerator_count")] int AcceleratorCount,
        [property: JsonPropertyName("start_at")] DateTimeOffset StartAt,
        [property: JsonPropertyName("end_at")] DateTimeOffset EndAt,
        [property: JsonPropertyName("price_amount")] long PriceAmount,
        [property: JsonPropertyName("price_currency")] string PriceCurrency,
        [property: JsonPropertyName("created_at")] DateTimeOffset CreatedAt,
        [property: JsonPropertyName("interruptible")] bool Interruptible,
        [property: JsonPropertyName("preemption_notice_seconds")] int PreemptionNoticeSeconds,
        [property: JsonPropertyName("sla_level")] string SlaLevel,
        [property: JsonPropertyName("offer_id")] Guid? OfferId,
        [property: JsonPropertyName("offered_node_ids")] Guid[]? OfferedNodeIds,
        [property: JsonPropertyName("offered_slot_ids")] Guid[]? OfferedSlotIds,
        [property: JsonPropertyName("verified_only")] bool VerifiedOnly)
    {
        public static LeaseRow Of(NewLease l) => new(l.Id, l.OrderId, l.MatchId, l.RenterOrgId, l.ProviderOrgId, l.AcceleratorModel,
            l.AcceleratorCount, Micros(l.StartAt), Micros(l.EndAt), l.PriceAmount, l.PriceCurrency, Micros(l.CreatedAt),
            l.Interruptible, l.PreemptionNoticeSeconds, l.SlaLevel, l.OfferId, l.OfferedNodeIds, l.OfferedSlotIds, l.VerifiedOnly);

        /// <summary>Cut to microseconds as Npgsql does with parameters (PostgreSQL would round text instead): the bookings must end where the lease does.</summary>
        private static DateTimeOffset Micros(DateTimeOffset t)
        {
            var utc = t.ToUniversalTime();
            return utc.AddTicks(-(utc.Ticks % 10));
        }
    }
}
