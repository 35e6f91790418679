using Dapper;
using MassTransit;
using Marketplace.Contracts;
using Marketplace.ServiceDefaults.Data;
using Marketplace.ServiceDefaults.Web;
using Microsoft.AspNetCore.Http.HttpResults;
using Npgsql;

namespace Marketplace.Scheduling.Leases;

public sealed record ExtendRequest(DateTimeOffset? End);

public sealed record ExtensionAlternative(DateTimeOffset End);

/// <summary>
/// POST /v1/leases/{id}/extend {end}: the lease keeps its slots until the new end if they are free (the exclusion
/// constraint decides); otherwise 409 with the latest end those slots allow. Billing may answer ExtensionRejected
/// (the wallet cannot cover it), which puts the end back.
/// </summary>
internal static class ExtendLease
{
    public static async Task<Results<Ok<LeaseResponse>, ValidationProblem, ProblemHttpResult>> ExtendAsync(
        Caller caller, Db db, string id, ExtendRequest? body, CancellationToken ct)
    {
        if (!caller.Has(OrgRoles.Renter)) return Problems.Forbidden("Only the renter of a lease can extend it.");
        var v = new Validation();
        v.Require(Guid.TryParse(id, out var leaseId), "id", $"'{id}' is not a lease id; lease ids are UUIDs.");
        v.Require(body?.End is not null, "end", "is required: the new end of the lease, an ISO-8601 UTC time.");
        if (v.Failed) return v.Problem;
        var newEnd = body!.End!.Value.ToUniversalTime();
        return await db.RunAsync(tx => ExtendInAsync(tx, caller, id, leaseId, newEnd, ct), ct);
    }

    private static async Task<Results<Ok<LeaseResponse>, ValidationProblem, ProblemHttpResult>> ExtendInAsync(
        Tx tx, Caller caller, string id, Guid leaseId, DateTimeOffset newEnd, CancellationToken ct)
    {
        var asked = tx.Now; // before the lease's lock: a request that came before the end and waited for the lock is in time
        var lease = await LeaseLifecycle.LockAsync(tx, leaseId, ct);
        if (lease is null || lease.RenterOrgId != caller.OrgId) return Problems.NotFound("lease", id);
        if (lease.IsTerminal)
            return Problems.Conflict("lease-ended", $"Lease {leaseId} is already {lease.Status}; only a lease that has not ended can be extended.");
        // Its end has passed and only its completion has not run yet: it has ended there (as a cancel is refused then).
        if (asked >= lease.EndAt)
            return Problems.Conflict("lease-ended", $"Lease {leaseId} ended at {OrderMatchedConsumer.Format(lease.EndAt)}; it can no longer be extended. Place a new order for more time.");
        if (lease.PreemptAt is not null)
            return Problems.Conflict("lease-preempted", $"Lease {leaseId} has been given notice and ends at {OrderMatchedConsumer.Format(lease.PreemptAt.Value)}; it cannot be extended.");
        if (newEnd <= lease.EndAt)
            return Problems.Invalid(new Dictionary<string, string[]>
            {
                ["end"] = [$"must be after the lease's current end {OrderMatchedConsumer.Format(lease.EndAt)}; to end earlier, cancel the lease."],
            });

        // The slots' own future: other bookings and maintenance after the current end bound any extension.
        var latest = await LatestEndAsync(tx, lease, ct);
        // So does what the offer sold: the lease keeps the offer's slots, which the provider sells only inside the offer's
        // availability window, and nothing more once the offer is withdrawn.
        if (await OfferEndAsync(tx, lease, ct) is { } offerEnd && offerEnd < newEnd && (latest is null || offerEnd <= latest))
            return NoRoom(lease, newEnd, offerEnd, offerEnd > lease.EndAt
                ? $"The offer this lease was sold from is available until {OrderMatchedConsumer.Format(offerEnd)}; the lease cannot run past it."
                : "The offer this lease was sold from is withdrawn or sells nothing after the lease's end; it cannot be extended. Place a new order for more time.");
        if (latest is { } limit && limit < newEnd)
            return NoRoom(lease, newEnd, limit);

        await tx.Transaction.SaveAsync("extend", ct);
        try
        {
            await tx.Connection.ExecuteAsync(new CommandDefinition("""
                UPDATE bookings SET during = tstzrange(lower(during), @newEnd, '[)')
                WHERE lease_id = @Id AND NOT released AND upper(during) = @EndAt
                """, new { lease.Id, lease.EndAt, newEnd }, tx.Transaction, cancellationToken: ct));
        }
        catch (PostgresException e) when (e.SqlState == PostgresErrorCodes.ExclusionViolation)
        {
            // Someone booked the same slots between our look and our update: the constraint decided.
            await tx.Transaction.RollbackAsync("extend", ct);
            return NoRoom(lease, newEnd, await LatestEndAsync(tx, lease, ct) ?? lease.EndAt);
        }
        await tx.Connection.ExecuteAsync(new CommandDefinition(
            "UPDATE leases SET end_at = @newEnd WHERE id = @Id", new { lease.Id, newEnd }, tx.Transaction, cancellationToken: ct));
        await tx.ScheduleAsync(LeaseLifecycle.Complete, lease.Id.ToString(), newEnd, ct);
        await tx.PublishAsync(new LeaseExtended(lease.Id, lease.OrderId, lease.EndAt, newEnd, tx.Now), ct);
        var response = await LeaseApi.LoadVisibleAsync(tx.Connection, tx.Transaction, caller, leaseId, ct);
        await tx.CommitAsync(ct);
        return TypedResults.Ok(response!);
    }

    /// <summary>
    /// The end of the offer's availability window that holds the lease's end (its copy from OfferPublished); the lease's
    /// own end when the offer is withdrawn or no window holds it; null when the offer is unknown (no bound from it).
    /// </summary>
    private static async Task<DateTimeOffset?> OfferEndAsync(Tx tx, LockedLease lease, CancellationToken ct)
    {
        if (lease.OfferId is not { } offerId) return null;
        var t = await tx.Connection.QuerySingleOrDefaultAsync<DateTime?>(new CommandDefinition("""
            SELECT CASE WHEN o.withdrawn_at IS NOT NULL THEN @EndAt
                        ELSE coalesce((SELECT max(upper(w)) FROM unnest(o.windows) AS w WHERE lower(w) < @EndAt AND upper(w) >= @EndAt), @EndAt)
                   END
            FROM offers o WHERE o.id = @offerId
            """, new { offerId, lease.EndAt }, tx.Transaction, cancellationToken: ct));
        return t is { } v ? new DateTimeOffset(DateTime.SpecifyKind(v, DateTimeKind.Utc)) : null;
    }

    /// <summary>The earliest start of another booking or of maintenance on the lease's slots after its current end; null: unbounded.</summary>
    private static async Task<DateTimeOffset?> LatestEndAsync(Tx tx, LockedLease lease, CancellationToken ct)
    {
        var t = await tx.Connection.QuerySingleAsync<DateTime?>(new CommandDefinition("""
            WITH mine AS (
                SELECT b.slot_id, s.node_id FROM bookings b JOIN gpu_slots s ON s.id = b.slot_id
                WHERE b.lease_id = @Id AND NOT b.released AND upper(b.during) = @EndAt)
            SELECT least(
                (SELECT min(lower(o.during)) FROM bookings o JOIN mine ON mine.slot_id = o.slot_id
                 WHERE o.lease_id <> @Id AND NOT isempty(o.during) AND lower(o.during) >= @EndAt),
                (SELECT min(greatest(lower(m.during), @EndAt)) FROM node_maintenance m
                 WHERE m.node_id IN (SELECT node_id FROM mine) AND m.cancelled_at IS NULL AND upper(m.during) > @EndAt))
            """, new { lease.Id, lease.EndAt }, tx.Transaction, cancellationToken: ct));
        return t is { } v ? new DateTimeOffset(v, TimeSpan.Zero) : null;
    }

    private static ProblemHttpResult NoRoom(LockedLease lease, DateTimeOffset wanted, DateTimeOffset latest, string? why = null)
    {
        ExtensionAlternative[] alternatives = latest > lease.EndAt ? [new ExtensionAlternative(latest)] : [];
        var detail = why ?? (latest > lease.EndAt
            ? $"The lease's slots are not free until {OrderMatchedConsumer.Format(wanted)}; the latest end possible on the same slots is {OrderMatchedConsumer.Format(latest)}."
            : $"The lease's slots are booked right after its end {OrderMatchedConsumer.Format(lease.EndAt)}; it cannot be extended on the same slots. Place a new order for more time.");
        return Problems.Of(StatusCodes.Status409Conflict, "extension-unavailable", "Conflict", detail,
            new Dictionary<string, object?> { ["alternatives"] = alternatives });
    }
}

/// <summary>Billing could not cover an extension: the end goes back to where it was, and so do the bookings.</summary>
internal sealed class ExtensionRejectedConsumer(Db db) : IConsumer<ExtensionRejected>
{
    public async Task Consume(ConsumeContext<ExtensionRejected> context)
    {
        var m = context.Message;
        var ct = context.CancellationToken;
        await using var tx = await db.BeginAsync(ct);
        if (!await tx.FirstDeliveryAsync(context, "extension-rejected")) return;
        var lease = await LeaseLifecycle.LockAsync(tx, m.LeaseId, ct);
        var revertTo = m.RevertTo.ToUniversalTime();
        if (lease is not null && !lease.IsTerminal && revertTo < lease.EndAt && revertTo > lease.StartAt)
        {
            await tx.Connection.ExecuteAsync(new CommandDefinition("""
                UPDATE bookings SET during = tstzrange(lower(during), greatest(lower(during), @revertTo), '[)')
                WHERE lease_id = @Id AND NOT released AND upper(during) = @EndAt;
                UPDATE leases SET end_at = @revertTo WHERE id = @Id;
                """, new { lease.Id, lease.EndAt, revertTo }, tx.Transaction, cancellationToken: ct));
            await tx.ScheduleAsync(LeaseLifecycle.Complete, lease.Id.ToString(), revertTo, ct);
        }
        await tx.CommitAsync(ct);
    }
}

internal sealed class ExtensionRejectedConsumerDefinition : ConsumerDefinition<ExtensionRejectedConsumer>
{
    public ExtensionRejectedConsumerDefinition() => ConcurrentMessageLimit = 16;
}
