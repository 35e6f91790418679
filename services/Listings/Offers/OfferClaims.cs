using Dapper;
using Marketplace.Contracts;
using Marketplace.Listings.Domain;
using Marketplace.ServiceDefaults.Web;
using Microsoft.AspNetCore.Http.HttpResults;
using Npgsql;

namespace Marketplace.Listings.Offers;

/// <summary>An accelerator slot as an offer holds it; the API shows these for offers of part of their nodes.</summary>
public sealed record OfferedSlot(Guid Id, Guid NodeId, int Index, int? NvlinkIsland)
{
    public NodeSlot ToNodeSlot() => new(Id, Index, NvlinkIsland);
}

/// <summary>A slot that another active offer holds during one of its windows.</summary>
internal sealed record SlotClaim(Guid SlotId, Guid NodeId, int Index, Guid OfferId, DateTimeOffset Start, DateTimeOffset End);

/// <summary>
/// The slots offers hold (offer_slots): a slot is in at most one active offer at any instant. Callers lock the nodes
/// first (publish) or the offer (change), so the look-up before the claim sees what the claim would collide with; the
/// exclusion constraint has the last word.
/// </summary>
internal static class OfferClaims
{
    /// <summary>Every slot of the nodes, node by node in the given order, then by index.</summary>
    public static async Task<List<OfferedSlot>> SlotsOfNodesAsync(NpgsqlConnection connection, NpgsqlTransaction? tx, Guid[] nodeIds,
        CancellationToken ct)
    {
        var slots = (await connection.QueryAsync<OfferedSlot>(new CommandDefinition(
            "SELECT id, node_id, index, nvlink_island FROM gpu_slots WHERE node_id = ANY(@nodeIds)",
            new { nodeIds }, tx, cancellationToken: ct))).ToLookup(s => s.NodeId);
        return nodeIds.SelectMany(n => slots[n].OrderBy(s => s.Index)).ToList();
    }

    /// <summary>The slots, in the given order.</summary>
    public static async Task<List<OfferedSlot>> SlotsAsync(NpgsqlConnection connection, NpgsqlTransaction? tx, Guid[] slotIds, CancellationToken ct)
    {
        var slots = (await connection.QueryAsync<OfferedSlot>(new CommandDefinition(
            "SELECT id, node_id, index, nvlink_island FROM gpu_slots WHERE id = ANY(@slotIds)",
            new { slotIds }, tx, cancellationToken: ct))).ToDictionary(s => s.Id);
        return slotIds.Select(id => slots[id]).ToList();
    }

    /// <summary>Slots of the nodes that active offers other than <paramref name="offerId"/> hold in a window overlapping one of these.</summary>
    public static async Task<List<SlotClaim>> TakenAsync(NpgsqlConnection connection, NpgsqlTransaction tx, Guid offerId, Guid[] nodeIds,
        IReadOnlyList<TimeWindow> windows, CancellationToken ct) =>
        (await connection.QueryAsync<SlotClaim>(new CommandDefinition("""
            SELECT c.slot_id, c.node_id, g.index, c.offer_id, lower(c.during) AS start, upper(c.during) AS "end"
            FROM offer_slots c JOIN gpu_slots g ON g.id = c.slot_id
            WHERE c.offer_id <> @offerId AND c.node_id = ANY(@nodeIds)
              AND c.during && ANY (SELECT tstzrange(s, e) FROM unnest(@starts::timestamptz[], @ends::timestamptz[]) AS w(s, e))
            ORDER BY lower(c.during), c.node_id, g.index
            """, Args(offerId, nodeIds, windows), tx, cancellationToken: ct))).AsList();

    /// <summary>The 409 for wanted slots that another offer already holds, naming the node, the slots and that offer; null if none is.</summary>
    public static ProblemHttpResult? Conflict(IEnumerable<OfferedSlot> wanted, IReadOnlyList<SlotClaim> taken)
    {
        var ids = wanted.Select(s => s.Id).ToHashSet();
        var clash = taken.Where(c => ids.Contains(c.SlotId)).ToList();
        if (clash.Count == 0) return null;
        return Problems.Conflict("offer-overlap",
            string.Join("; ", Holders(clash).Select(h => $"Node {h.Node} slots {h.Indexes} are already offered by {h.Offer}")) +
            ". Withdraw that offer or choose a window that does not overlap it.");
    }

    /// <summary>The 409 when a node has fewer free slots in the windows than an offer of part of it asks for.</summary>
    public static ProblemHttpResult NotEnoughFree(Guid nodeId, int asked, int free, IReadOnlyList<SlotClaim> taken) =>
        Problems.Conflict("offer-overlap",
            $"Node {nodeId} has {free} free accelerator{(free == 1 ? "" : "s")} in these windows and {asked} {(asked == 1 ? "was" : "were")} asked: " +
            string.Join("; ", Holders(taken.Where(c => c.NodeId == nodeId).ToList()).Select(h => $"slots {h.Indexes} are offered by {h.Offer}")) +
            $". Offer at most {free} there, or choose a window that does not overlap.");

    private static IEnumerable<(Guid Node, string Indexes, string Offer)> Holders(List<SlotClaim> claims) =>
        claims.GroupBy(c => (c.NodeId, c.OfferId)).Select(g =>
        {
            var first = g.MinBy(c => c.Start)!;
            return (g.Key.NodeId, string.Join(", ", g.Select(c => c.Index).Distinct().Order()),
                $"active offer {g.Key.OfferId} from {OfferQueries.Iso(first.Start)} to {OfferQueries.Iso(first.End)}");
        });

    /// <summary>Replaces the offer's claims by these slots in these windows; null when claimed, else the 409 to return.</summary>
    public static async Task<ProblemHttpResult?> ClaimAsync(NpgsqlConnection connection, NpgsqlTransaction tx, Guid offerId,
        IReadOnlyList<OfferedSlot> slots, IReadOnlyList<TimeWindow> windows, CancellationToken ct)
    {
        var args = Args(offerId, [], windows);
        args.Add("slotIds", slots.Select(s => s.Id).ToArray());
        args.Add("slotNodes", slots.Select(s => s.NodeId).ToArray());
        try
        {
            await connection.ExecuteAsync(new CommandDefinition("""
                DELETE FROM offer_slots WHERE offer_id = @offerId;
                INSERT INTO offer_slots (offer_id, node_id, slot_id, during)
                SELECT @offerId, s.node_id, s.slot_id, tstzrange(w.s, w.e)
                FROM unnest(@slotNodes, @slotIds) AS s(node_id, slot_id), unnest(@starts::timestamptz[], @ends::timestamptz[]) AS w(s, e);
                """, args, tx, cancellationToken: ct));
        }
        catch (PostgresException e) when (e.SqlState == PostgresErrorCodes.ExclusionViolation)
        {
            // Only reachable by a race the node and offer locks should already prevent; the constraint has the last word.
            return Problems.Conflict("offer-overlap",
                "One of these slots was offered for an overlapping window at the same moment; retry to see which.");
        }
        return null;
    }

    private static DynamicParameters Args(Guid offerId, Guid[] nodeIds, IReadOnlyList<TimeWindow> windows) => new(new
    {
        offerId, nodeIds,
        starts = windows.Select(w => w.Start.UtcDateTime).ToArray(),
        ends = windows.Select(w => w.End.UtcDateTime).ToArray(),
    });
}
