using System.ComponentModel.DataAnnotations;

namespace Marketplace.Listings;

/// <summary>Listings' own settings (section "Listings").</summary>
public sealed class ListingsOptions
{
    public const string Section = "Listings";

    /// <summary>A healthy node whose last heartbeat is older than this is marked unhealthy (and Scheduling is told).</summary>
    [Range(1, 24 * 3600)]
    public int HeartbeatTimeoutSeconds { get; set; } = 30;

    /// <summary>How often the health monitor looks for silent nodes.</summary>
    [Range(1, 3600)]
    public int HealthSweepSeconds { get; set; } = 5;

    /// <summary>How often reliability scores (rolling 30 days) are recomputed for nodes, clusters and active offers.</summary>
    [Range(1, 24 * 3600)]
    public int ReliabilityRefreshSeconds { get; set; } = 60;
}
