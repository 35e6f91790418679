using Dapper;
using Marketplace.Contracts;
using Marketplace.ServiceDefaults.Data;
using Marketplace.ServiceDefaults.Web;
using Microsoft.AspNetCore.Http.HttpResults;

namespace Marketplace.Listings.Accelerators;

public sealed record AddAcceleratorRequest(string? Id, string? Vendor, string? Name, int? MemoryGb, decimal? Bf16Tflops, string? Interconnect, string? Notes);

/// <summary>A change to a catalog entry; what is left out stays. The id never changes (nodes and markets refer to it).</summary>
public sealed record ChangeAcceleratorRequest(string? Vendor, string? Name, int? MemoryGb, decimal? Bf16Tflops, string? Interconnect, string? Notes,
    bool? Retired);

/// <summary>
/// The catalog is data the platform's admins manage; providers pick from it and cannot invent models. Every addition or
/// change publishes AcceleratorModelChanged through the outbox, in the transaction that makes it.
/// </summary>
internal static class ManageAccelerators
{
    public static void Map(IEndpointRouteBuilder app)
    {
        app.MapPost("/v1/accelerators", AddAsync).WithName("AddAccelerator").WithTags("Accelerators");
        app.MapPatch("/v1/accelerators/{id}", ChangeAsync).WithName("ChangeAccelerator").WithTags("Accelerators");
    }

    private static async Task<Results<Created<Accelerator>, ValidationProblem, ProblemHttpResult>> AddAsync(
        AddAcceleratorRequest request, Caller caller, Db db, TimeProvider time, CancellationToken ct)
    {
        if (!caller.Has(OrgRoles.Admin)) return Problems.Forbidden("Only platform admins change the accelerator catalog.");
        var v = new Validation()
            .Require(request.Id is { Length: <= 40 } && Inputs.Region().IsMatch(request.Id), "id",
                "is required: lower-case letters and digits in dash-separated words, at most 40 characters, e.g. h100-sxm.");
        Check(v, request.Vendor, request.Name, request.MemoryGb, request.Bf16Tflops, request.Interconnect, request.Notes, required: true);
        if (v.Failed) return v.Problem;

        await using var tx = await db.BeginAsync(ct);
        var inserted = await tx.Connection.ExecuteAsync(new CommandDefinition("""
            INSERT INTO accelerators (id, vendor, name, memory_gb, bf16_tflops, interconnect, notes)
            VALUES (@Id, @Vendor, @Name, @MemoryGb, @Bf16Tflops, @Interconnect, @Notes) ON CONFLICT (id) DO NOTHING
            """, request, tx.Transaction, cancellationToken: ct));
        if (inserted == 0) return Problems.Conflict("duplicate-accelerator", $"The catalog already has {request.Id}; change it with PATCH /v1/accelerators/{request.Id}.");
        var added = (await ListAccelerators.FindAsync(tx.Connection, tx.Transaction, request.Id!, ct))!;
        await tx.PublishAsync(Changed(added, "added", time), ct);
        await tx.CommitAsync(ct);
        return TypedResults.Created($"/v1/accelerators/{request.Id}", added);
    }

    /// <summary>Publishes AcceleratorModelChanged only when something changed: a PATCH that repeats the entry is a no-op.</summary>
    private static async Task<Results<Ok<Accelerator>, ValidationProblem, ProblemHttpResult>> ChangeAsync(
        string id, ChangeAcceleratorRequest request, Caller caller, Db db, TimeProvider time, CancellationToken ct)
    {
        if (!caller.Has(OrgRoles.Admin)) return Problems.Forbidden("Only platform admins change the accelerator catalog.");
        var v = new Validation();
        Check(v, request.Vendor, request.Name, request.MemoryGb, request.Bf16Tflops, request.Interconnect, request.Notes, required: false);
        if (v.Failed) return v.Problem;

        await using var tx = await db.BeginAsync(ct);
        var before = await tx.Connection.QuerySingleOrDefaultAsync<Accelerator>(new CommandDefinition(
            $"SELECT {ListAccelerators.Columns} FROM accelerators WHERE id = @id FOR UPDATE", new { id }, tx.Transaction, cancellationToken: ct));
        if (before is null) return Problems.Of(StatusCodes.Status404NotFound, "not-found", "Not found", $"There is no accelerator {id} in the catalog.");

        // Memory is part of what agents are verified against; changing it later makes matching nodes unverified on their next heartbeat.
        var after = await tx.Connection.QuerySingleAsync<Accelerator>(new CommandDefinition($"""
            UPDATE accelerators SET vendor = coalesce(@Vendor, vendor), name = coalesce(@Name, name), memory_gb = coalesce(@MemoryGb, memory_gb),
                bf16_tflops = coalesce(@Bf16Tflops, bf16_tflops), interconnect = coalesce(@Interconnect, interconnect),
                notes = coalesce(@Notes, notes), retired = coalesce(@Retired, retired)
            WHERE id = @id
            RETURNING {ListAccelerators.Columns}
            """, new { id, request.Vendor, request.Name, request.MemoryGb, request.Bf16Tflops, request.Interconnect, request.Notes, request.Retired },
            tx.Transaction, cancellationToken: ct));
        if (after != before)
            await tx.PublishAsync(Changed(after, after.Retired == before.Retired ? "changed" : after.Retired ? "retired" : "reinstated", time), ct);
        await tx.CommitAsync(ct);
        return TypedResults.Ok(after);
    }

    private static AcceleratorModelChanged Changed(Accelerator a, string change, TimeProvider time) =>
        new(a.Id, a.Vendor, a.Name, a.MemoryGb, a.Bf16Tflops, a.Interconnect, a.Notes, a.Retired, change, time.GetUtcNow().ToMicroseconds());

    private static void Check(Validation v, string? vendor, string? name, int? memoryGb, decimal? tflops, string? interconnect, string? notes, bool required)
    {
        v.Require(vendor is null ? !required : vendor.Trim().Length is >= 1 and <= 100, "vendor", "is required: 1 to 100 characters, e.g. NVIDIA.")
         .Require(name is null ? !required : name.Trim().Length is >= 1 and <= 200, "name", "is required: 1 to 200 characters.")
         .Require(memoryGb is null ? !required : memoryGb is >= 1 and <= 10_000, "memory_gb", "is required: memory per accelerator in GB, 1 to 10000.")
         .Require(tflops is null or (> 0 and < 1_000_000), "bf16_tflops", "must be the vendor's published dense BF16 TFLOPS, more than 0.")
         .Require(interconnect is null ? !required : interconnect.Length <= 40 && Inputs.Region().IsMatch(interconnect), "interconnect",
             "is required: the scale-up link in lower case, e.g. nvlink4, hccs, pcie5.")
         .Require(notes is not { Length: > 500 }, "notes", "must be at most 500 characters.");
    }
}
