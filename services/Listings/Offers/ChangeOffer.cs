using Dapper;
using Marketplace.ServiceDefaults.Data;
using Marketplace.ServiceDefaults.Web;
using Microsoft.AspNetCore.Http.HttpResults;
using Microsoft.Extensions.Options;

namespace Marketplace.Listings.Offers;

/// <summary>
/// The terms to change; what is left out stays. window_start/window_end replace the windows by that one window; windows
/// replaces them all. The nodes and slots of an offer do not change: withdraw it and publish another.
/// </summary>
public sealed record ChangeOfferRequest(
    DateTimeOffset? WindowStart,
    DateTimeOffset? WindowEnd,
    TimeWindowInput[]? Windows,
    MoneyInput? AskPerHour,
    int? MinLeaseSeconds,
    bool? InterruptibleAllowed,
    MoneyInput? InterruptibleFloorPerHour,
    int? PreemptionNoticeSeconds,
    string? SlaLevel,
    Guid[]? NodeIds,
    Guid? ClusterId,
    NodePartInput[]? Nodes = null);

internal static class ChangeOffer
{
    public static void Map(IEndpointRouteBuilder app) =>
        app.MapPatch("/v1/offers/{id:guid}", HandleAsync).WithName("ChangeOffer").WithTags("Offers");

    /// <summary>Publishes OfferPublished with the same id: the market replaces its copy of the offer.</summary>
    private static async Task<Results<Ok<OfferResponse>, ValidationProblem, ProblemHttpResult>> HandleAsync(
        Guid id, ChangeOfferRequest request, Caller caller, Db db, TimeProvider time, IOptions<MarketOptions> market, CancellationToken ct)
    {
        if (!caller.Has(OrgRoles.Provider)) return Problems.Forbidden("Only provider organisations change offers.");

        var now = time.GetUtcNow().ToMicroseconds();
        await using var tx = await db.BeginAsync(ct);
        var offer = await OfferQueries.FindOwnForUpdateAsync(tx.Connection, tx.Transaction, id, caller.OrgId, ct);
        if (offer is null) return Problems.NotFound("offer", id);

        var v = new Validation()
            .Require(request.NodeIds is null, "node_ids", "cannot change; withdraw this offer and publish one with the other nodes.")
            .Require(request.Nodes is null, "nodes", "cannot change; withdraw this offer and publish one with the other nodes or accelerator counts.")
            .Require(request.ClusterId is null, "cluster_id", "cannot change; withdraw this offer and publish one on the other cluster.")
            .Require(request != new ChangeOfferRequest(null, null, null, null, null, null, null, null, null, null, null, null), "body",
                "Give at least one term to change: ask_per_hour, windows (or window_start/window_end), min_lease_seconds, " +
                "interruptible_allowed, interruptible_floor_per_hour, preemption_notice_seconds or sla_level.");
        if (v.Failed) return v.Problem;
        if (offer.Status != OfferStatus.Active)
            return Problems.Conflict("offer-withdrawn", $"Offer {id} was withdrawn at {offer.WithdrawnAt:O}; publish a new offer instead.");

        var windowsChanged = request.Windows is not null || request.WindowStart is not null || request.WindowEnd is not null;
        var interruptible = request.InterruptibleAllowed ?? offer.InterruptibleAllowed;
        var merged = new OfferTermsInput(
            request.Windows is null ? request.WindowStart ?? offer.WindowStart : request.WindowStart,
            request.Windows is null ? request.WindowEnd ?? offer.WindowEnd : request.WindowEnd,
            request.Windows ?? (windowsChanged ? null : offer.Windows.Select(w => new TimeWindowInput(w.Start, w.End)).ToArray()),
            request.AskPerHour ?? new MoneyInput(offer.AskAmount, offer.AskCurrency),
            request.MinLeaseSeconds ?? offer.MinLeaseSeconds,
            interruptible,
            // Turning interruptible use off drops the floor that went with it.
            request.InterruptibleFloorPerHour ?? (interruptible && offer.InterruptibleFloorAmount is { } f ? new MoneyInput(f, offer.AskCurrency) : null),
            request.PreemptionNoticeSeconds ?? offer.PreemptionNoticeSeconds,
            request.SlaLevel ?? offer.SlaLevel);
        var terms = OfferTermRules.Check(merged, v, now, market.Value.MinLeaseSeconds);
        if (v.Failed || terms is null) return v.Problem;

        var changed = offer.WithTerms(terms) with { UpdatedAt = now };
        await tx.Connection.ExecuteAsync(new CommandDefinition($"""
            UPDATE offers SET window_start = @WindowStart, window_end = @WindowEnd, windows = {OfferWrites.WindowsFromRanges},
                ask_amount = @AskAmount, ask_currency = @AskCurrency, min_lease_seconds = @MinLeaseSeconds,
                interruptible_allowed = @InterruptibleAllowed, interruptible_floor_amount = @InterruptibleFloorAmount,
                preemption_notice_seconds = @PreemptionNoticeSeconds, sla_level = @SlaLevel, updated_at = @UpdatedAt
            WHERE id = @Id
            """, OfferWrites.Args(changed), tx.Transaction, cancellationToken: ct));
        // The same slots in the new windows: those the offer holds (all of its nodes' when it offers whole nodes).
        var slots = offer.SlotIds is null
            ? await OfferClaims.SlotsOfNodesAsync(tx.Connection, tx.Transaction, offer.NodeIds, ct)
            : await OfferClaims.SlotsAsync(tx.Connection, tx.Transaction, offer.SlotIds, ct);
        if (windowsChanged)
        {
            var taken = await OfferClaims.TakenAsync(tx.Connection, tx.Transaction, id, offer.NodeIds, terms.Windows, ct);
            if (OfferClaims.Conflict(slots, taken) is { } conflict) return conflict;
            if (await OfferClaims.ClaimAsync(tx.Connection, tx.Transaction, id, slots, terms.Windows, ct) is { } raced) return raced;
        }
        await tx.PublishAsync(changed.ToEvent(now), ct);
        await tx.CommitAsync(ct);
        return TypedResults.Ok(changed with { Slots = offer.SlotIds is null ? null : slots });
    }
}
