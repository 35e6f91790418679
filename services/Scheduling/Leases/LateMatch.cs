using Dapper;
using Marketplace.Contracts;
using Marketplace.Scheduling.Domain;
using Marketplace.ServiceDefaults.Data;

namespace Marketplace.Scheduling.Leases;

/// <summary>
/// An on-demand match that reaches the scheduler after its window's start still gets the ordered duration, from now,
/// as far as the offer's availability window allows (<see cref="LateWindow"/>). The lease's window is what Billing holds
/// for and what Bidding then counts (both read it from LeaseScheduled); the lease says what happened in its reason.
/// </summary>
internal static class LateMatch
{
    public sealed record Shift(DateTimeOffset Start, DateTimeOffset End, string Note);

    /// <summary>The re-anchored window of a late on-demand match, or null (not late, not on-demand).</summary>
    public static async Task<Shift?> ReanchorAsync(Tx tx, OrderMatched m, DateTimeOffset start, DateTimeOffset end, CancellationToken ct)
    {
        var now = tx.Now;
        if (m.OrderType != "on_demand" || start >= now) return null;
        // The end of the offer's window that held the match (its copy from OfferPublished); unknown or withdrawn: none.
        var offerEnd = await tx.Connection.ExecuteScalarAsync<DateTime?>(new CommandDefinition("""
            SELECT upper(w) FROM offers o, unnest(o.windows) AS w
            WHERE o.id = @OfferId AND o.withdrawn_at IS NULL AND w @> @start::timestamptz
            """, new { m.OfferId, start }, tx.Transaction, cancellationToken: ct));
        var until = offerEnd is { } e ? new DateTimeOffset(DateTime.SpecifyKind(e, DateTimeKind.Utc)) : (DateTimeOffset?)null;
        if (LateWindow.Reanchor(start, end, now, until) is not { } w) return null;
        var late = $"the match reached the scheduler {Seconds(now - start)} s after its start ({OrderMatchedConsumer.Format(start)})";
        var note = w.Capped
            ? $"{late}; the lease starts then and ends at the end of the offer's window, {OrderMatchedConsumer.Format(w.End)}: "
              + $"{Seconds(w.End - w.Start)} of the {Seconds(w.Ordered)} s ordered"
            : $"{late}; the lease starts then and runs the {Seconds(w.Ordered)} s ordered, until {OrderMatchedConsumer.Format(w.End)}";
        return new Shift(w.Start, w.End, note);
    }

    /// <summary>Shows on the lease (its status_reason while it is scheduled or active) why its window differs from the match's.</summary>
    public static Task NoteAsync(Tx tx, Guid leaseId, string note, CancellationToken ct) =>
        tx.Connection.ExecuteAsync(new CommandDefinition("UPDATE leases SET status_reason = @note WHERE id = @leaseId",
            new { leaseId, note }, tx.Transaction, cancellationToken: ct));

    private static long Seconds(TimeSpan t) => (long)Math.Round(t.TotalSeconds);
}
