using Dapper;
using Marketplace.Scheduling.Domain;
using Npgsql;

namespace Marketplace.Scheduling.Leases;

/// <summary>A lease as it is inserted when a match is placed.</summary>
internal sealed record NewLease(
    Guid Id, Guid OrderId, Guid MatchId, Guid RenterOrgId, Guid ProviderOrgId, string AcceleratorModel, int AcceleratorCount,
    DateTimeOffset StartAt, DateTimeOffset EndAt, long PriceAmount, string PriceCurrency, DateTimeOffset CreatedAt);

/// <summary>
/// Reading candidate slots and writing a lease with its bookings. The exclusion constraint on bookings is the final
/// arbiter between concurrent placements: the loser gets SQLSTATE 23P01 (<see cref="PostgresErrorCodes.ExclusionViolation"/>).
/// </summary>
internal static class Booking
{
    public const string LeaseStatusScheduled = "scheduled";

    /// <summary>Every slot of the candidate nodes with whether it is booked in [start, end).</summary>
    public static async Task<IReadOnlyList<SlotState>> SlotsAsync(
        NpgsqlConnection connection, NpgsqlTransaction transaction, Guid[] nodeIds, DateTimeOffset start, DateTimeOffset end, CancellationToken ct) =>
        (await connection.QueryAsync<SlotState>(new CommandDefinition("""
            SELECT s.id AS slot_id, s.node_id, s.index,
                   EXISTS (SELECT 1 FROM bookings b
                           WHERE b.slot_id = s.id AND b.during && tstzrange(@start, @end, '[)')) AS busy
            FROM gpu_slots s
            WHERE s.node_id = ANY(@nodeIds)
            ORDER BY s.node_id, s.index
            """, new { nodeIds, start, end }, transaction, cancellationToken: ct))).AsList();

    public static async Task InsertAsync(
        NpgsqlConnection connection, NpgsqlTransaction transaction, NewLease lease, IEnumerable<Guid> slotIds, CancellationToken ct)
    {
        await connection.ExecuteAsync(new CommandDefinition("""
            INSERT INTO leases (id, order_id, match_id, renter_org_id, provider_org_id, accelerator_model, accelerator_count,
                                start_at, end_at, price_amount, price_currency, status, created_at)
            VALUES (@Id, @OrderId, @MatchId, @RenterOrgId, @ProviderOrgId, @AcceleratorModel, @AcceleratorCount,
                    @StartAt, @EndAt, @PriceAmount, @PriceCurrency, 'scheduled', @CreatedAt)
            """, lease, transaction, cancellationToken: ct));
        await connection.ExecuteAsync(new CommandDefinition("""
            INSERT INTO bookings (lease_id, slot_id, during)
            SELECT @Id, slot_id, tstzrange(@StartAt, @EndAt, '[)') FROM unnest(@slotIds) AS s(slot_id)
            """, new { lease.Id, lease.StartAt, lease.EndAt, slotIds = slotIds.ToArray() }, transaction, cancellationToken: ct));
    }
}
