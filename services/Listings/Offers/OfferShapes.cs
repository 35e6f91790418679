using System.Text.Json.Serialization;
using Dapper;
using Marketplace.Contracts;
using Marketplace.Listings.Clusters;
using Npgsql;
using NpgsqlTypes;

namespace Marketplace.Listings.Offers;

/// <summary>An offer as the API returns it; also the Dapper row (money and windows are columns turned into JSON objects).</summary>
public sealed record OfferResponse
{
    public Guid Id { get; init; }
    public Guid ProviderOrgId { get; init; }
    public Guid ClusterId { get; init; }
    public Guid[] NodeIds { get; init; } = [];
    public required string AcceleratorModel { get; init; }
    public required string Region { get; init; }
    public required string Jurisdiction { get; init; }
    public int AcceleratorCount { get; init; }
    /// <summary>The first window's start and the last window's end.</summary>
    public DateTimeOffset WindowStart { get; init; }
    public DateTimeOffset WindowEnd { get; init; }
    [JsonIgnore] public NpgsqlRange<DateTime>[] WindowRanges { get; init; } = [];
    /// <summary>When the capacity is available, in order; one window unless the provider gave several.</summary>
    public IReadOnlyList<TimeWindow> Windows => WindowRanges
        .Select(r => new TimeWindow(new DateTimeOffset(r.LowerBound, TimeSpan.Zero), new DateTimeOffset(r.UpperBound, TimeSpan.Zero))).ToList();
    [JsonIgnore] public long AskAmount { get; init; }
    [JsonIgnore] public string AskCurrency { get; init; } = "";
    public Money AskPerHour => new(AskAmount, AskCurrency);
    public int MinLeaseSeconds { get; init; }
    public bool InterruptibleAllowed { get; init; }
    [JsonIgnore] public long? InterruptibleFloorAmount { get; init; }
    /// <summary>Interruptible use never trades below this; null: no floor below the ask (or no interruptible use).</summary>
    public Money? InterruptibleFloorPerHour => InterruptibleFloorAmount is { } a ? new Money(a, AskCurrency) : null;
    /// <summary>The notice an interruptible lease gets before it is preempted.</summary>
    public int PreemptionNoticeSeconds { get; init; }
    public string SlaLevel { get; init; } = OfferTermRules.DefaultSla;
    /// <summary>Gang shape: how many nodes, and the fewest accelerators on any one of them.</summary>
    public int NodeCount { get; init; }
    public int PerNode { get; init; }
    public string Fabric { get; init; } = Fabrics.Ethernet;
    public int FabricGbps { get; init; }
    /// <summary>Every node of the offer verified (inventory as declared) and healthy right now.</summary>
    public bool Verified { get; init; }
    [JsonIgnore] public int? ReliabilityPpm { get; init; }
    /// <summary>Healthy time / observed time of the offer's nodes over the rolling 30 days; null until they have reported.</summary>
    public decimal? Reliability => Reliabilities.FromPpm(ReliabilityPpm);
    public required string Status { get; init; }
    public DateTimeOffset CreatedAt { get; init; }
    public DateTimeOffset? UpdatedAt { get; init; }
    public DateTimeOffset? WithdrawnAt { get; init; }

    public OfferPublished ToEvent(DateTimeOffset at) =>
        new(Id, ProviderOrgId, ClusterId, NodeIds, AcceleratorModel, Region, Jurisdiction, AcceleratorCount, WindowStart, WindowEnd,
            AskPerHour, MinLeaseSeconds, InterruptibleAllowed, at)
        {
            InterruptibleFloorPerHour = InterruptibleFloorPerHour,
            PreemptionNoticeSeconds = PreemptionNoticeSeconds,
            SlaLevel = SlaLevel,
            Windows = Windows,
        };
}

public sealed record OfferList(IReadOnlyList<OfferResponse> Data, string? NextCursor);

internal static class OfferStatus
{
    public const string Active = "active";
    public const string Withdrawn = "withdrawn";
}

internal static class OfferQueries
{
    public const string Columns = """
        id, provider_org_id, cluster_id, node_ids, accelerator_model, region, jurisdiction, accelerator_count,
        window_start, window_end, windows AS window_ranges, ask_amount, ask_currency, min_lease_seconds, interruptible_allowed,
        interruptible_floor_amount, preemption_notice_seconds, sla_level, node_count, per_node, fabric, fabric_gbps,
        ready AS verified, reliability_ppm, status, created_at, updated_at, withdrawn_at
        """;

    /// <summary>The caller's offer (locked for a change), or null if it does not exist or is another org's (both a 404).</summary>
    public static Task<OfferResponse?> FindOwnForUpdateAsync(NpgsqlConnection connection, NpgsqlTransaction tx, Guid id, Guid org, CancellationToken ct) =>
        connection.QuerySingleOrDefaultAsync<OfferResponse>(new CommandDefinition(
            $"SELECT {Columns} FROM offers WHERE id = @id AND provider_org_id = @org FOR UPDATE",
            new { id, org }, tx, cancellationToken: ct));

    private sealed record Overlap(Guid OfferId, Guid NodeId, DateTimeOffset WindowStart, DateTimeOffset WindowEnd);

    /// <summary>
    /// Claims the nodes for the offer's windows (the exclusion constraint has the last word), after looking for another
    /// active offer that already holds one of them in an overlapping window: null when claimed, else the 409 to return.
    /// </summary>
    public static async Task<Microsoft.AspNetCore.Http.HttpResults.ProblemHttpResult?> ClaimNodesAsync(
        NpgsqlConnection connection, NpgsqlTransaction tx, Guid offerId, Guid[] nodeIds, IReadOnlyList<TimeWindow> windows, CancellationToken ct)
    {
        var args = new
        {
            offerId, nodeIds,
            starts = windows.Select(w => w.Start.UtcDateTime).ToArray(),
            ends = windows.Select(w => w.End.UtcDateTime).ToArray(),
        };
        var overlap = await connection.QueryFirstOrDefaultAsync<Overlap>(new CommandDefinition("""
            SELECT o.id AS offer_id, n.node_id, o.window_start, o.window_end
            FROM offer_nodes n JOIN offers o ON o.id = n.offer_id
            WHERE n.offer_id <> @offerId AND n.node_id = ANY(@nodeIds)
              AND n.during && ANY (SELECT tstzrange(s, e) FROM unnest(@starts::timestamptz[], @ends::timestamptz[]) AS w(s, e))
            ORDER BY o.window_start LIMIT 1
            """, args, tx, cancellationToken: ct));
        if (overlap is not null)
            return Marketplace.ServiceDefaults.Web.Problems.Conflict("offer-overlap",
                $"Node {overlap.NodeId} is already offered by active offer {overlap.OfferId} from {Iso(overlap.WindowStart)} to {Iso(overlap.WindowEnd)}; " +
                "withdraw that offer or choose a window that does not overlap it.");
        try
        {
            await connection.ExecuteAsync(new CommandDefinition("""
                DELETE FROM offer_nodes WHERE offer_id = @offerId;
                INSERT INTO offer_nodes (offer_id, node_id, during)
                SELECT @offerId, n, tstzrange(s, e) FROM unnest(@nodeIds) AS n, unnest(@starts::timestamptz[], @ends::timestamptz[]) AS w(s, e);
                """, args, tx, cancellationToken: ct));
        }
        catch (PostgresException e) when (e.SqlState == PostgresErrorCodes.ExclusionViolation)
        {
            // Only reachable by a race the node locks should already prevent; the constraint has the last word.
            return Marketplace.ServiceDefaults.Web.Problems.Conflict("offer-overlap",
                "One of these nodes was offered for an overlapping window at the same moment; retry to see which.");
        }
        return null;
    }

    public static string Iso(DateTimeOffset t) =>
        t.UtcDateTime.ToString("yyyy-MM-dd'T'HH:mm:ss'Z'", System.Globalization.CultureInfo.InvariantCulture);
}
