using Dapper;
using Marketplace.Listings.Clusters;
using Marketplace.ServiceDefaults.Data;
using Marketplace.ServiceDefaults.Web;
using Microsoft.AspNetCore.Http.HttpResults;
using Microsoft.Extensions.Options;

namespace Marketplace.Listings.Offers;

/// <param name="Windows">Several availability windows; window_start/window_end may then be left out (they are the envelope).</param>
/// <param name="InterruptibleFloorPerHour">The lowest price interruptible use trades at (needs interruptible_allowed).</param>
/// <param name="PreemptionNoticeSeconds">The notice an interruptible lease gets before it is preempted (default 0).</param>
/// <param name="SlaLevel">none, standard (default) or premium: how recorded downtime turns into credits.</param>
public sealed record PublishOfferRequest(
    Guid? ClusterId,
    Guid[]? NodeIds,
    DateTimeOffset? WindowStart,
    DateTimeOffset? WindowEnd,
    MoneyInput? AskPerHour,
    int? MinLeaseSeconds,
    bool? InterruptibleAllowed,
    TimeWindowInput[]? Windows = null,
    MoneyInput? InterruptibleFloorPerHour = null,
    int? PreemptionNoticeSeconds = null,
    string? SlaLevel = null);

internal static class PublishOffer
{
    public const int MaxNodesPerOffer = 64;

    public static void Map(IEndpointRouteBuilder app) =>
        app.MapPost("/v1/offers", HandleAsync).WithName("PublishOffer").WithTags("Offers");

    private sealed record NodeRow(Guid Id, string AcceleratorModel, int AcceleratorCount, bool Ready);

    private static async Task<Results<Created<OfferResponse>, ValidationProblem, ProblemHttpResult>> HandleAsync(
        PublishOfferRequest request, Caller caller, Db db, TimeProvider time, IOptions<MarketOptions> market, CancellationToken ct)
    {
        if (!caller.Has(OrgRoles.Provider)) return Problems.Forbidden("Only provider organisations publish offers.");

        var now = time.GetUtcNow().ToMicroseconds();
        var nodeIds = request.NodeIds ?? [];
        var v = new Validation()
            .Require(request.ClusterId is not null, "cluster_id", "is required.")
            .Require(nodeIds.Length > 0, "node_ids", "must list at least one node of the cluster.")
            .Require(nodeIds.Length <= MaxNodesPerOffer, "node_ids", $"may list at most {MaxNodesPerOffer} nodes.")
            .Require(nodeIds.Distinct().Count() == nodeIds.Length, "node_ids", "lists a node more than once.");
        var terms = OfferTermRules.Check(new OfferTermsInput(request.WindowStart, request.WindowEnd, request.Windows, request.AskPerHour,
            request.MinLeaseSeconds, request.InterruptibleAllowed, request.InterruptibleFloorPerHour, request.PreemptionNoticeSeconds,
            request.SlaLevel), v, now, market.Value.MinLeaseSeconds);

        await using var tx = await db.BeginAsync(ct);
        ClusterResponse? cluster = null;
        if (request.ClusterId is { } clusterId)
        {
            cluster = await ClusterQueries.FindOwnAsync(tx.Connection, tx.Transaction, clusterId, caller.OrgId, ct);
            if (cluster is null) return Problems.NotFound("cluster", clusterId);
        }
        if (v.Failed || terms is null) return v.Problem;

        // Locked so that an offer and a concurrent one on the same nodes are decided one after the other.
        var nodes = (await tx.Connection.QueryAsync<NodeRow>(new CommandDefinition("""
            SELECT id, accelerator_model, accelerator_count, health = 'healthy' AND verified AS ready FROM nodes
            WHERE id = ANY(@nodeIds) AND cluster_id = @clusterId ORDER BY id FOR UPDATE
            """, new { nodeIds, clusterId = cluster!.Id }, tx.Transaction, cancellationToken: ct))).AsList();
        var missing = nodeIds.Except(nodes.Select(n => n.Id)).ToList();
        if (missing.Count > 0)
            return v.Add("node_ids", $"{string.Join(", ", missing)} {(missing.Count == 1 ? "is not a node" : "are not nodes")} of cluster {cluster.Id}.").Problem;
        var models = nodes.Select(n => n.AcceleratorModel).Distinct().Order().ToList();
        if (models.Count > 1)
            return v.Add("node_ids", $"mixes accelerator models ({string.Join(", ", models)}); one offer sells one model, publish one offer per model.").Problem;

        var offer = new OfferResponse
        {
            Id = Guid.CreateVersion7(),
            ProviderOrgId = caller.OrgId,
            ClusterId = cluster.Id,
            NodeIds = nodeIds,
            AcceleratorModel = models[0],
            Region = cluster.Region,
            Jurisdiction = cluster.Jurisdiction,
            AcceleratorCount = nodes.Sum(n => n.AcceleratorCount),
            NodeCount = nodes.Count,
            PerNode = nodes.Min(n => n.AcceleratorCount),
            Fabric = cluster.Fabric,
            FabricGbps = cluster.FabricGbps,
            Verified = nodes.All(n => n.Ready),
            Status = OfferStatus.Active,
            CreatedAt = now,
        }.WithTerms(terms);

        await tx.Connection.ExecuteAsync(new CommandDefinition($"""
            INSERT INTO offers (id, provider_org_id, cluster_id, node_ids, accelerator_model, region, jurisdiction, accelerator_count,
                                window_start, window_end, windows, ask_amount, ask_currency, min_lease_seconds, interruptible_allowed,
                                interruptible_floor_amount, preemption_notice_seconds, sla_level, node_count, per_node, fabric, fabric_gbps,
                                ready, status, created_at)
            VALUES (@Id, @ProviderOrgId, @ClusterId, @NodeIds, @AcceleratorModel, @Region, @Jurisdiction, @AcceleratorCount,
                    @WindowStart, @WindowEnd, {OfferWrites.WindowsFromRanges}, @AskAmount, @AskCurrency, @MinLeaseSeconds, @InterruptibleAllowed,
                    @InterruptibleFloorAmount, @PreemptionNoticeSeconds, @SlaLevel, @NodeCount, @PerNode, @Fabric, @FabricGbps,
                    @Verified, @Status, @CreatedAt)
            """, OfferWrites.Args(offer), tx.Transaction, cancellationToken: ct));
        // After the offer row (offer_nodes references it); a conflict rolls both back.
        var conflict = await OfferQueries.ClaimNodesAsync(tx.Connection, tx.Transaction, offer.Id, nodeIds, terms.Windows, ct);
        if (conflict is not null) return conflict;
        await tx.PublishAsync(offer.ToEvent(now), ct);
        await tx.CommitAsync(ct);
        return TypedResults.Created($"/v1/offers/{offer.Id}", offer);
    }
}

internal static class OfferWrites
{
    /// <summary>The offer's windows as a multirange, from the parallel arrays of <see cref="Args"/>.</summary>
    public const string WindowsFromRanges =
        "(SELECT range_agg(tstzrange(s, e)) FROM unnest(@WindowStarts::timestamptz[], @WindowEnds::timestamptz[]) AS w(s, e))";

    public static OfferResponse WithTerms(this OfferResponse offer, OfferTerms terms) => offer with
    {
        WindowStart = terms.Windows[0].Start,
        WindowEnd = terms.Windows[^1].End,
        WindowRanges = terms.Windows.Select(w => new NpgsqlTypes.NpgsqlRange<DateTime>(w.Start.UtcDateTime, true, w.End.UtcDateTime, false)).ToArray(),
        AskAmount = terms.Ask.Amount,
        AskCurrency = terms.Ask.Currency,
        MinLeaseSeconds = terms.MinLeaseSeconds,
        InterruptibleAllowed = terms.InterruptibleAllowed,
        InterruptibleFloorAmount = terms.FloorAmount,
        PreemptionNoticeSeconds = terms.PreemptionNoticeSeconds,
        SlaLevel = terms.SlaLevel,
    };

    public static DynamicParameters Args(OfferResponse offer)
    {
        var args = new DynamicParameters(new
        {
            offer.Id, offer.ProviderOrgId, offer.ClusterId, offer.NodeIds, offer.AcceleratorModel, offer.Region, offer.Jurisdiction,
            offer.AcceleratorCount, offer.WindowStart, offer.WindowEnd, offer.AskAmount, offer.AskCurrency, offer.MinLeaseSeconds,
            offer.InterruptibleAllowed, offer.InterruptibleFloorAmount, offer.PreemptionNoticeSeconds, offer.SlaLevel, offer.NodeCount,
            offer.PerNode, offer.Fabric, offer.FabricGbps, offer.Verified, offer.Status, offer.CreatedAt, offer.UpdatedAt,
        });
        args.Add("WindowStarts", offer.WindowRanges.Select(r => r.LowerBound).ToArray());
        args.Add("WindowEnds", offer.WindowRanges.Select(r => r.UpperBound).ToArray());
        return args;
    }
}
