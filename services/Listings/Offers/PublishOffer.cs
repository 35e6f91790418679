using Dapper;
using Marketplace.Listings.Clusters;
using Marketplace.Listings.Domain;
using Marketplace.ServiceDefaults.Data;
using Marketplace.ServiceDefaults.Web;
using Microsoft.AspNetCore.Http.HttpResults;
using Microsoft.AspNetCore.Mvc;
using Microsoft.Extensions.Options;

namespace Marketplace.Listings.Offers;

/// <param name="NodeIds">Whole nodes: every accelerator of each.</param>
/// <param name="Nodes">Part of nodes instead: how many accelerators of each node; Listings chooses which (see SlotChoice).</param>
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
    string? SlaLevel = null,
    NodePartInput[]? Nodes = null);

/// <param name="Gpus">How many of the node's accelerators the offer sells, 1 to all of them.</param>
public sealed record NodePartInput(Guid? NodeId, int? Gpus);

internal static class PublishOffer
{
    public const int MaxNodesPerOffer = 64;

    public static void Map(IEndpointRouteBuilder app) =>
        app.MapPost("/v1/offers", HandleAsync).WithName("PublishOffer").WithTags("Offers");

    private sealed record NodeRow(Guid Id, string AcceleratorModel, int AcceleratorCount, bool Ready);

    /// <summary>
    /// With an Idempotency-Key (optional here, recommended): the same key and body again answer 200 with the offer the
    /// first request created, even when its window has started since; the key with another body is a 422.
    /// </summary>
    private static async Task<Results<Created<OfferResponse>, Ok<OfferResponse>, ValidationProblem, ProblemHttpResult>> HandleAsync(
        [FromHeader(Name = "Idempotency-Key")] string? idempotencyKey,
        PublishOfferRequest request, Caller caller, Db db, TimeProvider time, IOptions<MarketOptions> market, CancellationToken ct)
    {
        if (!caller.Has(OrgRoles.Provider)) return Problems.Forbidden("Only provider organisations publish offers.");
        if (Idempotency.Invalid(idempotencyKey, "offer") is { } badKey) return badKey;
        var requestHash = Idempotency.Hash(request);

        var now = time.GetUtcNow().ToMicroseconds();
        var parts = request.Nodes;
        // Whole nodes (node_ids) or part of nodes (nodes): the errors name the field the request used.
        var field = parts is null ? "node_ids" : "nodes";
        var nodeIds = parts?.Select(p => p.NodeId ?? Guid.Empty).ToArray() ?? request.NodeIds ?? [];
        var v = new Validation()
            .Require(request.ClusterId is not null, "cluster_id", "is required.")
            .Require(parts is null || request.NodeIds is null, "nodes",
                "cannot be given with node_ids: list whole nodes in node_ids, or part of nodes in nodes ([{node_id, gpus}]), not both.")
            .Require(nodeIds.Length > 0, field, "must list at least one node of the cluster (node_ids: whole nodes; nodes: [{node_id, gpus}] for part of nodes).")
            .Require(nodeIds.Length <= MaxNodesPerOffer, field, $"may list at most {MaxNodesPerOffer} nodes.")
            .Require(nodeIds.Distinct().Count() == nodeIds.Length, field, "lists a node more than once.");
        for (var i = 0; i < (parts?.Length ?? 0); i++)
            v.Require(parts![i].NodeId is not null && parts[i].NodeId != Guid.Empty, $"nodes[{i}].node_id", "is required.")
             .Require(parts[i].Gpus is >= 1 and <= RegisterNode.MaxAcceleratorsPerNode, $"nodes[{i}].gpus",
                 $"is required: how many of the node's accelerators to offer, 1 to {RegisterNode.MaxAcceleratorsPerNode}.");
        var terms = OfferTermRules.Check(new OfferTermsInput(request.WindowStart, request.WindowEnd, request.Windows, request.AskPerHour,
            request.MinLeaseSeconds, request.InterruptibleAllowed, request.InterruptibleFloorPerHour, request.PreemptionNoticeSeconds,
            request.SlaLevel), v, now, market.Value.MinLeaseSeconds);

        await using var tx = await db.BeginAsync(ct);
        // Requests with one key take turns; the second finds the first's offer.
        if (await Idempotency.FindAsync(tx, caller.OrgId, Idempotency.Scope.Offers, idempotencyKey, ct) is { } earlier)
        {
            if (earlier.RequestHash != requestHash) return Idempotency.Reused(idempotencyKey!, "offer", earlier.ObjectId);
            var existing = await tx.Connection.QuerySingleAsync<OfferResponse>(new CommandDefinition(
                $"SELECT {OfferQueries.Columns} FROM offers WHERE id = @ObjectId", new { earlier.ObjectId }, tx.Transaction, cancellationToken: ct));
            return TypedResults.Ok((await OfferQueries.WithSlotsAsync(tx.Connection, tx.Transaction, [existing], ct))[0]);
        }
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
            """, new { nodeIds, clusterId = cluster!.Id }, tx.Transaction, cancellationToken: ct))).ToDictionary(n => n.Id);
        var missing = nodeIds.Except(nodes.Keys).ToList();
        if (missing.Count > 0)
            return v.Add(field, $"{string.Join(", ", missing)} {(missing.Count == 1 ? "is not a node" : "are not nodes")} of cluster {cluster.Id}.").Problem;
        var models = nodes.Values.Select(n => n.AcceleratorModel).Distinct().Order().ToList();
        if (models.Count > 1)
            return v.Add(field, $"mixes accelerator models ({string.Join(", ", models)}); one offer sells one model, publish one offer per model.").Problem;
        for (var i = 0; i < (parts?.Length ?? 0); i++)
            if (parts![i].Gpus > nodes[nodeIds[i]].AcceleratorCount)
                v.Add($"nodes[{i}].gpus", $"asks for {parts[i].Gpus} accelerators but node {nodeIds[i]} has {nodes[nodeIds[i]].AcceleratorCount}.");
        if (v.Failed) return v.Problem;

        // Whole nodes take every slot; part of a node takes the slots SlotChoice picks among those no overlapping offer holds.
        var offerId = Guid.CreateVersion7();
        var slotsOfNodes = await OfferClaims.SlotsOfNodesAsync(tx.Connection, tx.Transaction, nodeIds, ct);
        var taken = await OfferClaims.TakenAsync(tx.Connection, tx.Transaction, offerId, nodeIds, terms.Windows, ct);
        List<OfferedSlot> slots;
        if (parts is null)
        {
            if (OfferClaims.Conflict(slotsOfNodes, taken) is { } conflict) return conflict;
            slots = slotsOfNodes;
        }
        else
        {
            var takenIds = taken.Select(c => c.SlotId).ToHashSet();
            slots = [];
            for (var i = 0; i < parts.Length; i++)
            {
                var ofNode = slotsOfNodes.Where(s => s.NodeId == nodeIds[i]).ToList();
                var chosen = SlotChoice.Choose(ofNode.Select(s => s.ToNodeSlot()), takenIds, parts[i].Gpus!.Value);
                if (chosen is null)
                    return OfferClaims.NotEnoughFree(nodeIds[i], parts[i].Gpus!.Value, ofNode.Count(s => !takenIds.Contains(s.Id)), taken);
                var chosenIds = chosen.Select(s => s.Id).ToHashSet();
                slots.AddRange(ofNode.Where(s => chosenIds.Contains(s.Id)));
            }
        }
        var perNode = slots.GroupBy(s => s.NodeId).Select(g => g.Count()).ToList();

        var offer = new OfferResponse
        {
            Id = offerId,
            ProviderOrgId = caller.OrgId,
            ClusterId = cluster.Id,
            NodeIds = nodeIds,
            SlotIds = parts is null ? null : slots.Select(s => s.Id).ToArray(),
            Slots = parts is null ? null : slots,
            AcceleratorModel = models[0],
            Region = cluster.Region,
            Jurisdiction = cluster.Jurisdiction,
            AcceleratorCount = slots.Count,
            NodeCount = nodes.Count,
            PerNode = perNode.Min(),
            Fabric = cluster.Fabric,
            FabricGbps = cluster.FabricGbps,
            Verified = nodes.Values.All(n => n.Ready),
            Status = OfferStatus.Active,
            CreatedAt = now,
        }.WithTerms(terms);

        await tx.Connection.ExecuteAsync(new CommandDefinition($"""
            INSERT INTO offers (id, provider_org_id, cluster_id, node_ids, slot_ids, accelerator_model, region, jurisdiction, accelerator_count,
                                window_start, window_end, windows, ask_amount, ask_currency, min_lease_seconds, interruptible_allowed,
                                interruptible_floor_amount, preemption_notice_seconds, sla_level, node_count, per_node, fabric, fabric_gbps,
                                ready, status, created_at)
            VALUES (@Id, @ProviderOrgId, @ClusterId, @NodeIds, @SlotIds, @AcceleratorModel, @Region, @Jurisdiction, @AcceleratorCount,
                    @WindowStart, @WindowEnd, {OfferWrites.WindowsFromRanges}, @AskAmount, @AskCurrency, @MinLeaseSeconds, @InterruptibleAllowed,
                    @InterruptibleFloorAmount, @PreemptionNoticeSeconds, @SlaLevel, @NodeCount, @PerNode, @Fabric, @FabricGbps,
                    @Verified, @Status, @CreatedAt)
            """, OfferWrites.Args(offer), tx.Transaction, cancellationToken: ct));
        await Idempotency.RememberAsync(tx, caller.OrgId, Idempotency.Scope.Offers, idempotencyKey, requestHash, offer.Id, ct);
        // After the offer row (offer_slots references it); a conflict rolls both back.
        if (await OfferClaims.ClaimAsync(tx.Connection, tx.Transaction, offer.Id, slots, terms.Windows, ct) is { } raced) return raced;
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
            offer.Id, offer.ProviderOrgId, offer.ClusterId, offer.NodeIds, offer.SlotIds, offer.AcceleratorModel, offer.Region, offer.Jurisdiction,
            offer.AcceleratorCount, offer.WindowStart, offer.WindowEnd, offer.AskAmount, offer.AskCurrency, offer.MinLeaseSeconds,
            offer.InterruptibleAllowed, offer.InterruptibleFloorAmount, offer.PreemptionNoticeSeconds, offer.SlaLevel, offer.NodeCount,
            offer.PerNode, offer.Fabric, offer.FabricGbps, offer.Verified, offer.Status, offer.CreatedAt, offer.UpdatedAt,
        });
        args.Add("WindowStarts", offer.WindowRanges.Select(r => r.LowerBound).ToArray());
        args.Add("WindowEnds", offer.WindowRanges.Select(r => r.UpperBound).ToArray());
        return args;
    }
}
