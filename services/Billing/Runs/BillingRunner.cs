using System.Diagnostics;
using System.Threading.Channels;
using Dapper;
using Marketplace.Billing.Domain;
using Marketplace.Billing.Ledger;
using Marketplace.ServiceDefaults.Data;
using MassTransit;
using Microsoft.Extensions.Options;
using Npgsql;
using NpgsqlTypes;
using Stripe;

namespace Marketplace.Billing.Runs;

/// <summary>Test seam: called after each committed batch of a run (a test throws here to crash a run midway).</summary>
public sealed class BillingRunHooks
{
    public Func<int, CancellationToken, Task>? AfterBatch { get; set; }

    /// <summary>Called with a chunk's leases after it is read and rated, before its holds are claimed (a test changes a hold here).</summary>
    public Func<IReadOnlyList<Guid>, CancellationToken, Task>? BeforeClaim { get; set; }

    /// <summary>Called at the end of a run, before the statements are recomputed and their payouts queued (beside the invoices being finalized).</summary>
    public Func<CancellationToken, Task>? BeforePayoutsQueued { get; set; }
}

/// <summary>
/// Closes a billing period in batches. One run at a time (a session advisory lock, released if the process dies);
/// each batch is one transaction that closes a set of leases completely (invoice lines, charge, SLA credit, release,
/// hold settled) and records the progress, so a run that dies resumes with the leases still pending. The end
/// (totals, finalizing the drafts, statements, payouts) is idempotent too. Work per batch is set-based: a handful of
/// statements whatever the batch size, never one round trip per lease.
/// </summary>
internal sealed class BillingRunner(Db db, StripeClient stripe, IOptions<BillingOptions> options, BillingRunHooks hooks,
    ILogger<BillingRunner> logger)
{
    /// <summary><paramref name="LeasesWaiting"/>: leases of the period left for a later run, some of their events still on their way.</summary>
    public sealed record Outcome(int LeasesClosed, bool AllPaid, RunProfile Profile, int LeasesWaiting = 0);

    private sealed record Candidate(Guid LeaseId, Guid RenterOrgId, Guid ProviderOrgId, string AcceleratorModel, int AcceleratorCount,
        DateTime StartAt, DateTime EndAt, long PricePerHour, string Currency, bool Interruptible, string SlaLevel,
        DateTime? StartedAt, DateTime EndedAt, string? EndStatus, string? EndCause, Guid HoldId, long HoldAmount,
        long HoldVersion, NpgsqlTid HoldTid, IReadOnlyList<DowntimeInterval> Downtime);

    /// <summary>
    /// What the read joins a lease's downtime causes with (chr(31) in its SQL), so no stored cause holds it
    /// (<see cref="Usage.LeaseInterruptedConsumer"/> replaces it; Billing V12 refuses it).
    /// </summary>
    internal const char CauseSeparator = '\u001f';

    /// <summary>
    /// A lease the run can close: it started, or its LeaseEnded said it never ran, or it ended before its scheduled start.
    /// Otherwise its LeaseEnded overtook its LeaseStarted (another queue) and the start is still on its way: closing it now
    /// would release its whole hold as if it had never run, and the usage would never be billed. It waits for a later run.
    /// </summary>
    private const string Ran = "(u.started_at IS NOT NULL OR u.never_ran OR u.ended_at <= l.start_at)";

    /// <summary>
    /// Billing holds every interruption and resume that Scheduling recorded for the lease (its LeaseEnded says how many;
    /// null from older publishers, which said nothing). They travel on other queues: a lease closed before a late one
    /// arrived would be billed for time it was down, or, for a late resume, not billed after the interruption. It waits for
    /// a later run. <paramref name="interruptions"/> and <paramref name="resumes"/> are what Billing holds (an interruption
    /// is a row with a cause; a resume, a row with an end: DowntimeLog). Both sets are distinct times on both sides.
    /// </summary>
    private static string DowntimeArrived(string interruptions, string resumes) =>
        $"(u.interruptions IS NULL OR u.interruptions + u.resumes = 0 OR ({interruptions} >= u.interruptions AND {resumes} >= u.resumes))";

    /// <summary><see cref="DowntimeArrived"/> for a query without the lease's downtime at hand (its own index range).</summary>
    private static readonly string DowntimeArrivedAlone = DowntimeArrived(
        "(SELECT count(*) FROM downtime x WHERE x.lease_id = u.lease_id AND x.cause <> '')",
        "(SELECT count(*) FROM downtime x WHERE x.lease_id = u.lease_id AND x.ended_at IS NOT NULL)");

    private sealed record PendingPayout(Guid Id, Guid StatementId, int Sequence, long Amount, string Currency, string Destination, Guid ProviderOrgId);

    public async Task<Outcome> RunAsync(BillingPeriod p, CancellationToken ct)
    {
        await using var lockConnection = await db.DataSource.OpenConnectionAsync(ct);
        try
        {
            // One run at a time for all periods (a day and its month overlap). Session-level, so it spans the batches;
            // PostgreSQL drops it with the connection if this process dies.
            await lockConnection.ExecuteAsync(new CommandDefinition("SELECT pg_advisory_lock(hashtextextended('billing-run', 0))", cancellationToken: ct));
            var profile = new RunProfile();
            var (closed, waiting) = await CloseUsageAsync(p, profile, ct);
            // The end: the invoices and the statements are both sums of the lines written above, and neither reads what
            // the other writes, so the invoices are finalized on one connection while the statements are recomputed, what
            // they still owe is queued and paid out on another (one transaction each; each is idempotent, so a run that
            // dies between them ends the same when it runs again). The run is completed when both are done.
            var end = Stopwatch.GetTimestamp();
            var invoices = Task.Run(async () => profile.Lap("end: invoice totals and finalizing", await FinalizeInvoicesAsync(p, ct)), CancellationToken.None);
            var payouts = Task.Run(async () =>
            {
                if (hooks.BeforePayoutsQueued is { } hook) await hook(ct);
                var t = profile.Lap("end: statements and payouts queued", await QueuePayoutsAsync(p, ct));
                var allPaid = await PayOutAsync(ct);
                profile.Lap("end: payouts (Stripe transfers + ledger)", t);
                return allPaid;
            }, CancellationToken.None);
            await Task.WhenAll(invoices, payouts);
            await CompleteAsync(p, ct);
            profile.Lap("end (the three above at once, then completed)", end);
            var allPaid = await payouts;
            logger.LogInformation("Billing run {Period}: {Leases} leases closed, {Waiting} waiting for their events; {Profile}",
                p.Name, closed, waiting, profile);
            return new Outcome(closed, allPaid, profile, waiting);
        }
        finally
        {
            // Every session lock of this connection, a lock granted just as the wait for it was cancelled too: the
            // connection goes back to the pool, which does not reset it (DatabaseExtensions.AddServiceDatabase).
            await lockConnection.ExecuteAsync("SELECT pg_advisory_unlock_all()");
        }
    }

    /// <summary>Closes the period's usage: how many leases it closed, and how many it left waiting for their events.</summary>
    private async Task<(int Closed, int Waiting)> CloseUsageAsync(BillingPeriod p, RunProfile profile, CancellationToken ct)
    {
        var o = options.Value;
        DateTimeOffset startedAt;
        int waiting;
        await using (var tx = await db.BeginAsync(ct))
        {
            startedAt = tx.Now;
            (int Ready, int Waiting) counts = await tx.Connection.QuerySingleAsync<(int, int)>(new CommandDefinition($"""
                SELECT count(*) FILTER (WHERE ready)::int, count(*) FILTER (WHERE NOT ready)::int
                FROM (SELECT {Ran} AND {DowntimeArrivedAlone} AS ready
                      FROM holds h JOIN usage u USING (lease_id) JOIN leases l USING (lease_id)
                      WHERE h.status = 'pending' AND u.ended_at >= @From AND u.ended_at < @To AND u.ended_at <= @now) c
                """, new { p.From, p.To, now = startedAt }, tx.Transaction, cancellationToken: ct));
            waiting = counts.Waiting;
            await tx.Connection.ExecuteAsync(new CommandDefinition("""
                INSERT INTO billing_runs (period, first_run_at, last_run_at, runs, state, leases_total, leases_done, leases_waiting)
                VALUES (@Name, @now, @now, 1, 'running', @remaining, 0, @waiting)
                ON CONFLICT (period) DO UPDATE SET last_run_at = excluded.last_run_at, runs = billing_runs.runs + 1,
                    state = 'running', leases_total = excluded.leases_total, leases_done = 0, leases_waiting = excluded.leases_waiting
                """, new { p.Name, now = tx.Now, remaining = counts.Ready, waiting }, tx.Transaction, cancellationToken: ct));
            await tx.CommitAsync(ct);
        }

        // The period is read once, in renter order, by one streaming query on its own connection (hash joins over the
        // period, like the aggregation), chunk by chunk, while the chunks before are rated and written: RunWriters
        // writers take the chunks in turn (chunk k goes to writer k mod RunWriters, a bounded channel of one chunk to
        // each), meter and price them, and write them, each on its own connection. A writer's transaction (a batch: the
        // unit of progress and of resumption) takes chunks until it holds RunBatchSize leases, and posts their journal
        // transaction, summed per account, once at its end. The writers never wait for each other's rows: a lease is in
        // one chunk, the drafts its lines go to are committed before (PeriodDrafts), the journal is append-only. Nothing
        // is locked by the read: each chunk's claim checks that its holds are still the versions read; when one changed,
        // the writer's whole batch is rolled back and its leases are read and rated again as they are now.
        int batchNo = 0, closed = 0;
        PeriodDrafts invoices = new(db, "invoices", "renter_org_id"), statements = new(db, "statements", "provider_org_id");
        var writers = o.RunWriters;
        var read = Enumerable.Range(0, writers)
            .Select(_ => Channel.CreateBounded<List<Candidate>>(new BoundedChannelOptions(1) { SingleReader = true, SingleWriter = true })).ToArray();
        using var stop = CancellationTokenSource.CreateLinkedTokenSource(ct);
        var chunk = Math.Min(o.RunBatchSize, o.RunChunkSize);
        var reader = Task.Run(() => ReadAsync(p, startedAt, chunk, [.. read.Select(c => c.Writer)], profile, stop.Token), CancellationToken.None);

        async Task WriteAsync(ChannelReader<List<Candidate>> chunks)
        {
            OpenBatch? open = null;
            try
            {
                var waited = Stopwatch.GetTimestamp();
                await foreach (var leasesRead in chunks.ReadAllAsync(stop.Token))
                {
                    var t = profile.Lap("waiting for the read", waited);
                    var next = Rate(p, leasesRead, o.PlatformFeeBasisPoints);
                    profile.Lap("metering and pricing (C#)", t);
                    open ??= new OpenBatch(await db.BeginAsync(stop.Token), NewId.NextSequentialGuid());
                    if (await WriteChunkAsync(open, p, next, invoices, statements, hooks, profile, stop.Token))
                        open.Chunks.Add(next);
                    else
                    {
                        var leases = open.Chunks.SelectMany(c => c.Leases).Concat(next.Leases).Select(c => c.LeaseId).ToArray();
                        await open.DisposeAsync();
                        open = null;
                        open = await WriteAgainAsync(p, leases, startedAt, invoices, statements, profile, stop.Token);
                    }
                    if (open.Leases >= o.RunBatchSize)
                    {
                        Interlocked.Add(ref closed, await CommitAsync(open, p, profile, stop.Token));
                        await open.DisposeAsync();
                        open = null;
                        if (hooks.AfterBatch is { } hook) await hook(Interlocked.Increment(ref batchNo), stop.Token);
                    }
                    waited = Stopwatch.GetTimestamp();
                }
                if (open is not null)
                {
                    Interlocked.Add(ref closed, await CommitAsync(open, p, profile, stop.Token));
                    if (hooks.AfterBatch is { } hook) await hook(Interlocked.Increment(ref batchNo), stop.Token);
                }
            }
            catch
            {
                // This writer failed (a crashed run resumes later): the reader and the other writers stop too. What they
                // committed stays; their open batches roll back.
                await stop.CancelAsync();
                throw;
            }
            finally
            {
                if (open is not null) await open.DisposeAsync();
            }
        }

        var writing = read.Select(c => Task.Run(() => WriteAsync(c.Reader), CancellationToken.None)).ToArray();
        try
        {
            await Task.WhenAll(writing);
        }
        catch when (writing.Select(w => w.Exception?.InnerException).FirstOrDefault(e => e is not null and not OperationCanceledException) is { } cause)
        {
            // The writer that failed first, not one that was stopped because of it.
            System.Runtime.ExceptionServices.ExceptionDispatchInfo.Throw(cause);
        }
        finally
        {
            await stop.CancelAsync();
            await reader;
        }
        return (closed, waiting);
    }

    /// <summary>The run's open transaction: the chunks written in it so far, and the id its journal transaction will have.</summary>
    private sealed class OpenBatch(Tx tx, Guid journalId) : IAsyncDisposable
    {
        public Tx Tx => tx;
        public Guid JournalId => journalId;
        public List<RatedChunk> Chunks { get; } = [];
        public int Leases => Chunks.Sum(c => c.Leases.Count);
        public ValueTask DisposeAsync() => tx.DisposeAsync();
    }

    /// <summary>
    /// A hold of the batch changed between the read and its claim (an extension or a void committed in between): the
    /// batch was rolled back; its leases are read and rated again, as they are now, and written as one chunk of a new
    /// transaction (again, until no hold changes under it).
    /// </summary>
    private async Task<OpenBatch> WriteAgainAsync(BillingPeriod p, Guid[] leases, DateTimeOffset startedAt, PeriodDrafts invoices,
        PeriodDrafts statements, RunProfile profile, CancellationToken ct)
    {
        while (true)
        {
            logger.LogInformation("Billing run {Period}: a hold of the batch from lease {First} changed while it was rated; rating it again",
                p.Name, leases[0]);
            var reread = new List<Candidate>(leases.Length);
            await using (var fresh = await db.DataSource.OpenConnectionAsync(ct))
                await foreach (var again in CandidatesAsync(fresh, leases, p, startedAt, leases.Length, profile, ct)) reread.AddRange(again);
            var chunk = Rate(p, reread, options.Value.PlatformFeeBasisPoints);
            var open = new OpenBatch(await db.BeginAsync(ct), NewId.NextSequentialGuid());
            if (await WriteChunkAsync(open, p, chunk, invoices, statements, hooks, profile, ct))
            {
                open.Chunks.Add(chunk);
                return open;
            }
            await open.DisposeAsync();
        }
    }

    /// <summary>Posts the batch's journal transaction (one, summed per account over all its leases), counts the progress, commits.</summary>
    private static async Task<int> CommitAsync(OpenBatch open, BillingPeriod p, RunProfile profile, CancellationToken ct)
    {
        var t = Stopwatch.GetTimestamp();
        var leases = open.Leases;
        var tx = open.Tx;
        if (leases > 0)
        {
            // The key is the batch's first lease, which no other batch can ever contain (a lease is closed in exactly one
            // committed batch: its hold leaves 'pending' with it).
            var first = open.Chunks.First(c => c.Leases.Count > 0).Leases[0].LeaseId;
            var settlement = Settlement.SettleBatch($"settle:{p.Name}:{first}", open.Chunks.SelectMany(c => c.Settle));
            if (settlement is null)
                // Nothing moved (holds of zero): there is no journal transaction for the claims to name.
                await tx.Connection.ExecuteAsync(new CommandDefinition("UPDATE holds SET settled_by = NULL WHERE settled_by = @id",
                    new { id = open.JournalId }, tx.Transaction, cancellationToken: ct));
            else if (await LedgerStore.PostLargeAsync(tx, settlement, ct, open.JournalId) is null)
                throw new InvalidOperationException($"{settlement.IdempotencyKey} was posted before while its holds were still pending");
            await tx.Connection.ExecuteAsync(new CommandDefinition(
                "UPDATE billing_runs SET leases_done = leases_done + @n WHERE period = @Name",
                new { n = leases, p.Name }, tx.Transaction, cancellationToken: ct));
        }
        t = profile.Lap("ledger insert", t);
        await tx.CommitAsync(ct);
        profile.Lap("commit", t);
        return leases;
    }

    /// <summary>Reads the period's candidates, chunk by chunk, into the writers' channels in turn (the reader side of a run).</summary>
    private async Task ReadAsync(BillingPeriod p, DateTimeOffset now, int size, ChannelWriter<List<Candidate>>[] outputs, RunProfile profile,
        CancellationToken ct)
    {
        var k = 0;
        try
        {
            await using var read = await db.DataSource.OpenConnectionAsync(ct);
            await foreach (var batch in CandidatesAsync(read, null, p, now, size, profile, ct))
                await outputs[k++ % outputs.Length].WriteAsync(batch, ct);
            foreach (var output in outputs) output.Complete();
        }
        catch (Exception e)
        {
            foreach (var output in outputs) output.TryComplete(e);
        }
    }

    private readonly record struct HoldClaim(Guid Id, long Version, NpgsqlTid Tid, string Status, long Charged);

    private sealed record RatedLine(Guid Id, Candidate Lease, DateTime StartedAt, Metered Metered, PricedLine Priced);

    /// <summary>A chunk of leases metered and priced: its invoice lines, how each hold is claimed, and what each lease settles.</summary>
    private sealed record RatedChunk(List<Candidate> Leases, List<RatedLine> Lines, List<HoldClaim> Holds, List<LeaseToSettle> Settle);

    /// <summary>Meters and prices a batch (pure: no database).</summary>
    private static RatedChunk Rate(BillingPeriod p, List<Candidate> batch, int feeBp)
    {
        var lines = new List<RatedLine>(batch.Count);
        var settle = new List<LeaseToSettle>(batch.Count);
        var holds = new List<HoldClaim>(batch.Count);
        foreach (var lease in batch)
        {
            if (lease.StartedAt is not { } startedAt)
            {
                // Never ran: no usage, no invoice line; the whole hold goes back.
                settle.Add(new LeaseToSettle(lease.RenterOrgId, lease.ProviderOrgId, lease.Currency, lease.HoldAmount, null));
                holds.Add(new HoldClaim(lease.HoldId, lease.HoldVersion, lease.HoldTid, "voided", 0));
                continue;
            }
            var metered = Metering.Meter(new LeaseUsage(lease.StartAt, lease.EndAt, startedAt, lease.EndedAt, lease.EndStatus, lease.EndCause,
                lease.Interruptible, lease.SlaLevel, lease.Downtime));
            var priced = Settlement.Price(lease.PricePerHour, lease.AcceleratorCount, metered, feeBp, lease.HoldAmount);
            settle.Add(new LeaseToSettle(lease.RenterOrgId, lease.ProviderOrgId, lease.Currency, lease.HoldAmount, priced));
            holds.Add(new HoldClaim(lease.HoldId, lease.HoldVersion, lease.HoldTid, priced.Amount > 0 ? "posted" : "voided", priced.Amount - priced.SlaCredit));
            lines.Add(new RatedLine(NewId.NextSequentialGuid(), lease, startedAt, metered, priced));
        }
        return new RatedChunk(batch, lines, holds, settle);
    }

    /// <summary>
    /// Writes a chunk into the open batch: drafts, holds claimed and settled, invoice lines. False if a hold changed since
    /// it was read (the caller rolls the batch back and reads its leases again).
    /// </summary>
    private static async Task<bool> WriteChunkAsync(OpenBatch open, BillingPeriod p, RatedChunk batch, PeriodDrafts invoiceIds,
        PeriodDrafts statementIds, BillingRunHooks hooks, RunProfile profile, CancellationToken ct)
    {
        var tx = open.Tx;
        var t = Stopwatch.GetTimestamp();
        await invoiceIds.EnsureAsync(batch.Lines.Select(l => (l.Lease.RenterOrgId, l.Lease.Currency)), p.Name, ct);
        await statementIds.EnsureAsync(batch.Lines.Select(l => (l.Lease.ProviderOrgId, l.Lease.Currency)), p.Name, ct);
        t = profile.Lap("draft invoices and statements", t);
        var (lines, holds) = (batch.Lines, batch.Holds);

        // Claim and settle the holds in one write, guarded by the version read with the chunk (xmin): a hold that an
        // extension or a void changed since (or settled already) is not claimed, and then nothing of the batch is kept.
        // No row is locked while the chunk is rated; the claim itself locks, and a concurrent writer waits for it. Each
        // hold names the journal transaction the batch will post when it commits.
        if (hooks.BeforeClaim is { } beforeClaim) await beforeClaim([.. batch.Leases.Select(l => l.LeaseId)], ct);
        // Each hold is found where the read saw it (its tuple id, ctid: one TID fetch, no index descent; 40 % less than a
        // primary-key probe per hold), and claimed only if that tuple is still the same hold in the same version. A hold
        // updated since has moved to a new tuple (the old one is no longer visible, or fails the version check), so it
        // is not claimed and the batch is read again. The arrays go through scalar subqueries on purpose: given the
        // arrays themselves, the planner knows their length and may hash-join a sequential scan of the whole holds
        // table instead; a subquery's result gets unnest's default estimate of ten rows, and the nested loop of fetches.
        // The tuple ids go as text (Npgsql writes no tid arrays), formatted here: read as tids, they take no string each
        // while their chunk waits to be written.
        var claimed = await tx.Connection.ExecuteAsync(new CommandDefinition("""
            UPDATE holds h SET status = x.status, charged = x.charged, settled_at = @now, settled_by = @settledBy
            FROM unnest((SELECT @tids), (SELECT @ids), (SELECT @versions), (SELECT @statuses), (SELECT @charged)) AS x(tid, id, version, status, charged)
            WHERE h.ctid = x.tid::tid AND h.id = x.id AND h.status = 'pending' AND h.xmin::text::bigint = x.version
            """, new
            {
                now = tx.Now, settledBy = open.JournalId, tids = holds.Select(h => $"({h.Tid.BlockNumber},{h.Tid.OffsetNumber})").ToArray(),
                ids = holds.Select(h => h.Id).ToArray(), versions = holds.Select(h => h.Version).ToArray(),
                statuses = holds.Select(h => h.Status).ToArray(), charged = holds.Select(h => h.Charged).ToArray(),
            }, tx.Transaction, cancellationToken: ct));
        if (claimed != holds.Count) return false;
        t = profile.Lap("claim and settle holds", t);

        // Straight into the table: a lease is in at most one batch (its hold is claimed above), and a line that
        // exists already fails the batch on invoice_lines' primary key (its lease), loudly.
        await using (var w = await tx.Connection.BeginBinaryImportAsync("""
            COPY invoice_lines (id, invoice_id, statement_id, lease_id, provider_org_id, accelerator_model, accelerator_count,
                                started_at, ended_at, seconds, unit_price, amount, platform_fee, currency, downtime_seconds,
                                availability_ppm, sla_level, sla_credit_bp, sla_credit, end_status, end_cause) FROM STDIN (FORMAT BINARY)
            """, ct))
        {
            // Synchronous writes into the importer's buffer (it sends when full): 21 values a line, so async writes were
            // 2.1 million awaited calls for 100 000 lines.
            foreach (var l in lines)
            {
                w.StartRow();
                w.Write(l.Id, NpgsqlDbType.Uuid);
                w.Write(invoiceIds[(l.Lease.RenterOrgId, l.Lease.Currency)], NpgsqlDbType.Uuid);
                w.Write(statementIds[(l.Lease.ProviderOrgId, l.Lease.Currency)], NpgsqlDbType.Uuid);
                w.Write(l.Lease.LeaseId, NpgsqlDbType.Uuid);
                w.Write(l.Lease.ProviderOrgId, NpgsqlDbType.Uuid);
                w.Write(l.Lease.AcceleratorModel, NpgsqlDbType.Text);
                w.Write(l.Lease.AcceleratorCount, NpgsqlDbType.Integer);
                w.Write(l.StartedAt, NpgsqlDbType.TimestampTz);
                w.Write(l.Lease.EndedAt, NpgsqlDbType.TimestampTz);
                w.Write(l.Metered.BilledSeconds, NpgsqlDbType.Bigint);
                w.Write(l.Lease.PricePerHour, NpgsqlDbType.Bigint);
                w.Write(l.Priced.Amount, NpgsqlDbType.Bigint);
                w.Write(l.Priced.PlatformFee, NpgsqlDbType.Bigint);
                w.Write(l.Lease.Currency, NpgsqlDbType.Char);
                w.Write(l.Metered.DowntimeSeconds, NpgsqlDbType.Bigint);
                w.Write(l.Metered.AvailabilityPpm, NpgsqlDbType.Integer);
                w.Write(l.Metered.SlaLevel, NpgsqlDbType.Text);
                w.Write(l.Priced.SlaCreditBasisPoints, NpgsqlDbType.Integer);
                w.Write(l.Priced.SlaCredit, NpgsqlDbType.Bigint);
                WriteNullable(w, l.Lease.EndStatus);
                WriteNullable(w, l.Lease.EndCause);
            }
            await w.CompleteAsync(ct);
        }
        profile.Lap("invoice lines insert", t);
        return true;
    }

    private static void WriteNullable(NpgsqlBinaryImporter w, string? value)
    {
        if (value is null) w.WriteNull();
        else w.Write(value, NpgsqlDbType.Text);
    }

    /// <summary>
    /// Pending holds of leases whose usage ended in the period (and before the run began), in lease order, with each hold's
    /// version (xmin) and the lease's downtime intervals (one index range per lease; the three arrays of one aggregate
    /// level see the rows in the same order, and metering sorts the intervals itself), streamed in batches of
    /// <paramref name="size"/>; only the leases in <paramref name="ids"/> when given (a batch read again).
    /// </summary>
    private static async IAsyncEnumerable<List<Candidate>> CandidatesAsync(NpgsqlConnection read, Guid[]? ids, BillingPeriod p, DateTimeOffset now,
        int size, RunProfile profile, [System.Runtime.CompilerServices.EnumeratorCancellation] CancellationToken ct)
    {
        var t = Stopwatch.GetTimestamp();
        // The plan's estimated cost (one index range per lease) makes PostgreSQL JIT-compile it with inlining and
        // optimization, which costs more than it saves on a read that is index lookups (measured: 2.0 s vs 1.5 s for the
        // 100 000-lease benchmark period).
        // The renter order is a sort of the whole period: with the default work_mem (4 MB) it spilled to disk (an external
        // merge of 20 MB for 100 000 leases); in memory it is a quicksort.
        // The downtime of each lease is one range of its primary key: a plain index scan, not a bitmap (10 % less for the read).
        // The settings last as long as the read's transaction (the pool does not reset a connection handed back to it).
        await using var readTx = await read.BeginTransactionAsync(ct);
        await using (var settings = new NpgsqlCommand("SET LOCAL jit = off; SET LOCAL work_mem = '64MB'; SET LOCAL enable_bitmapscan = off", read, readTx))
            await settings.ExecuteNonQueryAsync(ct);
        await using var cmd = new NpgsqlCommand($"""
            SELECT l.lease_id, l.renter_org_id, l.provider_org_id, l.accelerator_model, l.accelerator_count, l.start_at, l.end_at,
                   l.price_per_hour, l.currency::text, l.interruptible, l.sla_level, u.started_at, u.ended_at, u.end_status, u.end_cause,
                   h.id, h.amount, h.xmin::text::bigint, h.ctid, d.starts, d.ends, d.causes
            FROM holds h JOIN usage u USING (lease_id) JOIN leases l USING (lease_id)
                 LEFT JOIN LATERAL (SELECT array_agg(x.started_at) AS starts, array_agg(x.ended_at) AS ends, string_agg(x.cause, chr(31)) AS causes,
                                           count(*) FILTER (WHERE x.cause <> '') AS interruptions, count(x.ended_at) AS resumes
                                    FROM downtime x WHERE x.lease_id = h.lease_id) d ON true
            WHERE h.status = 'pending' AND u.ended_at >= @from AND u.ended_at < @to AND u.ended_at <= @now AND {Ran}
              AND {DowntimeArrived("d.interruptions", "d.resumes")}
              {(ids is null ? "" : "AND h.lease_id = ANY(@ids)")}
            ORDER BY h.renter_org_id, h.lease_id
            """, read, readTx);
        cmd.Parameters.AddWithValue("from", p.From);
        cmd.Parameters.AddWithValue("to", p.To);
        cmd.Parameters.AddWithValue("now", now);
        if (ids is not null) cmd.Parameters.AddWithValue("ids", ids);
        await using var r = await cmd.ExecuteReaderAsync(ct);
        var batch = new List<Candidate>(size);
        var texts = new Texts();
        while (await r.ReadAsync(ct))
        {
            IReadOnlyList<DowntimeInterval> downtime = [];
            if (!r.IsDBNull(19))
            {
                var starts = r.GetFieldValue<DateTime[]>(19);
                var ends = r.GetFieldValue<DateTime?[]>(20);
                downtime = new DowntimeColumns(starts, ends, texts.Split(r, 21, starts.Length));
            }
            batch.Add(new Candidate(r.GetGuid(0), r.GetGuid(1), r.GetGuid(2), texts.Get(r, 3)!, r.GetInt32(4), r.GetDateTime(5), r.GetDateTime(6),
                r.GetInt64(7), texts.Get(r, 8)!, r.GetBoolean(9), texts.Get(r, 10)!, r.IsDBNull(11) ? null : r.GetDateTime(11),
                r.GetDateTime(12), texts.Get(r, 13), texts.Get(r, 14), r.GetGuid(15),
                r.GetInt64(16), r.GetInt64(17), r.GetFieldValue<NpgsqlTid>(18), downtime));
            if (batch.Count < size) continue;
            profile.Lap("read leases and downtime (streamed)", t);
            yield return batch;
            t = Stopwatch.GetTimestamp();
            batch = new List<Candidate>(size);
        }
        profile.Lap("read leases and downtime (streamed)", t);
        await r.CloseAsync();
        await readTx.CommitAsync(ct);
        if (batch.Count > 0) yield return batch;
    }

    /// <summary>
    /// A lease's downtime as the read returns it, three arrays in the same order, seen as intervals without copying them:
    /// no object per interval (900 000 of them in the benchmark period, all alive until their chunk is written).
    /// </summary>
    private sealed class DowntimeColumns(DateTime[] starts, DateTime?[] ends, string[] causes) : IReadOnlyList<DowntimeInterval>
    {
        public int Count => starts.Length;
        public DowntimeInterval this[int index] => new(starts[index], ends[index], causes[index]);
        public IEnumerator<DowntimeInterval> GetEnumerator() { for (var i = 0; i < Count; i++) yield return this[i]; }
        System.Collections.IEnumerator System.Collections.IEnumerable.GetEnumerator() => GetEnumerator();
    }

    /// <summary>
    /// The read's short texts (models, currencies, SLA levels, end statuses and causes, downtime causes): a few distinct
    /// values, each allocated once per read, where reading them as strings would allocate one per row (and per downtime
    /// interval: 900 000 for the benchmark period), all alive until their chunk is written. A lease's downtime causes come
    /// as one text, joined by the unit separator (U+001F), which no cause contains.
    /// </summary>
    private sealed class Texts
    {
        private readonly Dictionary<string, string> _known = [];
        private byte[] _bytes = new byte[256];
        private char[] _chars = new char[256];

        public string? Get(NpgsqlDataReader r, int ordinal) => r.IsDBNull(ordinal) ? null : Known(Read(r, ordinal));

        public string[] Split(NpgsqlDataReader r, int ordinal, int count)
        {
            var text = Read(r, ordinal);
            if (text.Count(CauseSeparator) + 1 != count)
                throw new InvalidOperationException($"A lease's downtime has {count} intervals but {text.Count(CauseSeparator) + 1} causes: a cause contains U+001F.");
            var parts = new string[count];
            var i = 0;
            foreach (var range in text.Split(CauseSeparator)) parts[i++] = Known(text[range]);
            return parts;
        }

        /// <summary>The column's text decoded into a buffer of this reader (valid until the next read).</summary>
        private ReadOnlySpan<char> Read(NpgsqlDataReader r, int ordinal)
        {
            var length = (int)r.GetBytes(ordinal, 0, null, 0, 0);
            if (length > _bytes.Length) (_bytes, _chars) = (new byte[length * 2], new char[length * 2]);
            var read = (int)r.GetBytes(ordinal, 0, _bytes, 0, length);
            return _chars.AsSpan(0, System.Text.Encoding.UTF8.GetChars(_bytes.AsSpan(0, read), _chars));
        }

        private string Known(ReadOnlySpan<char> text)
        {
            var lookup = _known.GetAlternateLookup<ReadOnlySpan<char>>();
            if (!lookup.TryGetValue(text, out var known)) _known.Add(known = text.ToString(), known);
            return known;
        }
    }

    /// <summary>
    /// The period's open (draft) invoices or its statements per (org, currency), created where missing and remembered for
    /// the rest of the run: each org is looked up once per run, not once per batch. They are created in a short
    /// transaction of their own, committed before the lines that go to them are written: the writers of a run then never
    /// wait for each other's open batch (two chunks may share the renter at their border, and every chunk shares the
    /// providers). A batch that rolls back leaves its drafts empty; the run that resumes fills them, and the end of the
    /// run finalizes whatever is a draft.
    /// </summary>
    private sealed class PeriodDrafts(Db db, string table, string orgColumn)
    {
        private readonly System.Collections.Concurrent.ConcurrentDictionary<(Guid, string), Guid> _ids = [];

        public Guid this[(Guid Org, string Currency) key] => _ids[key];

        public async Task EnsureAsync(IEnumerable<(Guid Org, string Currency)> keys, string period, CancellationToken ct)
        {
            var missing = keys.Where(k => !_ids.ContainsKey(k)).Distinct().ToList();
            if (missing.Count == 0) return;
            var conflict = table == "invoices" ? "(renter_org_id, period, currency) WHERE status = 'draft'" : "(provider_org_id, period, currency)";
            var totals = table == "invoices" ? "total" : "gross, platform_fee, net";
            var zeros = table == "invoices" ? "0" : "0, 0, 0";
            var orgs = missing.Select(k => k.Org).ToArray();
            var currencies = missing.Select(k => k.Currency).ToArray();
            await using var tx = await db.BeginAsync(ct);
            // Created here in the common case (RETURNING gives their ids); only those another writer, another run or a
            // booking created before are looked up after. Inserted in (org, currency) order, so two writers creating
            // the same drafts wait for each other in one order and never deadlock.
            var created = await tx.Connection.QueryAsync<(Guid Id, Guid Org, string Currency)>(new CommandDefinition($"""
                INSERT INTO {table} (id, {orgColumn}, period, currency, created_at, {totals})
                SELECT id, org, @period, currency, @now, {zeros} FROM unnest(@ids, @orgs, @currencies) AS k(id, org, currency)
                ORDER BY org, currency
                ON CONFLICT {conflict} DO NOTHING
                RETURNING id, {orgColumn}, currency
                """, new { ids = missing.Select(_ => NewId.NextSequentialGuid()).ToArray(), orgs, currencies, period, now = tx.Now },
                tx.Transaction, cancellationToken: ct));
            var found = created.ToDictionary(r => (r.Org, r.Currency.Trim()), r => r.Id);
            var existing = missing.Where(k => !found.ContainsKey(k)).ToList();
            if (existing.Count > 0)
            {
                var draft = table == "invoices" ? "AND t.status = 'draft'" : "";
                var rows = await tx.Connection.QueryAsync<(Guid Id, Guid Org, string Currency)>(new CommandDefinition($"""
                    SELECT t.id, t.{orgColumn}, t.currency FROM {table} t JOIN unnest(@orgs, @currencies) AS k(org, currency)
                      ON t.{orgColumn} = k.org AND t.currency = k.currency
                    WHERE t.period = @period {draft}
                    """, new { orgs = existing.Select(k => k.Org).ToArray(), currencies = existing.Select(k => k.Currency).ToArray(), period },
                    tx.Transaction, cancellationToken: ct));
                foreach (var r in rows) found[(r.Org, r.Currency.Trim())] = r.Id;
            }
            await tx.CommitAsync(ct);
            foreach (var (key, id) in found) _ids[key] = id;
        }
    }

    /// <summary>Invoice totals from their lines and the drafts finalized, in one transaction; returns when it began (a timestamp).</summary>
    private async Task<long> FinalizeInvoicesAsync(BillingPeriod p, CancellationToken ct)
    {
        var began = Stopwatch.GetTimestamp();
        await using var tx = await db.BeginAsync(ct);
        await tx.Connection.ExecuteAsync(new CommandDefinition("""
            -- Totals and finalizing in one write per invoice; then any draft without lines is finalized as it is.
            UPDATE invoices i SET subtotal = t.subtotal, sla_credits = t.sla, total = t.subtotal - t.sla, status = 'finalized', finalized_at = @now
            FROM (SELECT l.invoice_id, SUM(l.amount) AS subtotal, SUM(l.sla_credit) AS sla
                  FROM invoice_lines l JOIN invoices d ON d.id = l.invoice_id
                  WHERE d.period = @Name AND d.status = 'draft' GROUP BY l.invoice_id) t
            WHERE i.id = t.invoice_id;
            UPDATE invoices SET status = 'finalized', finalized_at = @now WHERE period = @Name AND status = 'draft';
            """, new { p.Name, now = tx.Now }, tx.Transaction, cancellationToken: ct));
        await tx.CommitAsync(ct);
        return began;
    }

    /// <summary>
    /// Statements recomputed from the lines of the period's invoices (draft or final: the lines are the same), and what a
    /// statement still owes queued as its next payout, in one transaction; returns when it began (a timestamp).
    /// </summary>
    private async Task<long> QueuePayoutsAsync(BillingPeriod p, CancellationToken ct)
    {
        var began = Stopwatch.GetTimestamp();
        await using var tx = await db.BeginAsync(ct);
        await tx.Connection.ExecuteAsync(new CommandDefinition("""
            UPDATE statements s SET gross = t.gross, platform_fee = t.fee, sla_credits = t.sla, net = t.gross - t.fee - t.sla, updated_at = @now
            FROM (SELECT l.statement_id, SUM(l.amount) AS gross, SUM(l.platform_fee) AS fee, SUM(l.sla_credit) AS sla
                  FROM invoice_lines l JOIN invoices i ON i.id = l.invoice_id
                  WHERE i.period = @Name GROUP BY l.statement_id) t
            WHERE t.statement_id = s.id AND (s.gross, s.platform_fee, s.sla_credits) IS DISTINCT FROM (t.gross, t.fee, t.sla);
            -- What a statement still owes becomes the next payout (one per run that added to it): to the provider's payout
            -- account if Stripe says it can receive payouts, else held with the reason (a later run sends it).
            INSERT INTO payouts (id, statement_id, sequence, amount, currency, destination, status, held_reason, created_at)
            SELECT gen_random_uuid(), s.id, COALESCE(MAX(po.sequence) + 1, 0), s.net - COALESCE(SUM(po.amount), 0), s.currency,
                   CASE WHEN a.payouts_enabled THEN a.stripe_account_id END,
                   CASE WHEN a.payouts_enabled THEN 'pending' ELSE 'held' END,
                   CASE WHEN a.id IS NULL THEN @noAccount WHEN NOT a.payouts_enabled THEN @notEnabled END, @now
            FROM statements s LEFT JOIN payouts po ON po.statement_id = s.id
                 LEFT JOIN payout_accounts a ON a.provider_org_id = s.provider_org_id
            WHERE s.period = @Name
            GROUP BY s.id, a.id
            HAVING s.net - COALESCE(SUM(po.amount), 0) > 0;
            """, new { p.Name, now = tx.Now, noAccount = HeldNoAccount, notEnabled = HeldNotEnabled }, tx.Transaction, cancellationToken: ct));
        await tx.CommitAsync(ct);
        return began;
    }

    private async Task CompleteAsync(BillingPeriod p, CancellationToken ct)
    {
        await using var tx = await db.BeginAsync(ct);
        await tx.Connection.ExecuteAsync(new CommandDefinition(
            "UPDATE billing_runs SET state = 'completed', completed_at = @now WHERE period = @Name",
            new { p.Name, now = tx.Now }, tx.Transaction, cancellationToken: ct));
        await tx.CommitAsync(ct);
    }

    public const string HeldNoAccount =
        "The provider has no payout account yet: create one with POST /v1/payout-accounts and finish onboarding at Stripe; the next billing run pays it.";
    public const string HeldNotEnabled =
        "The provider's payout account cannot receive payouts yet (Stripe onboarding is not complete); the next billing run after Stripe enables it pays it.";

    /// <summary>
    /// Sends every pending payout (of any period: held ones wait for their provider's account) as a Stripe Transfer, outside any transaction (no lock held across
    /// the network). The idempotency key comes from the statement, so a retry or a resumed run gets the same transfer.
    /// </summary>
    private async Task<bool> PayOutAsync(CancellationToken ct)
    {
        List<PendingPayout> pending;
        await using (var select = await db.BeginAsync(ct))
        {
            // Payouts of any period follow their provider's account: held ones go out once it can receive payouts, and
            // unsent ones wait again if it no longer can (Stripe would refuse the transfer).
            await select.Connection.ExecuteAsync(new CommandDefinition("""
                UPDATE payouts po SET status = 'pending', destination = a.stripe_account_id, held_reason = NULL
                FROM statements s JOIN payout_accounts a ON a.provider_org_id = s.provider_org_id
                WHERE po.statement_id = s.id AND po.status = 'held' AND a.payouts_enabled;
                UPDATE payouts po SET status = 'held', held_reason = r.reason
                FROM statements s LEFT JOIN payout_accounts a ON a.provider_org_id = s.provider_org_id,
                     LATERAL (SELECT CASE WHEN a.id IS NULL THEN @noAccount ELSE @notEnabled END AS reason) r
                WHERE po.statement_id = s.id AND po.status IN ('pending', 'held') AND NOT COALESCE(a.payouts_enabled, false)
                  AND (po.status, po.held_reason) IS DISTINCT FROM ('held', r.reason);
                """, new { noAccount = HeldNoAccount, notEnabled = HeldNotEnabled }, select.Transaction, cancellationToken: ct));
            pending = (await select.Connection.QueryAsync<PendingPayout>(new CommandDefinition("""
                SELECT po.id, po.statement_id, po.sequence, po.amount, po.currency, po.destination, s.provider_org_id
                FROM payouts po JOIN statements s ON s.id = po.statement_id
                WHERE po.status = 'pending' ORDER BY po.created_at, po.id
                """, transaction: select.Transaction, cancellationToken: ct))).ToList();
            await select.CommitAsync(ct);
        }
        var results = new (PendingPayout Payout, string? TransferId, string? Error)[pending.Count];
        // Transfers are independent; a few at a time keep a large run from waiting on one HTTP round trip after another.
        await Parallel.ForEachAsync(Enumerable.Range(0, pending.Count), new ParallelOptions { MaxDegreeOfParallelism = 8, CancellationToken = ct },
            async (i, token) => results[i] = await TransferAsync(pending[i], token));

        var allPaid = results.All(r => r.TransferId is not null);
        if (results.Length == 0) return allPaid;
        await using var tx = await db.BeginAsync(ct);
        var paid = results.Where(r => r.TransferId is not null).ToList();
        var newlyPaid = (await tx.Connection.QueryAsync<Guid>(new CommandDefinition("""
            UPDATE payouts po SET status = 'paid', transfer_id = x.transfer_id, paid_at = @now, last_error = NULL
            FROM unnest(@ids, @transfers) AS x(id, transfer_id) WHERE po.id = x.id AND po.status = 'pending'
            RETURNING po.id
            """, new { ids = paid.Select(r => r.Payout.Id).ToArray(), transfers = paid.Select(r => r.TransferId!).ToArray(), now = tx.Now },
            tx.Transaction, cancellationToken: ct))).ToHashSet();
        await LedgerStore.PostManyAsync(tx, paid.Where(r => newlyPaid.Contains(r.Payout.Id)).Select(r => LedgerTransaction.Transfer(
            $"payout:{r.Payout.Id}", "payout", Accounts.ProviderPayable(r.Payout.ProviderOrgId), Accounts.PayoutsClearing,
            r.Payout.Currency, r.Payout.Amount)).ToList(), ct);
        var failed = results.Where(r => r.Error is not null).ToList();
        await tx.Connection.ExecuteAsync(new CommandDefinition("""
            UPDATE payouts po SET last_error = x.error FROM unnest(@ids, @errors) AS x(id, error) WHERE po.id = x.id
            """, new { ids = failed.Select(r => r.Payout.Id).ToArray(), errors = failed.Select(r => r.Error!).ToArray() },
            tx.Transaction, cancellationToken: ct));
        await tx.CommitAsync(ct);
        return allPaid;
    }

    private async Task<(PendingPayout, string?, string?)> TransferAsync(PendingPayout payout, CancellationToken ct)
    {
        try
        {
            var transfer = await new TransferService(stripe).CreateAsync(new TransferCreateOptions
            {
                Amount = payout.Amount,
                Currency = payout.Currency.ToLowerInvariant(),
                Destination = payout.Destination,
                TransferGroup = $"statement_{payout.StatementId:N}",
                Metadata = new Dictionary<string, string> { ["payout_id"] = payout.Id.ToString(), ["statement_id"] = payout.StatementId.ToString() },
            }, new RequestOptions { IdempotencyKey = $"payout:{payout.StatementId}:{payout.Sequence}" }, ct);
            return (payout, transfer.Id, null);
        }
        catch (StripeException ex)
        {
            logger.LogWarning(ex, "Stripe refused payout {Payout}; it stays pending for the next run", payout.Id);
            return (payout, null, ex.Message);
        }
    }
}
