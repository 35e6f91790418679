using System.Text.Json.Serialization;
using Dapper;
using Microsoft.AspNetCore.Http.HttpResults;
using Npgsql;

namespace Marketplace.Listings.Accelerators;

/// <param name="Bf16Tflops">The vendor's dense BF16 tensor figure; null where none is published (see notes).</param>
/// <param name="Interconnect">The scale-up link between accelerators of a node: nvlink4, hccs, infinity-fabric, pcie5 ...</param>
public sealed record Accelerator(string Id, string Vendor, string Name, int MemoryGb, decimal? Bf16Tflops, string Interconnect, string? Notes,
    bool Retired)
{
    /// <summary>Accelerators that talk over PCIe only have no NVLink-like island.</summary>
    [JsonIgnore] public bool HasScaleUpLink => !Interconnect.StartsWith("pcie", StringComparison.Ordinal);
}

public sealed record AcceleratorList(IReadOnlyList<Accelerator> Data, string? NextCursor);

internal static class ListAccelerators
{
    public const string Columns = "id, vendor, name, memory_gb, bf16_tflops, interconnect, notes, retired";

    public static void Map(IEndpointRouteBuilder app) =>
        app.MapGet("/v1/accelerators", HandleAsync).WithName("ListAccelerators").WithTags("Accelerators");

    private static async Task<Ok<AcceleratorList>> HandleAsync(NpgsqlDataSource db, CancellationToken ct)
    {
        await using var connection = await db.OpenConnectionAsync(ct);
        return TypedResults.Ok(new AcceleratorList(await AllAsync(connection, null, ct), null));
    }

    public static async Task<IReadOnlyList<Accelerator>> AllAsync(NpgsqlConnection connection, NpgsqlTransaction? tx, CancellationToken ct) =>
        (await connection.QueryAsync<Accelerator>(new CommandDefinition(
            $"SELECT {Columns} FROM accelerators ORDER BY vendor, id", transaction: tx, cancellationToken: ct))).AsList();

    public static Task<Accelerator?> FindAsync(NpgsqlConnection connection, NpgsqlTransaction? tx, string id, CancellationToken ct) =>
        connection.QuerySingleOrDefaultAsync<Accelerator>(new CommandDefinition(
            $"SELECT {Columns} FROM accelerators WHERE id = @id", new { id }, tx, cancellationToken: ct));

    /// <summary>The sentence an unknown model gets: it names the models that exist.</summary>
    public static async Task<string?> UnknownModelAsync(NpgsqlConnection connection, NpgsqlTransaction? tx, string model, CancellationToken ct)
    {
        var ids = (await connection.QueryAsync<string>(new CommandDefinition(
            "SELECT id FROM accelerators ORDER BY id", transaction: tx, cancellationToken: ct))).AsList();
        return ids.Contains(model) ? null : $"unknown accelerator model '{model}'; known models: {string.Join(", ", ids)}.";
    }
}
