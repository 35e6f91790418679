using System.Collections.Concurrent;

namespace Marketplace.ServiceDefaults.Data;

/// <summary>
/// Rows of a table kept in memory between transactions, read again only when written since: instead of reading every
/// live row of a hot read (Bidding's active matches of a model) for every transaction, a reader lays the rows written
/// since its copy over it.
/// </summary>
/// <remarks>
/// <para>
/// The table records, in a trigger on every insert and update, the id of the writing transaction (<c>changed_xid</c>:
/// <c>NEW.changed_xid := pg_current_xact_id()::text::bigint</c> in a BEFORE INSERT OR UPDATE trigger). A copy remembers
/// <see cref="Copy.Since"/>: the oldest transaction still running when it was read (<see cref="XminSql"/>, the xmin of
/// that snapshot). Every transaction that had finished by then is in the copy; every one that had not, or that starts later, has an id at or after <c>Since</c> (ids are handed out in order,
/// and a running one keeps the xmin at or below its own). So the rows whose <c>changed_xid</c> is at or after
/// <c>Since</c>, read at a newer snapshot and laid over the copy, give what a full read at that snapshot gives; the new
/// copy's <c>Since</c> is an xmin read before them. A transaction that wrote first and commits last (a smaller id than
/// writes already seen) is therefore still read: "the newest change seen" would miss it.
/// </para>
/// <para>
/// The reading transaction's own writes are visible to it but may still roll back: a read that sees one
/// (<see cref="OwnColumn"/>) is used for that transaction only and not kept. Copies are per database (the connection
/// string) and scope; any copy is as good as another, the one with the later <c>Since</c> is kept. Rows are never
/// deleted from these tables (a row that leaves is updated: released, shrunk, ended), so an update always tells.
/// </para>
/// </remarks>
public sealed class KeptRows<TKey, TRow> where TKey : notnull where TRow : class
{
    private readonly ConcurrentDictionary<(string Database, string Scope), Copy> _copies = new();

    /// <summary>The live rows as of a read, by key, complete for every transaction before <paramref name="Since"/>.</summary>
    public sealed record Copy(long Since, IReadOnlyDictionary<TKey, TRow> Rows);

    /// <summary>A row as read: <paramref name="Row"/> null when it no longer counts; <paramref name="Own"/> when the reading transaction wrote it.</summary>
    public readonly record struct Changed(TKey Key, TRow? Row, bool Own);

    /// <summary>The statement that gives the new copy's <c>Since</c>; run it before the statement that reads the rows.</summary>
    public const string XminSql = "SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint;";

    /// <summary>A boolean column <c>own</c>: the reading transaction wrote this row.</summary>
    public const string OwnColumn = "coalesce(changed_xid = pg_current_xact_id_if_assigned()::text::bigint, false) AS own";

    /// <summary>The copy a read of <paramref name="scope"/> starts from; null: none yet, read every live row.</summary>
    public Copy? Known(Tx tx, string scope) => _copies.GetValueOrDefault((tx.Connection.ConnectionString, scope));

    /// <summary>
    /// Lays <paramref name="changed"/> (read after the xmin <paramref name="since"/>) over <paramref name="known"/> and keeps
    /// the result for the next reader unless it holds the reading transaction's own writes. Rows for which
    /// <paramref name="live"/> is false (ended by now) leave, as do rows read as gone.
    /// </summary>
    public Copy Read(Tx tx, string scope, Copy? known, long since, IReadOnlyList<Changed> changed, Func<TRow, bool> live)
    {
        var copy = Merge(known, since, changed, live);
        if (!changed.Any(c => c.Own))
            _copies.AddOrUpdate((tx.Connection.ConnectionString, scope), copy, (_, kept) => kept.Since > copy.Since ? kept : copy);
        return copy;
    }

    /// <summary>The pure part of <see cref="Read"/>: a new copy, the one given left as it was.</summary>
    public static Copy Merge(Copy? known, long since, IReadOnlyList<Changed> changed, Func<TRow, bool> live)
    {
        var rows = new Dictionary<TKey, TRow>(known?.Rows.Count ?? changed.Count);
        if (known is not null)
            foreach (var (key, row) in known.Rows)
                if (live(row)) rows[key] = row;
        foreach (var c in changed)
            if (c.Row is { } row && live(row)) rows[c.Key] = row;
            else rows.Remove(c.Key);
        return new Copy(since, rows);
    }
}
