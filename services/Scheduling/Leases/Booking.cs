using Dapper;
using Marketplace.Scheduling.Domain;
using Marketplace.ServiceDefaults.Data;
using Npgsql;

namespace Marketplace.Scheduling.Leases;

/// <summary>A lease as it is inserted when a match is placed.</summary>
internal sealed record NewLease(
    Guid Id, Guid OrderId, Guid MatchId, Guid RenterOrgId, Guid ProviderOrgId, string AcceleratorModel, int AcceleratorCount,
    DateTimeOffset StartAt, DateTimeOffset EndAt, long PriceAmount, string PriceCurrency, DateTimeOffset CreatedAt)
{
    public bool Interruptible { get; init; }
    public int PreemptionNoticeSeconds { get; init; }
    public string SlaLevel { get; init; } = "standard";

    /// <summary>The matched offer and what it sold: its nodes, and its slots when it is part of them (else null).</summary>
    public Guid? OfferId { get; init; }
    public Guid[]? OfferedNodeIds { get; init; }
    public Guid[]? OfferedSlotIds { get; init; }
    public bool VerifiedOnly { get; init; }
}

/// <summary>
/// Reading candidate nodes and writing a lease with its bookings. The exclusion constraint on bookings is the final
/// arbiter between concurrent placements: the loser gets SQLSTATE 23P01 (<see cref="PostgresErrorCodes.ExclusionViolation"/>).
/// </summary>
internal static class Booking
{
    /// <summary>
    /// How much earlier than a lease's preemption a displacing lease may start and still take its slots. Bidding sells
    /// the capacity again from its decision time + the notice; PreemptionRequested.At is stamped a little later in the
    /// same transaction, so the notice Scheduling computes ends a few milliseconds after the displacing lease starts.
    /// </summary>
    public static readonly TimeSpan NoticeTolerance = TimeSpan.FromSeconds(5);

    /// <summary>
    /// SQL: booking b belongs to a running lease under preemption notice that ends (at preempt_at) within the tolerance
    /// after @yieldFrom, so it yields to a placement starting at @yieldFrom (null: nothing yields).
    /// </summary>
    private const string Yields = """
        (@yieldFrom::timestamptz IS NOT NULL AND upper(b.during) <= @yieldFrom::timestamptz + @tolerance::interval
         AND EXISTS (SELECT 1 FROM leases l WHERE l.id = b.lease_id AND l.preempt_at = upper(b.during)
                     AND l.status IN ('scheduled', 'provisioning', 'active')))
        """;

    /// <summary>
    /// Every slot of the given nodes with whether it is booked in [start, end), grouped per node with its topology and
    /// health. With <paramref name="yieldToNotice"/>, a booking that ends at its lease's preemption within
    /// <see cref="NoticeTolerance"/> after <paramref name="start"/> counts as free (see <see cref="YieldAsync"/>).
    /// </summary>
    public static async Task<IReadOnlyList<CandidateNode>> CandidatesAsync(
        NpgsqlConnection connection, NpgsqlTransaction? transaction, Guid[] nodeIds, DateTimeOffset start, DateTimeOffset end, CancellationToken ct,
        bool yieldToNotice = false)
    {
        var rows = await connection.QueryAsync<CandidateRow>(new CommandDefinition($$"""
            SELECT n.id AS node_id, n.cluster_id, n.nvlink_domain, n.fabric, n.health = 'healthy' AS healthy, n.verified,
                   EXISTS (SELECT 1 FROM node_maintenance m
                           WHERE m.node_id = n.id AND m.cancelled_at IS NULL AND m.during && tstzrange(@start, @end, '[)')) AS in_maintenance,
                   s.id AS slot_id, s.index,
                   EXISTS (SELECT 1 FROM bookings b
                           WHERE b.slot_id = s.id AND b.during && tstzrange(@start, @end, '[)') AND NOT {{Yields}}) AS busy
            FROM nodes n JOIN gpu_slots s ON s.node_id = n.id
            WHERE n.id = ANY(@nodeIds)
            ORDER BY n.id, s.index
            """, new { nodeIds, start, end, yieldFrom = yieldToNotice ? start : (DateTimeOffset?)null, tolerance = NoticeTolerance },
            transaction, cancellationToken: ct));
        return rows.GroupBy(r => r.NodeId).Select(g =>
        {
            var n = g.First();
            return new CandidateNode(n.NodeId, n.ClusterId, n.NvlinkDomain, n.Fabric,
                g.Select(r => new SlotState(r.SlotId, r.NodeId, r.Index, r.Busy)).ToList(), n.Healthy, n.Verified, n.InMaintenance);
        }).ToList();
    }

    /// <summary>Whether any of the slots is booked in [start, end) by a booking that does not yield to a placement starting at start.</summary>
    public static Task<bool> AnyBookedAsync(
        NpgsqlConnection connection, NpgsqlTransaction transaction, Guid[] slotIds, DateTimeOffset start, DateTimeOffset end, CancellationToken ct) =>
        connection.ExecuteScalarAsync<bool>(new CommandDefinition($$"""
            SELECT EXISTS (SELECT 1 FROM bookings b
                           WHERE b.slot_id = ANY(@slotIds) AND b.during && tstzrange(@start, @end, '[)') AND NOT {{Yields}})
            """, new { slotIds, start, end, yieldFrom = (DateTimeOffset?)start, tolerance = NoticeTolerance }, transaction, cancellationToken: ct));

    /// <summary>
    /// Leases under notice that still hold some of the slots at <paramref name="start"/> end there instead (a few
    /// milliseconds earlier than their preempt_at; see <see cref="NoticeTolerance"/>): their bookings and preempt_at move
    /// to <paramref name="start"/>. Their rows are locked first, in id order, as every lease transition locks them.
    /// </summary>
    public static async Task YieldAsync(Tx tx, Guid[] slotIds, DateTimeOffset start, DateTimeOffset end, CancellationToken ct)
    {
        var args = new { slotIds, start, end, yieldFrom = (DateTimeOffset?)start, tolerance = NoticeTolerance };
        var leaseIds = (await tx.Connection.QueryAsync<Guid>(new CommandDefinition($$"""
            SELECT DISTINCT b.lease_id FROM bookings b
            WHERE b.slot_id = ANY(@slotIds) AND b.during && tstzrange(@start, @end, '[)') AND {{Yields}}
            ORDER BY b.lease_id
            """, args, tx.Transaction, cancellationToken: ct))).ToArray();
        if (leaseIds.Length == 0) return;
        await tx.Connection.ExecuteAsync(new CommandDefinition("""
            SELECT id FROM leases WHERE id = ANY(@leaseIds) ORDER BY id FOR UPDATE;
            UPDATE bookings SET during = tstzrange(lower(during), greatest(lower(during), least(upper(during), @start)), '[)')
            WHERE lease_id = ANY(@leaseIds) AND NOT released AND upper(during) > @start;
            UPDATE leases SET preempt_at = @start WHERE id = ANY(@leaseIds) AND preempt_at > @start;
            """, new { leaseIds, start }, tx.Transaction, cancellationToken: ct));
    }

    public static async Task InsertAsync(
        NpgsqlConnection connection, NpgsqlTransaction transaction, NewLease lease, IEnumerable<Guid> slotIds, CancellationToken ct)
    {
        await connection.ExecuteAsync(new CommandDefinition("""
            INSERT INTO leases (id, order_id, match_id, renter_org_id, provider_org_id, accelerator_model, accelerator_count,
                                start_at, end_at, price_amount, price_currency, status, created_at,
                                interruptible, preemption_notice_seconds, sla_level,
                                offer_id, offered_node_ids, offered_slot_ids, verified_only)
            VALUES (@Id, @OrderId, @MatchId, @RenterOrgId, @ProviderOrgId, @AcceleratorModel, @AcceleratorCount,
                    @StartAt, @EndAt, @PriceAmount, @PriceCurrency, 'scheduled', @CreatedAt,
                    @Interruptible, @PreemptionNoticeSeconds, @SlaLevel,
                    @OfferId, @OfferedNodeIds, @OfferedSlotIds, @VerifiedOnly)
            """, lease, transaction, cancellationToken: ct));
        await BookAsync(connection, transaction, lease.Id, slotIds, lease.StartAt, lease.EndAt, ct);
    }

    /// <summary>
    /// Books slots for a lease over [start, end); a slot already booked in that time raises 23P01. Rows go in slot order
    /// so two concurrent gangs wait on each other in one order, which keeps deadlocks rare.
    /// </summary>
    public static Task BookAsync(
        NpgsqlConnection connection, NpgsqlTransaction transaction, Guid leaseId, IEnumerable<Guid> slotIds,
        DateTimeOffset start, DateTimeOffset end, CancellationToken ct) =>
        connection.ExecuteAsync(new CommandDefinition("""
            INSERT INTO bookings (lease_id, slot_id, node_id, during)
            SELECT @leaseId, s.slot_id, g.node_id, tstzrange(@start, @end, '[)')
            FROM unnest(@slotIds) AS s(slot_id) LEFT JOIN gpu_slots g ON g.id = s.slot_id ORDER BY s.slot_id
            """, new { leaseId, start, end, slotIds = slotIds.ToArray() }, transaction, cancellationToken: ct));

    private sealed class CandidateRow
    {
        public Guid NodeId { get; init; }
        public Guid ClusterId { get; init; }
        public string? NvlinkDomain { get; init; }
        public string? Fabric { get; init; }
        public bool Healthy { get; init; }
        public bool Verified { get; init; }
        public bool InMaintenance { get; init; }
        public Guid SlotId { get; init; }
        public int Index { get; init; }
        public bool Busy { get; init; }
    }
}

/// <summary>
/// Transaction-scoped advisory locks on slots, taken by placements between choosing slots and booking them: a
/// concurrent placement that chose the same slots either sees them taken (<see cref="TryAsync"/>) or waits for the
/// booking to commit (<see cref="WaitAsync"/>). The keys are hashes, so two slots may rarely share a lock: a false wait, never a wrong booking.
/// </summary>
internal static class SlotLocks
{
    /// <summary>SQL: the arguments of a slot's advisory lock, for a column or variable named slot_id.</summary>
    public const string KeyOfSlotId = "hashtext('scheduling.slot'), hashtext(slot_id::text)";

    /// <summary>Takes the locks that are free right now and returns the slots whose lock another transaction holds.</summary>
    public static async Task<IReadOnlyList<Guid>> TryAsync(Tx tx, Guid[] slotIds, CancellationToken ct) =>
        (await tx.Connection.QueryAsync<Guid>(new CommandDefinition($$"""
            SELECT slot_id FROM unnest(@slotIds) AS s(slot_id)
            WHERE NOT pg_try_advisory_xact_lock({{KeyOfSlotId}})
            """, new { slotIds }, tx.Transaction, cancellationToken: ct))).AsList();

    /// <summary>Waits for every lock, in the order given (callers pass slots sorted, so waiters never deadlock each other).</summary>
    public static Task WaitAsync(Tx tx, Guid[] slotIds, CancellationToken ct) =>
        tx.Connection.ExecuteAsync(new CommandDefinition($$"""
            SELECT pg_advisory_xact_lock({{KeyOfSlotId}}) FROM unnest(@slotIds) AS s(slot_id)
            """, new { slotIds }, tx.Transaction, cancellationToken: ct));
}
