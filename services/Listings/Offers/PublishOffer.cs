using System.Globalization;
using Dapper;
using Marketplace.Contracts;
using Marketplace.Listings.Clusters;
using Marketplace.ServiceDefaults.Data;
using Marketplace.ServiceDefaults.Web;
using Microsoft.AspNetCore.Http.HttpResults;
using Microsoft.Extensions.Options;
using Npgsql;

namespace Marketplace.Listings.Offers;

public sealed record PublishOfferRequest(
    Guid? ClusterId,
    Guid[]? NodeIds,
    DateTimeOffset? WindowStart,
    DateTimeOffset? WindowEnd,
    MoneyInput? AskPerHour,
    int? MinLeaseSeconds,
    bool? InterruptibleAllowed);

internal static class PublishOffer
{
    public const int MaxNodesPerOffer = 64;

    public static void Map(IEndpointRouteBuilder app) =>
        app.MapPost("/v1/offers", HandleAsync).WithName("PublishOffer").WithTags("Offers");

    private sealed record NodeRow(Guid Id, string AcceleratorModel, int AcceleratorCount);

    private sealed record Overlap(Guid OfferId, Guid NodeId, DateTimeOffset WindowStart, DateTimeOffset WindowEnd);

    private static async Task<Results<Created<OfferResponse>, ValidationProblem, ProblemHttpResult>> HandleAsync(
        PublishOfferRequest request, Caller caller, Db db, TimeProvider time, IOptions<MarketOptions> market, CancellationToken ct)
    {
        if (!caller.Has(OrgRoles.Provider)) return Problems.Forbidden("Only provider organisations publish offers.");

        var now = time.GetUtcNow().ToMicroseconds();
        var minLease = market.Value.MinLeaseSeconds;
        var (start, end) = (request.WindowStart?.ToUniversalTime(), request.WindowEnd?.ToUniversalTime());
        var nodeIds = request.NodeIds ?? [];
        var v = new Validation()
            .Require(request.ClusterId is not null, "cluster_id", "is required.")
            .Require(nodeIds.Length > 0, "node_ids", "must list at least one node of the cluster.")
            .Require(nodeIds.Length <= MaxNodesPerOffer, "node_ids", $"may list at most {MaxNodesPerOffer} nodes.")
            .Require(nodeIds.Distinct().Count() == nodeIds.Length, "node_ids", "lists a node more than once.")
            .Require(start is not null, "window_start", "is required (ISO-8601 UTC).")
            .Require(end is not null, "window_end", "is required (ISO-8601 UTC).")
            .Require(request.AskPerHour?.Amount is > 0, "ask_per_hour.amount", "is required and must be a positive amount in minor units.")
            .Require(Inputs.IsCurrency(request.AskPerHour?.Currency), "ask_per_hour.currency", $"is required: {Inputs.CurrencyRule}.")
            .Require(request.MinLeaseSeconds >= minLease, "min_lease_seconds", $"is required and must be at least {minLease}.");
        if (start is not null && end is not null)
        {
            v.Require(end > start, "window_end", "must be after window_start.")
             .Require(end > now, "window_end", $"must be in the future (now is {Iso(now)}).");
            if (end > start && request.MinLeaseSeconds >= minLease)
                v.Require((end.Value - start.Value).TotalSeconds >= request.MinLeaseSeconds!.Value, "window_end",
                    $"leaves a window shorter than min_lease_seconds ({request.MinLeaseSeconds}); no lease would fit.");
        }

        await using var tx = await db.BeginAsync(ct);
        ClusterResponse? cluster = null;
        if (request.ClusterId is { } clusterId)
        {
            cluster = await ClusterQueries.FindOwnAsync(tx.Connection, tx.Transaction, clusterId, caller.OrgId, ct);
            if (cluster is null) return Problems.NotFound("cluster", clusterId);
        }
        if (v.Failed) return v.Problem;

        // Locked so that an offer and a concurrent one on the same nodes are decided one after the other.
        var nodes = (await tx.Connection.QueryAsync<NodeRow>(new CommandDefinition("""
            SELECT id, accelerator_model, accelerator_count FROM nodes
            WHERE id = ANY(@nodeIds) AND cluster_id = @clusterId ORDER BY id FOR UPDATE
            """, new { nodeIds, clusterId = cluster!.Id }, tx.Transaction, cancellationToken: ct))).AsList();
        var missing = nodeIds.Except(nodes.Select(n => n.Id)).ToList();
        if (missing.Count > 0)
            return v.Add("node_ids", $"{string.Join(", ", missing)} {(missing.Count == 1 ? "is not a node" : "are not nodes")} of cluster {cluster.Id}.").Problem;
        var models = nodes.Select(n => n.AcceleratorModel).Distinct().Order().ToList();
        if (models.Count > 1)
            return v.Add("node_ids", $"mixes accelerator models ({string.Join(", ", models)}); one offer sells one model, publish one offer per model.").Problem;

        var overlap = await tx.Connection.QueryFirstOrDefaultAsync<Overlap>(new CommandDefinition("""
            SELECT o.id AS offer_id, n.node_id, o.window_start, o.window_end
            FROM offer_nodes n JOIN offers o ON o.id = n.offer_id
            WHERE n.node_id = ANY(@nodeIds) AND n.during && tstzrange(@start, @end)
            ORDER BY o.window_start LIMIT 1
            """, new { nodeIds, start, end }, tx.Transaction, cancellationToken: ct));
        if (overlap is not null) return OverlapConflict(overlap.NodeId, overlap.OfferId, overlap.WindowStart, overlap.WindowEnd);

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
            WindowStart = start!.Value,
            WindowEnd = end!.Value,
            AskAmount = request.AskPerHour!.Amount!.Value,
            AskCurrency = request.AskPerHour.Currency!,
            MinLeaseSeconds = request.MinLeaseSeconds!.Value,
            InterruptibleAllowed = request.InterruptibleAllowed ?? false,
            Status = OfferStatus.Active,
            CreatedAt = now,
        };
        try
        {
            await tx.Connection.ExecuteAsync(new CommandDefinition($"""
                INSERT INTO offers ({OfferQueries.Columns})
                VALUES (@Id, @ProviderOrgId, @ClusterId, @NodeIds, @AcceleratorModel, @Region, @Jurisdiction, @AcceleratorCount,
                        @WindowStart, @WindowEnd, @AskAmount, @AskCurrency, @MinLeaseSeconds, @InterruptibleAllowed, @Status, @CreatedAt, NULL);
                INSERT INTO offer_nodes (offer_id, node_id, during)
                SELECT @Id, unnest(@NodeIds), tstzrange(@WindowStart, @WindowEnd);
                """, offer, tx.Transaction, cancellationToken: ct));
        }
        catch (PostgresException e) when (e.SqlState == PostgresErrorCodes.ExclusionViolation)
        {
            // Only reachable by a race the node locks above should already prevent; the constraint has the last word.
            return Problems.Conflict("offer-overlap", "One of these nodes was offered for an overlapping window at the same moment; retry to see which.");
        }
        await tx.PublishAsync(new OfferPublished(offer.Id, offer.ProviderOrgId, offer.ClusterId, offer.NodeIds, offer.AcceleratorModel,
            offer.Region, offer.Jurisdiction, offer.AcceleratorCount, offer.WindowStart, offer.WindowEnd, offer.AskPerHour,
            offer.MinLeaseSeconds, offer.InterruptibleAllowed, now), ct);
        await tx.CommitAsync(ct);
        return TypedResults.Created($"/v1/offers/{offer.Id}", offer);
    }

    private static ProblemHttpResult OverlapConflict(Guid nodeId, Guid offerId, DateTimeOffset start, DateTimeOffset end) =>
        Problems.Conflict("offer-overlap",
            $"Node {nodeId} is already offered by active offer {offerId} from {Iso(start)} to {Iso(end)}; " +
            "withdraw that offer or choose a window that does not overlap it.");

    private static string Iso(DateTimeOffset t) => t.UtcDateTime.ToString("yyyy-MM-dd'T'HH:mm:ss'Z'", CultureInfo.InvariantCulture);
}
