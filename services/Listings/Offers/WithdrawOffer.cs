using Dapper;
using Marketplace.Contracts;
using Marketplace.ServiceDefaults.Data;
using Marketplace.ServiceDefaults.Web;
using Microsoft.AspNetCore.Http.HttpResults;

namespace Marketplace.Listings.Offers;

internal static class WithdrawOffer
{
    public static void Map(IEndpointRouteBuilder app) =>
        app.MapDelete("/v1/offers/{id:guid}", HandleAsync).WithName("WithdrawOffer").WithTags("Offers");

    /// <summary>Withdrawing twice answers the withdrawn offer again and publishes nothing more.</summary>
    private static async Task<Results<Ok<OfferResponse>, ProblemHttpResult>> HandleAsync(
        Guid id, Caller caller, Db db, TimeProvider time, CancellationToken ct)
    {
        if (!caller.Has(OrgRoles.Provider)) return Problems.Forbidden("Only provider organisations withdraw offers.");

        await using var tx = await db.BeginAsync(ct);
        var offer = await OfferQueries.FindOwnForUpdateAsync(tx.Connection, tx.Transaction, id, caller.OrgId, ct);
        if (offer is null) return Problems.NotFound("offer", id);
        offer = (await OfferQueries.WithSlotsAsync(tx.Connection, tx.Transaction, [offer], ct))[0];
        if (offer.Status == OfferStatus.Withdrawn) return TypedResults.Ok(offer);

        var now = time.GetUtcNow().ToMicroseconds();
        await tx.Connection.ExecuteAsync(new CommandDefinition("""
            UPDATE offers SET status = 'withdrawn', withdrawn_at = @now WHERE id = @id;
            DELETE FROM offer_slots WHERE offer_id = @id;
            """, new { id, now }, tx.Transaction, cancellationToken: ct));
        await tx.PublishAsync(new OfferWithdrawn(id, caller.OrgId, now), ct);
        await tx.CommitAsync(ct);
        return TypedResults.Ok(offer with { Status = OfferStatus.Withdrawn, WithdrawnAt = now });
    }
}
