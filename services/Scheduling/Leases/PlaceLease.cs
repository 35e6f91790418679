using System.Globalization;
using Dapper;
using MassTransit;
using Marketplace.Contracts;
using Marketplace.Scheduling.Domain;
using Marketplace.ServiceDefaults.Data;
using Npgsql;

namespace Marketplace.Scheduling.Leases;

/// <summary>
/// Places a match on concrete slots: reads the free slots of the offered nodes without locks, chooses, locks only the
/// chosen slots, re-checks them and books them, and schedules the lease's start and end, all in one transaction with
/// the inbox mark and the outbox event.
/// </summary>
/// <remarks>
/// Concurrency: every placement locks the slots it chose (transaction-scoped advisory locks) before it books them.
/// A slot another placement is booking right now counts as busy and the choice is made again, so concurrent placements
/// on one offer take different slots (still best fit: usually the next slots of the same node) and commit in parallel.
/// Only when every fitting slot is being booked does a placement start over and wait for the locks of its choice, taken
/// in slot order so two waiting placements never deadlock. After locking it re-checks that the slots are still free:
/// anyone who booked them held their locks until commit. The exclusion constraint stays the final arbiter against the
/// paths that book without these locks (replacement, extension); a conflict or a deadlock there starts over on fresh
/// data. After <see cref="MaxAttempts"/> attempts the match fails with a reason and the order goes back to the book.
/// </remarks>
internal sealed class OrderMatchedConsumer(Db db, PlacementBatcher batcher, PlacementPause pause, ILogger<OrderMatchedConsumer> logger)
    : IConsumer<OrderMatched>
{
    public const string ConsumerName = "order-matched";
    private const int MaxAttempts = 5;

    /// <summary>Redeliveries (0.2 + 1 + 3 s) a match blocked by interruptible leases waits for their PreemptionRequested.</summary>
    private const int AwaitPreemptionRetries = 3;
    private const int MaxRounds = 8;

    private enum Outcome { Done, Contended }

    public async Task Consume(ConsumeContext<OrderMatched> context)
    {
        // Usually placed with the other matches in flight, in one transaction; a retry, or a match the batch hands back
        // (a refusal, a slot being booked by someone else, a conflict), goes on below on its own.
        if (context.GetRetryAttempt() == 0 && context.MessageId is { } messageId
            && await batcher.TryPlaceAsync(messageId, context.Message, context.CancellationToken))
            return;
        var wait = false;
        for (var attempt = 1; attempt <= MaxAttempts; attempt++)
        {
            try
            {
                if (await PlaceAsync(context, wait, context.CancellationToken) == Outcome.Done) return;
                wait = true; // every fitting slot was being booked by someone else: queue for them next time
                logger.LogDebug("Placement of match {MatchId} found its slots being booked by others (attempt {Attempt})",
                    context.Message.MatchId, attempt);
            }
            catch (PostgresException e) when (e.SqlState is PostgresErrorCodes.ExclusionViolation or PostgresErrorCodes.DeadlockDetected)
            {
                logger.LogInformation("Placement of match {MatchId} lost a race for its slots ({SqlState}, attempt {Attempt})",
                    context.Message.MatchId, e.SqlState, attempt);
            }
        }
        await FailAsync(context, $"the offered slots were booked by other leases while this order was being placed ({MaxAttempts} attempts); "
            + "the order goes back to the book", context.CancellationToken);
    }

    private async Task<Outcome> PlaceAsync(ConsumeContext<OrderMatched> context, bool wait, CancellationToken ct)
    {
        var m = context.Message;
        await using var tx = await db.BeginAsync(ct);
        var (start, end) = WindowOf(m, tx.Now);
        if (!await tx.FirstDeliveryAsync(context, ConsumerName)) return Outcome.Done;

        var nodeIds = m.NodeIds.Distinct().Order().ToArray();
        var nodes = (await tx.Connection.QueryAsync<KnownNode>(new CommandDefinition(
            "SELECT id, provider_org_id, accelerator_model FROM nodes WHERE id = ANY(@nodeIds)",
            new { nodeIds }, tx.Transaction, cancellationToken: ct))).AsList();
        if (nodes.Count < nodeIds.Length)
        {
            // NodeRegistered and OrderMatched travel on different queues: wait for the copy rather than fail the renter.
            var missing = nodeIds.Except(nodes.Select(n => n.Id));
            throw new NodesNotKnownYetException($"nodes {string.Join(", ", missing)} of match {m.MatchId} are not registered here yet");
        }

        if (m.AcceleratorCount <= 0 || end <= start)
        {
            await RefuseAsync(tx, m, "the match asks for no accelerators or an empty time window", ct);
            return Outcome.Done;
        }
        if (end <= tx.Now)
        {
            // Delayed past its whole window (the broker or this service was down): a booking in the past could never run.
            await RefuseAsync(tx, m, $"its window ended at {Format(end)}, before the match reached the scheduler", ct);
            return Outcome.Done;
        }
        var late = await LateMatch.ReanchorAsync(tx, m, start, end, ct);
        if (late is not null) (start, end) = (late.Start, late.End);
        var eligible = nodes.Where(n => n.ProviderOrgId == m.ProviderOrgId && n.AcceleratorModel == m.AcceleratorModel)
            .Select(n => n.Id).ToArray();
        var request = Request(m);
        var candidates = eligible.Length == 0 ? [] : await Booking.CandidatesAsync(tx.Connection, tx.Transaction, eligible, start, end, ct, yieldToNotice: true);
        await pause.AfterSlotsReadAsync(m, ct);
        var taken = new HashSet<Guid>(); // slots other placements hold locks on: busy for this attempt
        var readAgain = false;
        for (var round = 1; round <= MaxRounds; round++)
        {
            var placement = Placement.Place(taken.Count == 0 ? candidates : MarkBusy(candidates, taken), request);
            if (!placement.Placed)
            {
                if (taken.Count > 0) return Outcome.Contended;
                if (late is not null) // the slots are not free for the re-anchored window: the matched one, as before
                {
                    (start, end, late) = (m.Start.ToUniversalTime(), m.End.ToUniversalTime(), null);
                    candidates = await Booking.CandidatesAsync(tx.Connection, tx.Transaction, eligible, start, end, ct, yieldToNotice: true);
                    continue;
                }
                // A displacing match travels apart from the PreemptionRequested that frees its slots: give it time to arrive.
                if (context.GetRetryAttempt() < AwaitPreemptionRetries
                    && await AwaitsPreemptionAsync(tx, eligible, start, end, ct))
                    throw new PreemptionNotYetKnownException(
                        $"match {m.MatchId}: the offered slots are held by interruptible leases that have had no preemption notice yet");
                if (!readAgain)
                {
                    // The notice may have been given since the slots were read: each statement sees what was committed
                    // before it, so the check above can find a notice the read did not (known issue 13). Read once more,
                    // after the check, so that the slots of a lease under notice yield to this match rather than the match
                    // being refused, going back to the book, and taking the slots again only after that lease ended.
                    readAgain = true;
                    candidates = await Booking.CandidatesAsync(tx.Connection, tx.Transaction, eligible, start, end, ct, yieldToNotice: true);
                    continue;
                }
                await RefuseAsync(tx, m, Explain(placement, m, start, end), ct, slotsBooked: OnlySlotsBooked(placement));
                return Outcome.Done;
            }
            var chosen = placement.Slots.Select(s => s.SlotId).Order().ToArray();
            if (wait)
                await SlotLocks.WaitAsync(tx, chosen, ct);
            else
            {
                var refused = await SlotLocks.TryAsync(tx, chosen, ct);
                if (refused.Count > 0)
                {
                    taken.UnionWith(refused);
                    continue;
                }
            }
            // Whoever booked these slots since our read held their locks until commit: a fresh read now sees it.
            if (await Booking.AnyBookedAsync(tx.Connection, tx.Transaction, chosen, start, end, ct))
            {
                candidates = await Booking.CandidatesAsync(tx.Connection, tx.Transaction, eligible, start, end, ct, yieldToNotice: true);
                continue;
            }
            await Booking.YieldAsync(tx, chosen, start, end, ct);
            await BookAsync(tx, m, start, end, chosen, ct, late?.Note);
            return Outcome.Done;
        }
        return Outcome.Contended;
    }

    /// <summary>Whether interruptible leases without notice hold slots of these nodes in [start, end): a preemption may be on its way.</summary>
    private static Task<bool> AwaitsPreemptionAsync(Tx tx, Guid[] nodeIds, DateTimeOffset start, DateTimeOffset end, CancellationToken ct) =>
        tx.Connection.ExecuteScalarAsync<bool>(new CommandDefinition("""
            SELECT EXISTS (
              SELECT 1 FROM bookings b JOIN gpu_slots s ON s.id = b.slot_id JOIN leases l ON l.id = b.lease_id
              WHERE s.node_id = ANY(@nodeIds) AND b.during && tstzrange(@start, @end, '[)')
                AND l.interruptible AND l.preempt_at IS NULL AND l.status IN ('scheduled', 'provisioning', 'active'))
            """, new { nodeIds, start, end }, tx.Transaction, cancellationToken: ct));

    private static IReadOnlyList<CandidateNode> MarkBusy(IReadOnlyList<CandidateNode> candidates, HashSet<Guid> taken) =>
        candidates.Select(c => c.Slots.Any(s => taken.Contains(s.SlotId))
            ? c with { Slots = c.Slots.Select(s => taken.Contains(s.SlotId) ? s with { Busy = true } : s).ToList() }
            : c).ToList();

    private static async Task BookAsync(Tx tx, OrderMatched m, DateTimeOffset start, DateTimeOffset end, Guid[] slotIds, CancellationToken ct,
        string? note = null)
    {
        var lease = NewLeaseFor(m, start, end, tx.Now);
        await Booking.InsertAsync(tx.Connection, tx.Transaction, lease, slotIds, ct);
        if (note is not null) await LateMatch.NoteAsync(tx, lease.Id, note, ct);
        await tx.ScheduleAsync(LeaseLifecycle.Activate, lease.Id.ToString(), lease.StartAt, ct);
        await tx.ScheduleAsync(LeaseLifecycle.Complete, lease.Id.ToString(), lease.EndAt, ct);
        await tx.PublishAsync(Scheduled(m, lease, slotIds, tx.Now), ct);
        await tx.CommitAsync(ct);
    }

    /// <summary>
    /// The time a match books (here and in <see cref="PlacementBatcher"/>); <paramref name="now"/> is when it is placed. A late
    /// on-demand match (<see cref="LateWindow"/>) is re-anchored by the single path only: the batch hands it back.
    /// </summary>
    internal static (DateTimeOffset Start, DateTimeOffset End) WindowOf(OrderMatched m, DateTimeOffset now) =>
        (m.Start.ToUniversalTime(), m.End.ToUniversalTime());

    /// <summary>The lease a placed match becomes (here and in <see cref="PlacementBatcher"/>).</summary>
    internal static NewLease NewLeaseFor(OrderMatched m, DateTimeOffset start, DateTimeOffset end, DateTimeOffset now) =>
        new(NewId.NextSequentialGuid(), m.OrderId, m.MatchId, m.RenterOrgId, m.ProviderOrgId,
            m.AcceleratorModel, m.AcceleratorCount, start, end, m.PricePerHour.Amount, m.PricePerHour.Currency, now)
        {
            Interruptible = m.Interruptible,
            PreemptionNoticeSeconds = Math.Max(0, m.PreemptionNoticeSeconds),
            SlaLevel = string.IsNullOrWhiteSpace(m.SlaLevel) ? "standard" : m.SlaLevel,
            OfferId = m.OfferId,
            OfferedNodeIds = m.NodeIds.Distinct().Order().ToArray(),
            OfferedSlotIds = m.SlotIds?.Distinct().Order().ToArray(),
            VerifiedOnly = m.VerifiedOnly,
        };

    internal static LeaseScheduled Scheduled(OrderMatched m, NewLease lease, Guid[] slotIds, DateTimeOffset now) =>
        new(lease.Id, m.OrderId, m.MatchId, m.RenterOrgId, m.ProviderOrgId,
            m.AcceleratorModel, m.AcceleratorCount, lease.StartAt, lease.EndAt, m.PricePerHour, slotIds, now)
        {
            Interruptible = lease.Interruptible,
            SlaLevel = lease.SlaLevel,
        };

    private static async Task RefuseAsync(Tx tx, OrderMatched m, string reason, CancellationToken ct, bool slotsBooked = false)
    {
        await tx.PublishAsync(new PlacementFailed(m.MatchId, m.OrderId, reason, tx.Now) { SlotsBooked = slotsBooked }, ct);
        await tx.CommitAsync(ct);
    }

    /// <summary>
    /// Too few of the offered accelerators were free, and no offered node was left out as unhealthy, in maintenance or
    /// unverified (<see cref="PlacementFailed.SlotsBooked"/>): the only refusal that clearing again soon may turn around.
    /// </summary>
    internal static bool OnlySlotsBooked(PlacementResult placement) =>
        placement.Failure == PlacementFailure.NotEnoughFree
        && placement.Excluded is { Unhealthy: 0, InMaintenance: 0, Unverified: 0 };

    private async Task FailAsync(ConsumeContext<OrderMatched> context, string reason, CancellationToken ct)
    {
        await using var tx = await db.BeginAsync(ct);
        if (await tx.FirstDeliveryAsync(context, ConsumerName)) await RefuseAsync(tx, context.Message, reason, ct);
    }

    /// <summary>What the match asks for: its count, on the offer's slots when it is part of its nodes, verified if wished.</summary>
    internal static PlacementRequest Request(OrderMatched m) =>
        new(m.AcceleratorCount, m.VerifiedOnly, AllowedSlots: m.SlotIds is null ? null : m.SlotIds.ToHashSet());

    /// <summary>Why a placement failed, in words the renter can act on: how much was free, and why nodes were left out.</summary>
    internal static string Explain(PlacementResult placement, OrderMatched m, DateTimeOffset start, DateTimeOffset end)
    {
        var where = m.SlotIds is null ? "on the offered nodes" : "on the offered slots";
        var free = placement.Failure == PlacementFailure.Fragmented
            ? $"{placement.FreeCount} {m.AcceleratorModel} slots are free {where} between {Format(start)} and {Format(end)}, "
              + $"but no single cluster fabric holds {m.AcceleratorCount} of them (at most {placement.LargestFabricFree}); a gang never spans two fabrics"
            : $"only {placement.FreeCount} of {m.AcceleratorCount} {m.AcceleratorModel} slots are free {where} between {Format(start)} and {Format(end)}";
        return free + Excluded(placement.Excluded);
    }

    /// <summary>"; of the offered nodes, 1 is unhealthy and 2 are unverified (…)", or nothing when no node was left out (avoided ones are not news).</summary>
    internal static string Excluded(Exclusions e, string of = "of the offered nodes")
    {
        var parts = new List<string>();
        if (e.Unhealthy > 0) parts.Add($"{Are(e.Unhealthy)} unhealthy");
        if (e.InMaintenance > 0) parts.Add($"{Are(e.InMaintenance)} in maintenance then");
        if (e.Unverified > 0) parts.Add($"{Are(e.Unverified)} unverified (the order asks for verified capacity only)");
        return parts.Count switch
        {
            0 => "",
            1 => $"; {of}, {parts[0]}",
            _ => $"; {of}, " + string.Join(", ", parts[..^1]) + " and " + parts[^1],
        };

        static string Are(int n) => n == 1 ? "1 is" : $"{n} are";
    }

    internal static string Format(DateTimeOffset t) => t.UtcDateTime.ToString("yyyy-MM-dd HH:mm:ss'Z'", CultureInfo.InvariantCulture);

    private sealed record KnownNode(Guid Id, Guid ProviderOrgId, string AcceleratorModel);
}

/// <summary>
/// The moment in a placement between reading the slots and deciding on them. Does nothing here; tests let another
/// transaction commit at this point (a preemption notice arriving mid-placement) to make that race deterministic.
/// </summary>
internal class PlacementPause
{
    public virtual Task AfterSlotsReadAsync(OrderMatched match, CancellationToken ct) => Task.CompletedTask;
}

internal sealed class NodesNotKnownYetException(string message) : Exception(message);

internal sealed class PreemptionNotYetKnownException(string message) : Exception(message);

internal sealed class OrderMatchedConsumerDefinition : ConsumerDefinition<OrderMatchedConsumer>
{
    /// <summary>
    /// The matches in flight at once, and so the most that <see cref="PlacementBatcher"/> can place together when a backlog
    /// builds up; waiting for the batch holds no connection, only the matches it hands back take one each.
    /// </summary>
    public OrderMatchedConsumerDefinition() => ConcurrentMessageLimit = 32;

    protected override void ConfigureConsumer(IReceiveEndpointConfigurator endpointConfigurator,
        IConsumerConfigurator<OrderMatchedConsumer> consumerConfigurator, IRegistrationContext context)
    {
        // Longer than the bus default: a node's registration, or the preemption that frees the slots, may still be on its way.
        consumerConfigurator.UseMessageRetry(r =>
        {
            r.Handle<NodesNotKnownYetException>();
            r.Handle<PreemptionNotYetKnownException>();
            r.Intervals(TimeSpan.FromMilliseconds(200), TimeSpan.FromSeconds(1), TimeSpan.FromSeconds(3), TimeSpan.FromSeconds(10), TimeSpan.FromSeconds(30));
        });
    }
}
