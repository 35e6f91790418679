using Dapper;
using Marketplace.ServiceDefaults.Data;
using Marketplace.ServiceDefaults.Web;
using Microsoft.AspNetCore.Http.HttpResults;

namespace Marketplace.Listings.Offers;

/// <summary>
/// One offer by id. An active offer is a public listing: any organisation reads it (as search shows it). A withdrawn
/// offer is read only by the provider that published it; for everyone else it is a 404, like an id that never existed.
/// </summary>
internal static class GetOffer
{
    public static void Map(IEndpointRouteBuilder app) =>
        app.MapGet("/v1/offers/{id:guid}", HandleAsync).WithName("GetOffer").WithTags("Offers");

    private static async Task<Results<Ok<OfferResponse>, ProblemHttpResult>> HandleAsync(Guid id, Caller caller, Db db, CancellationToken ct)
    {
        await using var connection = await db.DataSource.OpenConnectionAsync(ct);
        var offer = await connection.QuerySingleOrDefaultAsync<OfferResponse>(new CommandDefinition(
            $"SELECT {OfferQueries.Columns} FROM offers WHERE id = @id AND (status = 'active' OR provider_org_id = @org)",
            new { id, org = caller.OrgId }, cancellationToken: ct));
        if (offer is null) return Problems.NotFound("offer", id);
        return TypedResults.Ok((await OfferQueries.WithSlotsAsync(connection, null, [offer], ct))[0]);
    }
}
