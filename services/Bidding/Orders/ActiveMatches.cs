using Dapper;
using Marketplace.Bidding.Domain;
using Marketplace.ServiceDefaults.Data;

namespace Marketplace.Bidding.Orders;

/// <summary>
/// Each model's active matches, kept in memory between clearings (<see cref="KeptRows{TKey,TRow}"/>): a clearing reads
/// only the matches written since the copy it starts from, instead of every active match of the model (at 15 orders/s
/// about 700 rows, 20 % of the database's statement time, read again for every clearing).
/// </summary>
/// <remarks>
/// Matches record their model and writing transaction in a trigger (migration V8). Matches are only inserted under the
/// market lock the clearing holds, so a clearing sees every booking of its offers; the later writes (slots booked, leases
/// ended early, preemptions) it sees at least as fresh as a full read would.
/// </remarks>
internal static class ActiveMatches
{
    private static readonly KeptRows<Guid, Entry> Kept = new();

    internal sealed record Entry(Guid OfferId, Booking Booking);

    /// <summary>The copy a clearing of <paramref name="model"/> starts from; null: none yet, read them all.</summary>
    public static KeptRows<Guid, Entry>.Copy? Known(Tx tx, string model) => Kept.Known(tx, model);

    /// <summary>
    /// Two statements (parameters @model, @now, @since): the snapshot's xmin, then the matches to lay over
    /// <paramref name="known"/> (all active ones when there is none).
    /// </summary>
    public static string Sql(KeptRows<Guid, Entry>.Copy? known) => $"""
        {KeptRows<Guid, Entry>.XminSql}
        SELECT {OrderBook.BookingColumns}, state = 'active' AS active, {KeptRows<Guid, Entry>.OwnColumn}
        FROM matches
        WHERE model = @model AND {(known is null ? "state = 'active' AND end_at > @now" : "changed_xid >= @since")};
        """;

    /// <summary>Reads what <see cref="Sql"/> returned: the model's active matches now.</summary>
    public static async Task<IEnumerable<Entry>> ReadAsync(SqlMapper.GridReader reader, Tx tx, string model,
        KeptRows<Guid, Entry>.Copy? known, DateTimeOffset now)
    {
        var since = await reader.ReadSingleAsync<long>();
        // A released match no longer counts; the others as a clearing sees them.
        var changed = (await reader.ReadAsync<OrderBook.BookingRow>())
            .Select(r => new KeptRows<Guid, Entry>.Changed(r.Id, r.Active ? new Entry(r.OfferId, r.ToBooking(forClearing: true)) : null, r.Own))
            .ToList();
        return Kept.Read(tx, model, known, since, changed, e => e.Booking.End > now).Rows.Values;
    }
}
