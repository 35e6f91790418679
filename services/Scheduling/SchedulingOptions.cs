using System.ComponentModel.DataAnnotations;

namespace Marketplace.Scheduling;

/// <summary>Configuration section "Scheduling".</summary>
public sealed class SchedulingOptions
{
    public const string Section = "Scheduling";

    /// <summary>
    /// When true, a lease goes scheduled → provisioning at its start, node agents get start assignments and the lease is
    /// active once every agent acknowledged "running". False (the default while plain nodes run no agent): active at start.
    /// </summary>
    public bool RequireAgentAck { get; set; }

    /// <summary>How long agents have to acknowledge a start assignment before the lease fails over to other capacity.</summary>
    [Range(1, 86_400)]
    public int ProvisioningTimeoutSeconds { get; set; } = 120;
}
