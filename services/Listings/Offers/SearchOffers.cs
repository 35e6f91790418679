using System.Buffers.Text;
using System.Globalization;
using System.Text;
using Dapper;
using Marketplace.Listings.Accelerators;
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
    [property: FromQuery(Name = "max_price")] long? MaxPrice,
    [property: FromQuery(Name = "currency")] string? Currency,
    [property: FromQuery(Name = "available_from")] DateTimeOffset? AvailableFrom,
    [property: FromQuery(Name = "available_to")] DateTimeOffset? AvailableTo,
    [property: FromQuery(Name = "sort")] string? Sort,
    [property: FromQuery(Name = "cursor")] string? Cursor,
    [property: FromQuery(Name = "limit")] int? Limit);

/// <summary>
/// Active offers whose window has not ended, of every provider (the market is public to any role).
/// available_from/available_to ask for a window that covers that interval (either bound alone: that instant).
/// sort=created_at (default, newest first) or sort=price (cheapest first; needs currency, amounts of different
/// currencies do not compare). Keyset pagination: the cursor is the last row's sort key and id.
/// </summary>
internal static class SearchOffers
{
    public const int DefaultLimit = 20;
    public const int MaxLimit = 100;

    public static void Map(IEndpointRouteBuilder app) =>
        app.MapGet("/v1/offers", HandleAsync).WithName("SearchOffers").WithTags("Offers");

    private sealed record Cursor(string Sort, long Key, Guid Id);

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
            .Require(q.MaxPrice is null or >= 0, "max_price", "must be an amount in minor units, 0 or more.")
            .Require(q.MaxPrice is null || q.Currency is not null, "currency", "is required with max_price (the amount is in that currency's minor units).")
            .Require(sort is "created_at" or "price", "sort", "must be created_at or price.")
            .Require(sort != "price" || q.Currency is not null, "currency", "is required with sort=price (asks in different currencies do not compare).")
            .Require(limit is >= 1 and <= MaxLimit, "limit", $"must be between 1 and {MaxLimit}.")
            .Require(q.AvailableFrom is null || q.AvailableTo is null || q.AvailableTo > q.AvailableFrom, "available_to", "must be after available_from.");
        if (q.Cursor is not null)
        {
            cursor = Decode(q.Cursor);
            v.Require(cursor is not null && cursor.Sort == sort, "cursor",
                "is not a cursor of this listing; pass next_cursor from the previous page with the same sort.");
        }

        await using var connection = await dataSource.OpenConnectionAsync(ct);
        if (q.AcceleratorModel is not null && await ListAccelerators.UnknownModelAsync(connection, null, q.AcceleratorModel, ct) is { } unknown)
            v.Add("accelerator_model", unknown);
        if (v.Failed) return v.Problem;

        var where = new List<string> { "status = 'active'", "window_end > @now" };
        if (q.AcceleratorModel is not null) where.Add("accelerator_model = @AcceleratorModel");
        if (q.Region is not null) where.Add("region = @Region");
        if (q.Jurisdiction is not null) where.Add("jurisdiction = @Jurisdiction");
        if (q.MinCount is not null) where.Add("accelerator_count >= @MinCount");
        if (q.Currency is not null) where.Add("ask_currency = @Currency");
        if (q.MaxPrice is not null) where.Add("ask_amount <= @MaxPrice");
        if (q.AvailableFrom is not null) where.Add("window_start <= @from AND window_end > @from");
        if (q.AvailableTo is not null) where.Add("window_start < @to AND window_end >= @to");
        var byPrice = sort == "price";
        if (cursor is not null)
            where.Add(byPrice ? "(ask_amount, id) > (@key, @cursorId)" : "(created_at, id) < (@keyTime, @cursorId)");
        var sql = $"""
            SELECT {OfferQueries.Columns} FROM offers
            WHERE {string.Join(" AND ", where)}
            ORDER BY {(byPrice ? "ask_amount, id" : "created_at DESC, id DESC")}
            LIMIT @take
            """;
        var args = new DynamicParameters(q);
        args.AddDynamicParams(new
        {
            now = time.GetUtcNow(),
            from = q.AvailableFrom?.ToUniversalTime(),
            to = q.AvailableTo?.ToUniversalTime(),
            key = cursor?.Key,
            keyTime = cursor is null ? (DateTimeOffset?)null : new DateTimeOffset(cursor.Key, TimeSpan.Zero),
            cursorId = cursor?.Id,
            take = limit + 1,
        });
        var rows = (await connection.QueryAsync<OfferResponse>(new CommandDefinition(sql, args, cancellationToken: ct))).AsList();

        string? next = null;
        if (rows.Count > limit)
        {
            rows.RemoveAt(limit);
            var last = rows[^1];
            next = Encode(new Cursor(sort, byPrice ? last.AskAmount : last.CreatedAt.UtcTicks, last.Id));
        }
        return TypedResults.Ok(new OfferList(rows, next));
    }

    private static string Encode(Cursor c) =>
        Base64Url.EncodeToString(Encoding.UTF8.GetBytes(string.Create(CultureInfo.InvariantCulture, $"{c.Sort}|{c.Key}|{c.Id}")));

    private static Cursor? Decode(string s)
    {
        try
        {
            var parts = Encoding.UTF8.GetString(Base64Url.DecodeFromChars(s)).Split('|');
            return parts.Length == 3 && long.TryParse(parts[1], NumberStyles.Integer, CultureInfo.InvariantCulture, out var key)
                && Guid.TryParse(parts[2], out var id) && key >= 0 && key <= DateTimeOffset.MaxValue.UtcTicks
                ? new Cursor(parts[0], key, id)
                : null;
        }
        catch (FormatException)
        {
            return null;
        }
    }
}
