using System.Collections.Concurrent;
using Dapper;
using Marketplace.Bidding.Domain;
using Marketplace.ServiceDefaults.Data;

namespace Marketplace.Bidding.Orders;

/// <summary>
/// Each model's active matches, kept in memory between clearings: a clearing reads only the matches written since the
/// copy it starts from, instead of every active match of the model (at 15 orders/s about 700 rows, 20 % of the
/// database's statement time, read again for every clearing).
/// </summary>
/// <remarks>
/// <para>
/// Every write of a match records the id of its transaction (<c>changed_xid</c>, migration V8, a trigger). A copy
/// remembers <see cref="Copy.Since"/>: the oldest transaction still running when it was read (the xmin of that snapshot).
/// Every transaction that had finished by then is in the copy; every one that had not (or that starts later) has an id at
/// or after <c>Since</c>. So reading the matches whose <c>changed_xid</c> is at or after <c>Since</c>, at a newer snapshot,
/// and laying them over the copy, gives exactly what reading every active match at that snapshot gives. The new copy's
/// <c>Since</c> is the xmin read just before them. Matches are only inserted under the market lock the clearing holds, so
/// a clearing still sees every booking of its offers; the later writes (slots booked, leases ended) are seen at least as
/// fresh as a full read would see them.
/// </para>
/// <para>
/// Writes of the reading transaction itself are visible to it but may still roll back: a read that sees any keeps its
/// result for this transaction only. Copies are per database (the connection string) and model, shared by the
/// instance's clearings; any copy is as good as another, the one with the later <c>Since</c> is kept.
/// </para>
/// </remarks>
internal static class ActiveMatches
{
    private static readonly ConcurrentDictionary<(string Database, string Model), Copy> Copies = new();

    /// <summary>A model's active matches (not ended at the time of the read) by match id, and the xmin they are complete up to.</summary>
    internal sealed record Copy(long Since, Dictionary<Guid, Entry> Matches);

    internal readonly record struct Entry(Guid OfferId, Booking Booking);

    /// <summary>A match as read: <paramref name="Active"/> false once released; <paramref name="Own"/>: written by the reading transaction.</summary>
    internal readonly record struct Read(Guid OfferId, Booking Booking, bool Active, bool Own);

    public const string Columns =
        "id, offer_id, order_id, start_at, end_at, accelerator_count, interruptible, preempted_at, bid_amount, created_at, slot_ids";

    /// <summary>The copy a clearing of <paramref name="model"/> starts from; null: none yet, read them all.</summary>
    public static Copy? Known(Tx tx, string model) => Copies.GetValueOrDefault((tx.Connection.ConnectionString, model));

    /// <summary>
    /// Two statements (parameters @model, @now, @since): the snapshot's xmin, then the matches to lay over
    /// <paramref name="known"/> (all active ones when there is none).
    /// </summary>
    public static string Sql(Copy? known) => $"""
        SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint;
        SELECT {Columns}, state = 'active' AS active,
               coalesce(changed_xid = pg_current_xact_id_if_assigned()::text::bigint, false) AS own
        FROM matches
        WHERE model = @model AND {(known is null ? "state = 'active' AND end_at > @now" : "changed_xid >= @since")};
        """;

    /// <summary>Reads what <see cref="Sql"/> returned, keeps the new copy (unless it holds this transaction's own writes), and returns it.</summary>
    public static async Task<IReadOnlyCollection<Entry>> ReadAsync(SqlMapper.GridReader reader, Tx tx, string model, Copy? known,
        DateTimeOffset now)
    {
        var since = await reader.ReadSingleAsync<long>();
        var rows = (await reader.ReadAsync<Row>()).Select(r => r.ToRead()).ToList();
        var copy = Merge(known, since, rows, now);
        if (!rows.Any(r => r.Own))
            Copies.AddOrUpdate((tx.Connection.ConnectionString, model), copy,
                (_, kept) => kept.Since > copy.Since ? kept : copy);
        return copy.Matches.Values;
    }

    /// <summary>
    /// Lays <paramref name="changed"/> (read after the xmin <paramref name="since"/>) over <paramref name="known"/>: a
    /// released or ended match leaves, any other takes its place as read; matches ended by <paramref name="now"/> leave too.
    /// </summary>
    public static Copy Merge(Copy? known, long since, IReadOnlyList<Read> changed, DateTimeOffset now)
    {
        var matches = new Dictionary<Guid, Entry>(known?.Matches.Count ?? changed.Count);
        if (known is not null)
            foreach (var (id, entry) in known.Matches)
                if (entry.Booking.End > now) matches[id] = entry;
        foreach (var r in changed)
        {
            if (r.Active && r.Booking.End > now) matches[r.Booking.MatchId] = new Entry(r.OfferId, r.Booking);
            else matches.Remove(r.Booking.MatchId);
        }
        return new Copy(since, matches);
    }

    private sealed class Row
    {
        public Guid Id { get; init; }
        public Guid OfferId { get; init; }
        public Guid OrderId { get; init; }
        public DateTimeOffset StartAt { get; init; }
        public DateTimeOffset EndAt { get; init; }
        public int AcceleratorCount { get; init; }
        public bool Interruptible { get; init; }
        public DateTimeOffset? PreemptedAt { get; init; }
        public long? BidAmount { get; init; }
        public DateTimeOffset CreatedAt { get; init; }
        public Guid[]? SlotIds { get; init; }
        public bool Active { get; init; }
        public bool Own { get; init; }

        // As a clearing sees it: an already preempted match is no longer interruptible (its capacity comes back at its
        // shortened end, it is not preempted twice).
        public Read ToRead() => new(OfferId, new Booking(StartAt, EndAt, AcceleratorCount)
        {
            MatchId = Id,
            Interruptible = Interruptible && PreemptedAt is null,
            BidAmount = BidAmount ?? 0,
            MatchedAt = CreatedAt,
            SlotIds = SlotIds,
        }, Active, Own);
    }
}
