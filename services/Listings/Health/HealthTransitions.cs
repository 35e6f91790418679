using Dapper;
using Marketplace.Contracts;
using Marketplace.Listings.Clusters;
using Marketplace.ServiceDefaults.Data;

namespace Marketplace.Listings.Health;

/// <summary>A node's health as stored, locked by the transaction that may change it.</summary>
internal sealed record NodeState
{
    public Guid Id { get; init; }
    public Guid ClusterId { get; init; }
    public Guid ProviderOrgId { get; init; }
    public required string Health { get; init; }
    public bool Verified { get; init; }
    public string? HealthReason { get; init; }
    public string? VerificationReason { get; init; }
    public DateTimeOffset? LastHeartbeatAt { get; init; }
}

/// <summary>
/// The one place a node's health or verification changes: the node row, its health periods (the ground truth of
/// reliability), the readiness of its active offers and NodeHealthChanged to the market (Scheduling stops placing on it).
/// </summary>
internal static class HealthTransitions
{
    public const string SelectForUpdate = """
        SELECT n.id, n.cluster_id, c.provider_org_id, n.health, n.verified, n.health_reason, n.verification_reason, n.last_heartbeat_at
        FROM nodes n JOIN clusters c ON c.id = n.cluster_id
        """;

    /// <returns>True when health or verification changed (and NodeHealthChanged was written to the outbox).</returns>
    /// <param name="healthReason">Why the node is unhealthy; null when it is healthy.</param>
    /// <param name="verificationReason">Why the node is unverified (the inventory differences); null when verified.</param>
    /// <param name="outageSince">
    /// For a node that fell silent: its last heartbeat, when it was last known alive. The event carries it, so the
    /// downtime of the leases on the node (and their SLA credits) starts there rather than when the silence was noticed.
    /// </param>
    public static async Task<bool> ApplyAsync(Tx tx, NodeState node, string health, string? healthReason, bool verified, string? verificationReason,
        DateTimeOffset now, CancellationToken ct, DateTimeOffset? outageSince = null)
    {
        var healthChanged = node.Health != health;
        var changed = healthChanged || node.Verified != verified;
        if (!changed && node.HealthReason == healthReason && node.VerificationReason == verificationReason) return false;

        await tx.Connection.ExecuteAsync(new CommandDefinition("""
            UPDATE nodes SET health = @health, health_reason = @healthReason, verified = @verified, verification_reason = @verificationReason
            WHERE id = @Id
            """, new { node.Id, health, healthReason, verified, verificationReason }, tx.Transaction, cancellationToken: ct));
        if (!changed) return false;

        if (healthChanged)
        {
            // Never before the node's latest period: a heartbeat taken before another instance's sweep but applied after it
            // starts where the sweep's period started, so periods never overlap (each instant counts once in reliability).
            var at = await tx.Connection.ExecuteScalarAsync<DateTimeOffset>(new CommandDefinition(
                "SELECT greatest(@now, max(started_at)) FROM node_health_periods WHERE node_id = @Id",
                new { node.Id, now }, tx.Transaction, cancellationToken: ct));
            // A period that began this very instant is replaced, not closed empty (keeps (node, started_at) unique).
            await tx.Connection.ExecuteAsync(new CommandDefinition("""
                DELETE FROM node_health_periods WHERE node_id = @Id AND ended_at IS NULL AND started_at >= @at;
                UPDATE node_health_periods SET ended_at = @at WHERE node_id = @Id AND ended_at IS NULL;
                INSERT INTO node_health_periods (node_id, healthy, started_at) VALUES (@Id, @healthy, @at);
                """, new { node.Id, at, healthy = health == NodeHealth.Healthy }, tx.Transaction, cancellationToken: ct));
        }
        await tx.Connection.ExecuteAsync(new CommandDefinition("""
            UPDATE offers o SET ready = NOT EXISTS (
                SELECT 1 FROM nodes n WHERE n.id = ANY(o.node_ids) AND NOT (n.health = 'healthy' AND n.verified))
            WHERE o.status = 'active' AND o.id IN (SELECT offer_id FROM offer_slots WHERE node_id = @Id)
            """, new { node.Id }, tx.Transaction, cancellationToken: ct));
        await tx.PublishAsync(new NodeHealthChanged(node.Id, node.ClusterId, node.ProviderOrgId, health, verified,
            NodeHealth.StatusReason(healthReason, verificationReason) ?? "healthy; the observed inventory matches the declared one", outageSince ?? now), ct);
        return true;
    }
}
