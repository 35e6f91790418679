using System.Globalization;
using Dapper;
using Marketplace.Listings.Accelerators;
using Marketplace.Listings.Clusters;
using Marketplace.ServiceDefaults.Web;
using Microsoft.AspNetCore.Http.HttpResults;
using Microsoft.AspNetCore.Mvc;
using Npgsql;

namespace Marketplace.Listings.Offers;

public sealed record SearchOffersQuery(
    [property: FromQuery(Name = "accelerator_model")] string? AcceleratorModel,
    [property: FromQuery(Name = "region")] string? Region,
    [property: FromQuery(Name = "jurisdiction")] string? Jurisdiction,
    [property: FromQuery(Name = "min_count")] int? MinCount,
    [property: FromQuery(Name = "per_node")] int? PerNode,
    [property: FromQuery(Name = "min_nodes")] int? MinNodes,
    [property: FromQuery(Name = "fabric")] string? Fabric,
    [property: FromQuery(Name = "min_fabric_gbps")] int? MinFabricGbps,
    [property: FromQuery(Name = "interconnect")] string? Interconnect,
    [property: FromQuery(Name = "compliance")] string? Compliance,
    [property: FromQuery(Name = "min_reliability")] decimal? MinReliability,
    [property: FromQuery(Name = "verified")] bool? Verified,
    [property: FromQuery(Name = "interruptible")] bool? Interruptible,
    [property: FromQuery(Name = "sla_level")] string? SlaLevel,
    [property: FromQuery(Name = "max_price")] long? MaxPrice,
    [property: FromQuery(Name = "currency")] string? Currency,
    [property: FromQuery(Name = "available_from")] DateTimeOffset? AvailableFrom,
    [property: FromQuery(Name = "available_to")] DateTimeOffset? AvailableTo,
    [property: FromQuery(Name = "sort")] string? Sort,
    [property: FromQuery(Name = "cursor")] string? Cursor,
    [property: FromQuery(Name = "limit")] int? Limit);

/// <summary>
/// Active offers whose last window has not ended, of every provider (the market is public to any role).
/// <list type="bullet">
/// <item>available_from/available_to: one of the offer's windows covers that interval (either bound alone: that instant),
/// and no node of the offer has maintenance in it.</item>
/// <item>Gang shape: per_node (at least that many accelerators on every node), min_nodes, fabric (all nodes of an offer
/// share their cluster's fabric), min_fabric_gbps. interconnect: the accelerators' scale-up link family (nvlink, hccs, pcie ...).</item>
/// <item>compliance=iso27001,mlps-3,...: every listed attestation held and unexpired (mlps-N: level N or higher).</item>
/// <item>min_reliability (0 to 1): offers whose nodes have not reported yet have none and are left out.</item>
/// <item>sort=created_at (default, newest first), price (cheapest first; needs currency) or reliability (best first, none last).</item>
/// </list>
/// Keyset pagination: the cursor is the last row's sort key and id.
/// </summary>
internal static class SearchOffers
{
    public const int DefaultLimit = Cursor.DefaultLimit;
    public const int MaxLimit = Cursor.MaxLimit;
    public static readonly string[] Sorts = ["created_at", "price", "reliability"];

    public static void Map(IEndpointRouteBuilder app) =>
        app.MapGet("/v1/offers", HandleAsync).WithName("SearchOffers").WithTags("Offers");

    /// <summary>A compliance requirement: an attestation kind, and for MLPS the lowest acceptable level.</summary>
    private sealed record Requirement(string Kind, int Level);

    private static async Task<Results<Ok<OfferList>, ValidationProblem>> HandleAsync(
        [AsParameters] SearchOffersQuery q, NpgsqlDataSource dataSource, TimeProvider time, CancellationToken ct)
    {
        var sort = q.Sort ?? "created_at";
        var limit = q.Limit ?? DefaultLimit;
        Cursor? cursor = null;
        var v = new Validation()
            .Require(q.Region is null || Inputs.IsRegion(q.Region), "region", Inputs.RegionRule + ".")
            .Require(q.Jurisdiction is null || Inputs.IsJurisdiction(q.Jurisdiction), "jurisdiction", Inputs.JurisdictionRule + ".")
            .Require(q.Currency is null || Inputs.IsCurrency(q.Currency), "currency", Inputs.CurrencyRule + ".")
            .Require(q.MinCount is null or >= 1, "min_count", "must be at least 1.")
            .Require(q.PerNode is null or (>= 1 and <= RegisterNode.MaxAcceleratorsPerNode), "per_node",
                $"must be between 1 and {RegisterNode.MaxAcceleratorsPerNode} (accelerators on every node of the offer).")
            .Require(q.MinNodes is null or >= 1, "min_nodes", "must be at least 1.")
            .Require(q.Fabric is null || Fabrics.All.Contains(q.Fabric), "fabric", $"must be one of {string.Join(", ", Fabrics.All)}.")
            .Require(q.MinFabricGbps is null or >= 0, "min_fabric_gbps", "must be 0 or more (Gbit/s per node).")
            .Require(q.Interconnect is null || Inputs.Region().IsMatch(q.Interconnect), "interconnect",
                "must be an interconnect family in lower case, e.g. nvlink, hccs, infinity-fabric, pcie.")
            .Require(q.MinReliability is null or (>= 0 and <= 1), "min_reliability", "must be between 0 and 1 (e.g. 0.995).")
            .Require(q.SlaLevel is null || OfferTermRules.SlaLevels.Contains(q.SlaLevel), "sla_level",
                $"must be one of {string.Join(", ", OfferTermRules.SlaLevels)}.")
            .Require(q.MaxPrice is null or >= 0, "max_price", "must be an amount in minor units, 0 or more.")
            .Require(q.MaxPrice is null || q.Currency is not null, "currency", "is required with max_price (the amount is in that currency's minor units).")
            .Require(Sorts.Contains(sort), "sort", "must be created_at, price or reliability.")
            .Require(sort != "price" || q.Currency is not null, "currency", "is required with sort=price (asks in different currencies do not compare).")
            .Require(limit is >= 1 and <= MaxLimit, "limit", $"must be between 1 and {MaxLimit}.")
            .Require(q.AvailableFrom is null || q.AvailableTo is null || q.AvailableTo > q.AvailableFrom, "available_to", "must be after available_from.")
            // A bound alone stands for the microsecond at it (see Wanted), which must exist.
            .Require(q.AvailableFrom is null || q.AvailableFrom.Value.UtcTicks < DateTimeOffset.MaxValue.UtcTicks - Microsecond.Ticks, "available_from",
                "must be an ISO-8601 UTC time before the year 10000.")
            .Require(q.AvailableTo is null || q.AvailableTo.Value.UtcTicks >= Microsecond.Ticks, "available_to",
                "must be an ISO-8601 UTC time after 0001-01-01T00:00:00Z.");
        var requirements = ParseCompliance(q.Compliance, v);
        if (q.Cursor is not null)
        {
            cursor = Cursor.Decode(q.Cursor);
            // A created_at cursor's key is a time (ticks, never negative); the -1 that reliability cursors use for "none" is not one.
            v.Require(cursor is not null && cursor.Kind == sort && (sort != "created_at" || cursor.Key >= 0), "cursor",
                "is not a cursor of this listing; pass next_cursor from the previous page with the same sort.");
        }

        await using var connection = await dataSource.OpenConnectionAsync(ct);
        if (q.AcceleratorModel is not null && await ListAccelerators.UnknownModelAsync(connection, null, q.AcceleratorModel, ct) is { } unknown)
            v.Add("accelerator_model", unknown);
        if (v.Failed) return v.Problem;

        var now = time.GetUtcNow();
        var args = new DynamicParameters(q);
        var where = new List<string> { "status = 'active'", "window_end > @now" };
        if (q.AcceleratorModel is not null) where.Add("accelerator_model = @AcceleratorModel");
        if (q.Region is not null) where.Add("region = @Region");
        if (q.Jurisdiction is not null) where.Add("jurisdiction = @Jurisdiction");
        if (q.MinCount is not null) where.Add("accelerator_count >= @MinCount");
        if (q.PerNode is not null) where.Add("per_node >= @PerNode");
        if (q.MinNodes is not null) where.Add("node_count >= @MinNodes");
        if (q.Fabric is not null) where.Add("fabric = @Fabric");
        if (q.MinFabricGbps is not null) where.Add("fabric_gbps >= @MinFabricGbps");
        if (q.Interconnect is not null)
            where.Add("accelerator_model IN (SELECT id FROM accelerators WHERE interconnect = @Interconnect OR interconnect LIKE @Interconnect || '%')");
        if (q.MinReliability is not null)
        {
            where.Add("reliability_ppm >= @minPpm");
            args.Add("minPpm", (int)Math.Ceiling(q.MinReliability.Value * 1_000_000m));
        }
        if (q.Verified is not null) where.Add("ready = @Verified");
        if (q.Interruptible is not null) where.Add("interruptible_allowed = @Interruptible");
        if (q.SlaLevel is not null) where.Add("sla_level = @SlaLevel");
        if (q.Currency is not null) where.Add("ask_currency = @Currency");
        if (q.MaxPrice is not null) where.Add("ask_amount <= @MaxPrice");
        for (var i = 0; i < requirements.Count; i++)
        {
            where.Add($"""
                cluster_id IN (SELECT cluster_id FROM cluster_attestations
                               WHERE kind = @kind{i} AND expires_at > @now AND (level IS NULL OR level >= @level{i}))
                """);
            args.Add("kind" + i, requirements[i].Kind);
            args.Add("level" + i, requirements[i].Level);
        }
        if (Wanted(q) is { } wanted)
        {
            // One window covers the whole interval (windows never touch, so a covering window is one the provider gave).
            where.Add("windows @> tstzrange(@wantFrom, @wantTo)");
            where.Add("""
                NOT EXISTS (SELECT 1 FROM node_maintenance m
                            WHERE m.node_id = ANY(node_ids) AND m.cancelled_at IS NULL AND m.during && tstzrange(@wantFrom, @wantTo))
                """);
            args.Add("wantFrom", wanted.From);
            args.Add("wantTo", wanted.To);
        }

        var (key, order) = sort switch
        {
            "price" => ("ask_amount", "ask_amount, id"),
            "reliability" => ("coalesce(reliability_ppm, -1)", "coalesce(reliability_ppm, -1) DESC, id DESC"),
            _ => ("created_at", "created_at DESC, id DESC"),
        };
        if (cursor is not null)
            where.Add(sort == "price" ? $"({key}, id) > (@key, @cursorId)" : $"({key}, id) < (@key, @cursorId)");
        var sql = $"""
            SELECT {OfferQueries.Columns} FROM offers
            WHERE {string.Join(" AND ", where)}
            ORDER BY {order}
            LIMIT @take
            """;
        args.AddDynamicParams(new
        {
            now,
            key = cursor is null ? null : sort == "created_at" ? new DateTimeOffset(cursor.Key, TimeSpan.Zero) : (object)cursor.Key,
            cursorId = cursor?.Id,
            take = limit + 1,
        });
        var rows = (await connection.QueryAsync<OfferResponse>(new CommandDefinition(sql, args, cancellationToken: ct))).AsList();

        string? next = null;
        if (rows.Count > limit)
        {
            rows.RemoveAt(limit);
            var last = rows[^1];
            var lastKey = sort switch
            {
                "price" => last.AskAmount,
                "reliability" => last.ReliabilityPpm ?? -1,
                _ => last.CreatedAt.UtcTicks,
            };
            next = new Cursor(sort, lastKey, last.Id).Encode();
        }
        return TypedResults.Ok(new OfferList(await OfferQueries.WithSlotsAsync(connection, null, rows, ct), next));
    }

    private static readonly TimeSpan Microsecond = TimeSpan.FromTicks(10); // PostgreSQL's

    /// <summary>The interval a renter wants; a bound alone stands for the microsecond at (or just before) it.</summary>
    private static (DateTimeOffset From, DateTimeOffset To)? Wanted(SearchOffersQuery q)
    {
        var tick = Microsecond;
        return (q.AvailableFrom?.ToUniversalTime(), q.AvailableTo?.ToUniversalTime()) switch
        {
            ({ } from, { } to) => (from, to),
            ({ } from, null) => (from, from + tick),
            (null, { } to) => (to - tick, to),
            _ => null,
        };
    }

    private static List<Requirement> ParseCompliance(string? compliance, Validation v)
    {
        var requirements = new List<Requirement>();
        if (compliance is null) return requirements;
        foreach (var token in compliance.Split(',', StringSplitOptions.TrimEntries | StringSplitOptions.RemoveEmptyEntries))
        {
            if (token.StartsWith("mlps-", StringComparison.Ordinal) && int.TryParse(token[5..], NumberStyles.None, CultureInfo.InvariantCulture, out var level)
                && level is >= 1 and <= 5)
                requirements.Add(new Requirement("mlps", level));
            else if (RegisterCluster.AttestationKinds.Contains(token))
                requirements.Add(new Requirement(token, 0));
            else
                v.Add("compliance", $"'{token}' is not an attestation; use a comma-separated list of data-residency, iso27001, soc2, mlps or mlps-1 to mlps-5.");
        }
        return requirements;
    }
}
