using Dapper;
using Microsoft.AspNetCore.Http.HttpResults;
using Npgsql;

namespace Marketplace.Listings.Accelerators;

public sealed record Accelerator(string Id, string Vendor, string Name, int MemoryGb, decimal? Bf16Tflops, string Interconnect, string? Notes);

public sealed record AcceleratorList(IReadOnlyList<Accelerator> Data, string? NextCursor);

internal static class ListAccelerators
{
    public static void Map(IEndpointRouteBuilder app) =>
        app.MapGet("/v1/accelerators", HandleAsync).WithName("ListAccelerators").WithTags("Accelerators");

    private static async Task<Ok<AcceleratorList>> HandleAsync(NpgsqlDataSource db, CancellationToken ct)
    {
        await using var connection = await db.OpenConnectionAsync(ct);
        return TypedResults.Ok(new AcceleratorList(await AllAsync(connection, null, ct), null));
    }

    public static async Task<IReadOnlyList<Accelerator>> AllAsync(NpgsqlConnection connection, NpgsqlTransaction? tx, CancellationToken ct) =>
        (await connection.QueryAsync<Accelerator>(new CommandDefinition("""
            SELECT id, vendor, name, memory_gb, bf16_tflops, interconnect, notes FROM accelerators ORDER BY vendor, id
            """, transaction: tx, cancellationToken: ct))).AsList();

    /// <summary>The sentence an unknown model gets: it names the models that exist.</summary>
    public static async Task<string?> UnknownModelAsync(NpgsqlConnection connection, NpgsqlTransaction? tx, string model, CancellationToken ct)
    {
        var ids = (await connection.QueryAsync<string>(new CommandDefinition(
            "SELECT id FROM accelerators ORDER BY id", transaction: tx, cancellationToken: ct))).AsList();
        return ids.Contains(model) ? null : $"unknown accelerator model '{model}'; known models: {string.Join(", ", ids)}.";
    }
}
