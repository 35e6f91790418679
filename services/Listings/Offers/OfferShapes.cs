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
    /// <summary>The offered slots when the offer is part of its nodes (<c>nodes: [{node_id, gpus}]</c>); null: every slot of every node.</summary>
    public IReadOnlyList<OfferedSlot>? Slots { get; init; }
    [JsonIgnore] public Guid[]? SlotIds { get; init; }
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
    /// <summary>Gang shape: how many nodes, and the fewest accelerators offered on any one of them.</summary>
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
            SlotIds = SlotIds,
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
        id, provider_org_id, cluster_id, node_ids, slot_ids, accelerator_model, region, jurisdiction, accelerator_count,
        window_start, window_end, windows AS window_ranges, ask_amount, ask_currency, min_lease_seconds, interruptible_allowed,
        interruptible_floor_amount, preemption_notice_seconds, sla_level, node_count, per_node, fabric, fabric_gbps,
        ready AS verified, reliability_ppm, status, created_at, updated_at, withdrawn_at
        """;

    /// <summary>The caller's offer (locked for a change), or null if it does not exist or is another org's (both a 404).</summary>
    public static Task<OfferResponse?> FindOwnForUpdateAsync(NpgsqlConnection connection, NpgsqlTransaction tx, Guid id, Guid org, CancellationToken ct) =>
        connection.QuerySingleOrDefaultAsync<OfferResponse>(new CommandDefinition(
            $"SELECT {Columns} FROM offers WHERE id = @id AND provider_org_id = @org FOR UPDATE",
            new { id, org }, tx, cancellationToken: ct));

    /// <summary>The offers with <see cref="OfferResponse.Slots"/> filled for those of part of their nodes (one query for all).</summary>
    public static async Task<List<OfferResponse>> WithSlotsAsync(NpgsqlConnection connection, NpgsqlTransaction? tx, IReadOnlyList<OfferResponse> offers,
        CancellationToken ct)
    {
        var ids = offers.Where(o => o.SlotIds is not null).SelectMany(o => o.SlotIds!).ToArray();
        if (ids.Length == 0) return offers.ToList();
        var slots = (await OfferClaims.SlotsAsync(connection, tx, ids, ct)).ToDictionary(s => s.Id);
        return offers.Select(o => o.SlotIds is null ? o : o with { Slots = o.SlotIds.Select(id => slots[id]).ToList() }).ToList();
    }

    public static string Iso(DateTimeOffset t) =>
        t.UtcDateTime.ToString("yyyy-MM-dd'T'HH:mm:ss'Z'", System.Globalization.CultureInfo.InvariantCulture);
}
