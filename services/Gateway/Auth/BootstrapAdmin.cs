using Dapper;
using Marketplace.ServiceDefaults.Web;
using Microsoft.Extensions.Options;
using Npgsql;

namespace Marketplace.Gateway;

/// <summary>
/// Registers the configured admin key for the platform org before the gateway takes requests, so the first org can be
/// made. Idempotent across restarts and concurrent instances (fixed org id, upsert on the key's prefix).
/// </summary>
internal sealed class BootstrapAdmin(NpgsqlDataSource db, IOptions<GatewayOptions> options, TimeProvider time, ILogger<BootstrapAdmin> logger)
    : IHostedLifecycleService
{
    public static readonly Guid PlatformOrgId = new("00000000-0000-0000-0000-000000000001");

    public async Task StartingAsync(CancellationToken ct)
    {
        var key = options.Value.BootstrapAdminKey;
        if (string.IsNullOrEmpty(key))
        {
            logger.LogWarning("Gateway:BootstrapAdminKey is not set; no admin key was registered at start-up");
            return;
        }
        ApiKeys.TryParse(key, out var prefix, out var secret); // validated at start
        var now = Clock.Now(time);
        await using var connection = await db.OpenConnectionAsync(ct);
        await using var tx = await connection.BeginTransactionAsync(ct);
        await connection.ExecuteAsync(new CommandDefinition("""
            INSERT INTO orgs (id, name, roles, created_at) VALUES (@PlatformOrgId, 'platform', ARRAY[@admin], @now)
            ON CONFLICT (id) DO NOTHING
            """, new { PlatformOrgId, admin = OrgRoles.Admin, now }, tx, cancellationToken: ct));
        // A changed secret under the same prefix replaces the old one; a prefix owned by another org is never taken over.
        var registered = await connection.ExecuteAsync(new CommandDefinition("""
            INSERT INTO api_keys (id, org_id, name, prefix, secret_hash, created_at)
            VALUES (@id, @PlatformOrgId, 'bootstrap admin', @prefix, @hash, @now)
            ON CONFLICT (prefix) DO UPDATE SET secret_hash = EXCLUDED.secret_hash
            WHERE api_keys.org_id = EXCLUDED.org_id
            """, new { id = Guid.CreateVersion7(now), PlatformOrgId, prefix, hash = ApiKeys.Hash(secret), now }, tx, cancellationToken: ct));
        if (registered == 0)
            throw new InvalidOperationException($"The bootstrap admin key's prefix '{prefix}' belongs to another organisation; choose another key.");
        await tx.CommitAsync(ct);
        logger.LogInformation("Bootstrap admin key with prefix {Prefix} is registered for the platform org", prefix);
    }

    public Task StartAsync(CancellationToken ct) => Task.CompletedTask;
    public Task StartedAsync(CancellationToken ct) => Task.CompletedTask;
    public Task StoppingAsync(CancellationToken ct) => Task.CompletedTask;
    public Task StopAsync(CancellationToken ct) => Task.CompletedTask;
    public Task StoppedAsync(CancellationToken ct) => Task.CompletedTask;
}

internal static class Clock
{
    /// <summary>Now, truncated to PostgreSQL's microseconds so a created object reads back identical.</summary>
    public static DateTime Now(TimeProvider time)
    {
        var t = time.GetUtcNow().UtcDateTime;
        return new DateTime(t.Ticks - t.Ticks % 10, DateTimeKind.Utc);
    }
}
