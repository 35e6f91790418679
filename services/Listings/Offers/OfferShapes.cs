using System.Text.Json.Serialization;
using Dapper;
using Marketplace.Contracts;
using Npgsql;

namespace Marketplace.Listings.Offers;

/// <summary>An offer as the API returns it; also the Dapper row (the ask is two columns, one JSON money object).</summary>
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
    public DateTimeOffset WindowStart { get; init; }
    public DateTimeOffset WindowEnd { get; init; }
    [JsonIgnore] public long AskAmount { get; init; }
    [JsonIgnore] public string AskCurrency { get; init; } = "";
    public Money AskPerHour => new(AskAmount, AskCurrency);
    public int MinLeaseSeconds { get; init; }
    public bool InterruptibleAllowed { get; init; }
    public required string Status { get; init; }
    public DateTimeOffset CreatedAt { get; init; }
    public DateTimeOffset? WithdrawnAt { get; init; }
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
        window_start, window_end, ask_amount, ask_currency, min_lease_seconds, interruptible_allowed, status, created_at, withdrawn_at
        """;

    /// <summary>The caller's offer (locked for a change), or null if it does not exist or is another org's (both a 404).</summary>
    public static Task<OfferResponse?> FindOwnForUpdateAsync(NpgsqlConnection connection, NpgsqlTransaction tx, Guid id, Guid org, CancellationToken ct) =>
        connection.QuerySingleOrDefaultAsync<OfferResponse>(new CommandDefinition(
            $"SELECT {Columns} FROM offers WHERE id = @id AND provider_org_id = @org FOR UPDATE",
            new { id, org }, tx, cancellationToken: ct));
}
