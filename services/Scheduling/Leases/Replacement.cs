using Dapper;
using Marketplace.Contracts;
using Marketplace.Scheduling.Agents;
using Marketplace.Scheduling.Domain;
using Marketplace.ServiceDefaults.Data;

namespace Marketplace.Scheduling.Leases;

/// <summary>
/// Moves a lease's slots off a node that can no longer serve it (unhealthy, in maintenance, its agent silent) onto
/// equivalent spare capacity: same provider, same model, same cluster fabric, for the rest of the lease's window; the
/// lease's own offer first, then capacity no other active offer sells (see <see cref="ChooseSpareAsync"/>).
/// The old bookings shrink to the moment of the move and new ones are inserted in the same transaction, so the
/// exclusion constraint arbitrates against any concurrent placement (a loser raises 23P01 and its transaction retries).
/// When nothing equivalent is free, the lease ends as failed with cause provider.
/// </summary>
internal static class Replacement
{
    /// <summary>At activation: replaces booked nodes that went unhealthy or into maintenance; false if the lease ended instead.</summary>
    public static async Task<bool> ReplaceUnusableNodesAsync(Tx tx, LockedLease lease, SchedulingOptions options, CancellationToken ct)
    {
        var from = Max(tx.Now, lease.StartAt);
        var bad = await tx.Connection.QueryAsync<(Guid NodeId, string Why)>(new CommandDefinition("""
            SELECT DISTINCT n.id,
                   CASE WHEN n.health <> 'healthy' THEN 'node ' || n.id || ' is unhealthy (' || coalesce(n.health_reason, 'no reason given') || ')'
                        ELSE 'node ' || n.id || ' is in maintenance' END
            FROM bookings b JOIN gpu_slots s ON s.id = b.slot_id JOIN nodes n ON n.id = s.node_id
            WHERE b.lease_id = @Id AND NOT b.released AND upper(b.during) > @from
              AND (n.health <> 'healthy' OR EXISTS (
                    SELECT 1 FROM node_maintenance m
                    WHERE m.node_id = n.id AND m.cancelled_at IS NULL AND m.during && tstzrange(@from, @EndAt, '[)')))
            ORDER BY n.id
            """, new { lease.Id, from, EndAt = lease.Until }, tx.Transaction, cancellationToken: ct));
        foreach (var (nodeId, why) in bad)
            if (!await MoveOffNodeAsync(tx, lease, nodeId, from, why, options, ct))
                return false;
        return true;
    }

    /// <summary>
    /// Moves the lease's remaining bookings on <paramref name="nodeId"/> elsewhere. A running lease records downtime from
    /// <paramref name="failedAt"/> (LeaseInterrupted) until the replacement runs (LeaseResumed: now, or the agent's
    /// acknowledgement). Returns false when the lease ended as failed instead.
    /// </summary>
    public static async Task<bool> MoveOffNodeAsync(
        Tx tx, LockedLease lease, Guid nodeId, DateTimeOffset failedAt, string reason, SchedulingOptions options, CancellationToken ct)
    {
        var now = tx.Now;
        var from = Max(now, lease.StartAt);
        var running = lease.Status == "active";
        var old = (await tx.Connection.QueryAsync<(long Id, Guid SlotId)>(new CommandDefinition("""
            SELECT b.id, b.slot_id FROM bookings b JOIN gpu_slots s ON s.id = b.slot_id
            WHERE b.lease_id = @Id AND s.node_id = @nodeId AND NOT b.released AND upper(b.during) > @from
            """, new { lease.Id, nodeId, from }, tx.Transaction, cancellationToken: ct))).AsList();
        if (old.Count == 0 || from >= lease.Until) return true;

        var placement = await ChooseSpareAsync(tx, lease, nodeId, old.Count, from, ct);
        // One interruption at a time: a second failure while the lease is already down extends the same downtime.
        var alreadyDown = running && await tx.Connection.ExecuteScalarAsync<bool>(new CommandDefinition(
            "SELECT EXISTS (SELECT 1 FROM lease_downtime WHERE lease_id = @Id AND end_at IS NULL)",
            new { lease.Id }, tx.Transaction, cancellationToken: ct));
        if (running && !alreadyDown)
        {
            var downFrom = Clamp(failedAt, lease.StartedAt ?? lease.StartAt, now);
            await tx.Connection.ExecuteAsync(new CommandDefinition("""
                INSERT INTO lease_downtime (lease_id, node_id, start_at, reason, cause) VALUES (@Id, @nodeId, @downFrom, @reason, 'provider')
                """, new { lease.Id, nodeId, downFrom, reason }, tx.Transaction, cancellationToken: ct));
            await tx.PublishAsync(new LeaseInterrupted(lease.Id, lease.OrderId, reason, "provider", downFrom), ct);
        }

        if (!placement.Placed)
        {
            // EndAsync closes the downtime at the end.
            await LeaseLifecycle.EndAsync(tx, lease, "failed", "provider",
                $"{reason}; no spare {lease.AcceleratorModel} capacity in its cluster fabric could replace its {old.Count} slot(s)"
                + $" from {OrderMatchedConsumer.Format(from)} ({placement.Why})", ct);
            return false;
        }

        var newSlots = placement.Slots.Select(s => s.SlotId).ToArray();
        await tx.Connection.ExecuteAsync(new CommandDefinition("""
            UPDATE bookings
            SET during = tstzrange(lower(during), greatest(lower(during), least(upper(during), @from)), '[)'), released = true
            WHERE id = ANY(@ids)
            """, new { from, ids = old.Select(o => o.Id).ToArray() }, tx.Transaction, cancellationToken: ct));
        await Booking.BookAsync(tx.Connection, tx.Transaction, lease.Id, newSlots, from, lease.Until, ct);
        // Bidding counts a placed match on its accelerators: from now on, these.
        var holding = (await tx.Connection.QueryAsync<Guid>(new CommandDefinition(
            "SELECT DISTINCT slot_id FROM bookings WHERE lease_id = @Id AND NOT released AND upper(during) > @from",
            new { lease.Id, from }, tx.Transaction, cancellationToken: ct))).ToList();
        await tx.PublishAsync(new LeaseSlotsMoved(lease.Id, lease.OrderId, lease.MatchId, holding, from, now), ct);

        var agentsMustStart = options.RequireAgentAck && lease.Status is "active" or "provisioning";
        if (agentsMustStart)
            await Assignments.MoveAsync(tx, lease, nodeId, placement.Slots, options, ct);
        // Without agents the spare capacity counts as running at once; with them, the acknowledgement resumes the lease.
        if (running && !agentsMustStart)
        {
            await tx.Connection.ExecuteAsync(new CommandDefinition(
                "UPDATE lease_downtime SET end_at = @now WHERE lease_id = @Id AND end_at IS NULL",
                new { lease.Id, now }, tx.Transaction, cancellationToken: ct));
            await tx.PublishAsync(new LeaseResumed(lease.Id, lease.OrderId, now), ct);
        }
        return true;
    }

    /// <summary>The replacement's slots, or why there are none.</summary>
    private sealed record Spare(IReadOnlyList<SlotState> Slots, string Why)
    {
        public bool Placed => Slots.Count > 0;
    }

    /// <summary>
    /// Equivalent capacity: the provider's nodes of the same model in the failed node's cluster fabric, never the failed
    /// node or one this lease's agents already failed on, and never a slot another active offer sells during the rest of
    /// the lease. First the free slots of the lease's own offer (the capacity the renter bought from); then the provider's
    /// capacity there that no other active offer sells in [from, end), so a replacement never takes what Bidding is
    /// selling to someone else.
    /// </summary>
    private static async Task<Spare> ChooseSpareAsync(Tx tx, LockedLease lease, Guid nodeId, int count, DateTimeOffset from, CancellationToken ct)
    {
        var candidateIds = (await tx.Connection.QueryAsync<Guid>(new CommandDefinition("""
            SELECT c.id FROM nodes f JOIN nodes c
              ON c.provider_org_id = f.provider_org_id AND c.accelerator_model = f.accelerator_model
             AND c.cluster_id = f.cluster_id AND c.fabric IS NOT DISTINCT FROM f.fabric AND c.id <> f.id
            WHERE f.id = @nodeId
              AND c.id NOT IN (SELECT node_id FROM assignments WHERE lease_id = @Id AND status = 'failed')
            """, new { nodeId, lease.Id }, tx.Transaction, cancellationToken: ct))).ToArray();
        var candidates = await Booking.CandidatesAsync(tx.Connection, tx.Transaction, candidateIds, from, lease.Until, ct);
        var request = new PlacementRequest(count, lease.VerifiedOnly, new HashSet<Guid> { nodeId });

        // 1. The lease's own offer: its slots, or every slot of its nodes.
        if (lease.OfferedNodeIds is { } offeredNodes)
        {
            var own = lease.OfferedSlotIds?.ToHashSet()
                ?? candidates.Where(c => offeredNodes.Contains(c.NodeId)).SelectMany(c => c.Slots).Select(s => s.SlotId).ToHashSet();
            var inOffer = Placement.Place(candidates, request with { AllowedSlots = own });
            if (inOffer.Placed) return new Spare(inOffer.Slots, "");
        }

        // 2. The provider's capacity in the fabric that no other active offer sells during the rest of the lease.
        var unsold = (await tx.Connection.QueryAsync<Guid>(new CommandDefinition("""
            SELECT s.id FROM gpu_slots s
            WHERE s.node_id = ANY(@candidateIds)
              AND NOT EXISTS (
                SELECT 1 FROM offers o
                WHERE o.provider_org_id = @ProviderOrgId AND o.withdrawn_at IS NULL AND o.id IS DISTINCT FROM @OfferId
                  AND o.windows && tstzrange(@from, @EndAt, '[)')
                  AND (s.id = ANY(o.slot_ids) OR (o.slot_ids IS NULL AND s.node_id = ANY(o.node_ids))))
            """, new { candidateIds, lease.ProviderOrgId, lease.OfferId, from, EndAt = lease.Until }, tx.Transaction, cancellationToken: ct)))
            .ToHashSet();
        var outside = Placement.Place(candidates, request with { AllowedSlots = unsold });
        if (outside.Placed) return new Spare(outside.Slots, "");
        var sold = Placement.Place(candidates, request).FreeCount - outside.FreeCount;
        return new Spare([], $"{outside.FreeCount} free in its offer or outside the provider's active offers"
            + (sold > 0 ? $"; {sold} more free but sold in other offers" : "")
            + OrderMatchedConsumer.Excluded(outside.Excluded, "of its fabric's other nodes"));
    }

    private static DateTimeOffset Max(DateTimeOffset a, DateTimeOffset b) => a > b ? a : b;

    private static DateTimeOffset Clamp(DateTimeOffset t, DateTimeOffset min, DateTimeOffset max) => t < min ? min : t > max ? max : t;
}
