using System.Buffers.Text;
using System.Globalization;
using System.Text;
using Dapper;
using Marketplace.Contracts;
using Marketplace.ServiceDefaults.Data;
using Marketplace.ServiceDefaults.Web;
using Microsoft.AspNetCore.Http.HttpResults;
using Npgsql;

namespace Marketplace.Scheduling.Leases;

public sealed record LeaseSlot(Guid SlotId, Guid NodeId, int Index);

public sealed record LeaseResponse(
    Guid Id,
    Guid OrderId,
    Guid RenterOrgId,
    Guid ProviderOrgId,
    string Status,
    string? StatusReason,
    string? Cause,
    string AcceleratorModel,
    int AcceleratorCount,
    DateTimeOffset Start,
    DateTimeOffset End,
    DateTimeOffset? StartedAt,
    DateTimeOffset? EndedAt,
    Money PricePerHour,
    IReadOnlyList<LeaseSlot> Slots,
    DateTimeOffset CreatedAt,
    bool Interruptible,
    string SlaLevel,
    DateTimeOffset? PreemptAt,
    string? SshPublicKey,
    string? ContainerImage,
    IReadOnlyList<Downtime> Downtime);

/// <summary>An interval in which the lease could not be used; end is null while it lasts.</summary>
public sealed record Downtime(DateTimeOffset Start, DateTimeOffset? End, string Reason, string Cause);

public sealed record PatchLeaseRequest(string? SshPublicKey, string? ContainerImage);

public sealed record LeasePage(IReadOnlyList<LeaseResponse> Data, string? NextCursor);

/// <summary>
/// GET /v1/leases, GET /v1/leases/{id}, POST /v1/leases/{id}/cancel. A renter sees the leases it rents, a provider
/// the leases on its nodes; anyone else's lease is a 404, so existence never leaks.
/// </summary>
internal static class LeaseApi
{
    private static readonly string[] Statuses = ["scheduled", "provisioning", "active", "completed", "cancelled", "failed", "preempted"];

    public static void MapLeaseApi(this IEndpointRouteBuilder app)
    {
        var leases = app.MapGroup("/v1/leases").WithTags("Leases");
        leases.MapGet("/", ListAsync).WithName("ListLeases");
        leases.MapGet("/{id}", GetAsync).WithName("GetLease");
        leases.MapPost("/{id}/cancel", CancelAsync).WithName("CancelLease");
        leases.MapPost("/{id}/extend", ExtendLease.ExtendAsync).WithName("ExtendLease");
        leases.MapPatch("/{id}", PatchAsync).WithName("UpdateLease");
    }

    internal static async Task<Results<Ok<LeasePage>, ValidationProblem, ProblemHttpResult>> ListAsync(
        Caller caller, NpgsqlDataSource dataSource, string? status, string? cursor, int? limit, CancellationToken ct)
    {
        if (!CanSeeLeases(caller)) return Problems.Forbidden("Leases are visible to renters and providers.");
        var v = new Validation();
        v.Require(status is null || Statuses.Contains(status), "status", $"must be one of {string.Join(", ", Statuses)}.");
        v.Require(limit is null or (>= 1 and <= 100), "limit", "must be between 1 and 100.");
        var after = cursor is null ? null : Cursor.Decode(cursor);
        v.Require(cursor is null || after is not null, "cursor", "is not a cursor from a previous page; pass next_cursor as it was returned.");
        if (v.Failed) return v.Problem;

        var take = limit ?? 20;
        await using var connection = await dataSource.OpenConnectionAsync(ct);
        var rows = (await connection.QueryAsync<LeaseRow>(new CommandDefinition($"""
            SELECT {LeaseRow.Columns} FROM leases
            WHERE ((@asRenter AND renter_org_id = @org) OR (@asProvider AND provider_org_id = @org))
              AND (@status::text IS NULL OR status = @status)
              AND (@afterAt::timestamptz IS NULL OR (created_at, id) < (@afterAt, @afterId))
            ORDER BY created_at DESC, id DESC
            LIMIT @fetch
            """, new
            {
                org = caller.OrgId,
                asRenter = caller.Has(OrgRoles.Renter),
                asProvider = caller.Has(OrgRoles.Provider),
                status,
                afterAt = after?.CreatedAt,
                afterId = after?.Id ?? Guid.Empty,
                fetch = take + 1,
            }, cancellationToken: ct))).AsList();
        var page = rows.Take(take).ToList();
        var ids = page.Select(r => r.Id).ToArray();
        var slots = await SlotsAsync(connection, null, ids, ct);
        var downtime = await DowntimeAsync(connection, null, ids, ct);
        var next = rows.Count > take ? Cursor.Encode(page[^1].CreatedAt, page[^1].Id) : null;
        return TypedResults.Ok(new LeasePage(page.Select(r => r.ToResponse(slots, downtime)).ToList(), next));
    }

    internal static async Task<Results<Ok<LeaseResponse>, ValidationProblem, ProblemHttpResult>> GetAsync(
        Caller caller, NpgsqlDataSource dataSource, string id, CancellationToken ct)
    {
        if (!CanSeeLeases(caller)) return Problems.Forbidden("Leases are visible to renters and providers.");
        if (!Guid.TryParse(id, out var leaseId)) return InvalidId(id);
        await using var connection = await dataSource.OpenConnectionAsync(ct);
        var lease = await LoadVisibleAsync(connection, null, caller, leaseId, ct);
        return lease is null ? Problems.NotFound("lease", id) : TypedResults.Ok(lease);
    }

    internal static async Task<Results<Ok<LeaseResponse>, ValidationProblem, ProblemHttpResult>> CancelAsync(
        Caller caller, Db db, string id, CancellationToken ct)
    {
        if (!caller.Has(OrgRoles.Renter)) return Problems.Forbidden("Only the renter of a lease can cancel it.");
        if (!Guid.TryParse(id, out var leaseId)) return InvalidId(id);
        return await db.RunAsync(tx => CancelInAsync(tx, caller, id, leaseId, ct), ct);
    }

    private static async Task<Results<Ok<LeaseResponse>, ValidationProblem, ProblemHttpResult>> CancelInAsync(
        Tx tx, Caller caller, string id, Guid leaseId, CancellationToken ct)
    {
        var lease = await LeaseLifecycle.LockAsync(tx, leaseId, ct);
        // The lease's provider sees it (GET), so it is told why it cannot cancel it; any other org learns nothing.
        if (lease is not null && lease.RenterOrgId != caller.OrgId && lease.ProviderOrgId == caller.OrgId)
            return Problems.Forbidden("Only the renter of a lease can cancel it; a provider that can no longer serve it schedules maintenance on the node or reports it unhealthy, and the lease is moved or ended with cause provider.");
        if (lease is null || lease.RenterOrgId != caller.OrgId) return Problems.NotFound("lease", id);
        if (LeaseLifecycle.Terminal.Contains(lease.Status))
            return Problems.Conflict("lease-ended", $"Lease {leaseId} is already {lease.Status}; only a scheduled or active lease can be cancelled.");
        // Its end (or the end of its preemption notice) has passed and only its due work has not run yet: it has ended,
        // and that work ends it where it ended. Cancelling now would end it later, and the renter would pay past its end.
        if (tx.Now >= lease.Until)
            return Problems.Conflict("lease-ended", $"Lease {leaseId} ended at {OrderMatchedConsumer.Format(lease.Until)}; it can no longer be cancelled.");

        var reason = lease.Status is "scheduled" or "provisioning"
            ? "cancelled by the renter before it started"
            : $"cancelled by the renter; ended at {OrderMatchedConsumer.Format(tx.Now)}";
        await LeaseLifecycle.EndAsync(tx, lease, "cancelled", "renter", reason, ct);
        var response = await LoadVisibleAsync(tx.Connection, tx.Transaction, caller, leaseId, ct);
        await tx.CommitAsync(ct);
        return TypedResults.Ok(response!);
    }

    private static bool CanSeeLeases(Caller caller) => caller.Has(OrgRoles.Renter) || caller.Has(OrgRoles.Provider);

    private static ValidationProblem InvalidId(string id) =>
        Problems.Invalid(new Dictionary<string, string[]> { ["id"] = [$"'{id}' is not a lease id; lease ids are UUIDs."] });

    /// <summary>
    /// PATCH /v1/leases/{id} {ssh_public_key?, container_image?}: what the node agents start the lease with. Only before the
    /// start (the agents receive it in their start instruction).
    /// </summary>
    internal static async Task<Results<Ok<LeaseResponse>, ValidationProblem, ProblemHttpResult>> PatchAsync(
        Caller caller, Db db, string id, PatchLeaseRequest? body, CancellationToken ct)
    {
        if (!caller.Has(OrgRoles.Renter)) return Problems.Forbidden("Only the renter of a lease can change it.");
        var v = new Validation();
        v.Require(Guid.TryParse(id, out var leaseId), "id", $"'{id}' is not a lease id; lease ids are UUIDs.");
        v.Require(body is { SshPublicKey: not null } or { ContainerImage: not null }, "body", "give ssh_public_key or container_image.");
        v.Require(body?.SshPublicKey is null || (body.SshPublicKey.Length <= 16_384
            && (body.SshPublicKey.StartsWith("ssh-", StringComparison.Ordinal) || body.SshPublicKey.StartsWith("ecdsa-", StringComparison.Ordinal))
            && body.SshPublicKey.Split(' ', StringSplitOptions.RemoveEmptyEntries).Length >= 2),
            "ssh_public_key", "must be an OpenSSH public key line such as 'ssh-ed25519 AAAA... user@host'.");
        v.Require(body?.ContainerImage is null || (body.ContainerImage.Length is > 0 and <= 512 && !body.ContainerImage.Any(char.IsWhiteSpace)),
            "container_image", "must be an image reference such as 'nvcr.io/nvidia/pytorch:24.05-py3' (no spaces, at most 512 characters).");
        if (v.Failed) return v.Problem;
        return await db.RunAsync(tx => PatchInAsync(tx, caller, id, leaseId, body!, ct), ct);
    }

    private static async Task<Results<Ok<LeaseResponse>, ValidationProblem, ProblemHttpResult>> PatchInAsync(
        Tx tx, Caller caller, string id, Guid leaseId, PatchLeaseRequest body, CancellationToken ct)
    {
        var lease = await LeaseLifecycle.LockAsync(tx, leaseId, ct);
        if (lease is null || lease.RenterOrgId != caller.OrgId) return Problems.NotFound("lease", id);
        if (lease.Status != "scheduled")
            return Problems.Conflict("lease-started", $"Lease {leaseId} is {lease.Status}; its SSH key and image can only change before it starts.");
        await tx.Connection.ExecuteAsync(new CommandDefinition("""
            UPDATE leases SET ssh_public_key = coalesce(@SshPublicKey, ssh_public_key), container_image = coalesce(@ContainerImage, container_image)
            WHERE id = @leaseId
            """, new { body.SshPublicKey, body.ContainerImage, leaseId }, tx.Transaction, cancellationToken: ct));
        var response = await LoadVisibleAsync(tx.Connection, tx.Transaction, caller, leaseId, ct);
        await tx.CommitAsync(ct);
        return TypedResults.Ok(response!);
    }

    internal static async Task<LeaseResponse?> LoadVisibleAsync(
        NpgsqlConnection connection, NpgsqlTransaction? transaction, Caller caller, Guid id, CancellationToken ct)
    {
        var row = await connection.QuerySingleOrDefaultAsync<LeaseRow>(new CommandDefinition($"""
            SELECT {LeaseRow.Columns} FROM leases
            WHERE id = @id AND ((@asRenter AND renter_org_id = @org) OR (@asProvider AND provider_org_id = @org))
            """, new { id, org = caller.OrgId, asRenter = caller.Has(OrgRoles.Renter), asProvider = caller.Has(OrgRoles.Provider) },
            transaction, cancellationToken: ct));
        if (row is null) return null;
        return row.ToResponse(await SlotsAsync(connection, transaction, [id], ct), await DowntimeAsync(connection, transaction, [id], ct));
    }

    private static async Task<ILookup<Guid, LeaseSlot>> SlotsAsync(
        NpgsqlConnection connection, NpgsqlTransaction? transaction, Guid[] leaseIds, CancellationToken ct) =>
        (await connection.QueryAsync<(Guid LeaseId, Guid SlotId, Guid NodeId, int Index)>(new CommandDefinition("""
            SELECT b.lease_id, b.slot_id, s.node_id, s.index
            FROM bookings b JOIN gpu_slots s ON s.id = b.slot_id
            WHERE b.lease_id = ANY(@leaseIds) AND NOT b.released
            ORDER BY s.node_id, s.index
            """, new { leaseIds }, transaction, cancellationToken: ct)))
        .ToLookup(r => r.LeaseId, r => new LeaseSlot(r.SlotId, r.NodeId, r.Index));

    private static async Task<ILookup<Guid, Downtime>> DowntimeAsync(
        NpgsqlConnection connection, NpgsqlTransaction? transaction, Guid[] leaseIds, CancellationToken ct) =>
        (await connection.QueryAsync<DowntimeRow>(new CommandDefinition("""
            SELECT lease_id, start_at, end_at, reason, cause FROM lease_downtime WHERE lease_id = ANY(@leaseIds) ORDER BY start_at, id
            """, new { leaseIds }, transaction, cancellationToken: ct)))
        .ToLookup(r => r.LeaseId, r => new Downtime(r.StartAt, r.EndAt, r.Reason, r.Cause));

    private sealed class DowntimeRow
    {
        public Guid LeaseId { get; init; }
        public DateTimeOffset StartAt { get; init; }
        public DateTimeOffset? EndAt { get; init; }
        public string Reason { get; init; } = "";
        public string Cause { get; init; } = "";
    }

    /// <summary>Keyset cursor over (created_at, id), opaque to clients.</summary>
    private static class Cursor
    {
        public static string Encode(DateTime createdAt, Guid id) =>
            Base64Url.EncodeToString(Encoding.UTF8.GetBytes($"{createdAt.Ticks.ToString(CultureInfo.InvariantCulture)}:{id:N}"));

        public static (DateTime CreatedAt, Guid Id)? Decode(string cursor)
        {
            try
            {
                var parts = Encoding.UTF8.GetString(Base64Url.DecodeFromChars(cursor)).Split(':');
                if (parts.Length == 2 && long.TryParse(parts[0], NumberStyles.None, CultureInfo.InvariantCulture, out var ticks)
                    && ticks >= DateTime.MinValue.Ticks && ticks <= DateTime.MaxValue.Ticks && Guid.TryParseExact(parts[1], "N", out var id))
                    return (new DateTime(ticks, DateTimeKind.Utc), id);
            }
            catch (FormatException) { }
            return null;
        }
    }
}

/// <summary>A leases row. Timestamps are read as UTC DateTime, which is what Npgsql returns for timestamptz.</summary>
internal sealed class LeaseRow
{
    public const string Columns = """
        id, order_id, renter_org_id, provider_org_id, status, status_reason, cause, accelerator_model, accelerator_count,
        start_at, end_at, started_at, ended_at, price_amount, price_currency, created_at,
        interruptible, sla_level, preempt_at, ssh_public_key, container_image
        """;

    public Guid Id { get; init; }
    public Guid OrderId { get; init; }
    public Guid RenterOrgId { get; init; }
    public Guid ProviderOrgId { get; init; }
    public string Status { get; init; } = "";
    public string? StatusReason { get; init; }
    public string? Cause { get; init; }
    public string AcceleratorModel { get; init; } = "";
    public int AcceleratorCount { get; init; }
    public DateTime StartAt { get; init; }
    public DateTime EndAt { get; init; }
    public DateTime? StartedAt { get; init; }
    public DateTime? EndedAt { get; init; }
    public long PriceAmount { get; init; }
    public string PriceCurrency { get; init; } = "";
    public DateTime CreatedAt { get; init; }
    public bool Interruptible { get; init; }
    public string SlaLevel { get; init; } = "standard";
    public DateTime? PreemptAt { get; init; }
    public string? SshPublicKey { get; init; }
    public string? ContainerImage { get; init; }

    public LeaseResponse ToResponse(ILookup<Guid, LeaseSlot> slots, ILookup<Guid, Downtime> downtime) => new(
        Id, OrderId, RenterOrgId, ProviderOrgId, Status, StatusReason, Cause, AcceleratorModel, AcceleratorCount,
        Utc(StartAt), Utc(EndAt), StartedAt is { } s ? Utc(s) : null, EndedAt is { } e ? Utc(e) : null,
        new Money(PriceAmount, PriceCurrency), slots[Id].ToList(), Utc(CreatedAt),
        Interruptible, SlaLevel, PreemptAt is { } p ? Utc(p) : null, SshPublicKey, ContainerImage, downtime[Id].ToList());

    private static DateTimeOffset Utc(DateTime t) => new(DateTime.SpecifyKind(t, DateTimeKind.Utc));
}
