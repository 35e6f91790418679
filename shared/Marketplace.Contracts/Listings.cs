namespace Marketplace.Contracts;

// Events published by Listings. Owned by the Listings service.
// An OfferPublished with an OfferId already known replaces that offer (a change of terms).

public sealed record GpuSlotInfo(Guid SlotId, int Index);

/// <summary>
/// An admin added, changed or retired a model of the accelerator catalog; the entry as it now is. Change is "added",
/// "changed", "retired" (no new nodes of it) or "reinstated" (retired no more).
/// </summary>
public sealed record AcceleratorModelChanged(
    string AcceleratorModel,
    string Vendor,
    string Name,
    int MemoryGb,
    decimal? Bf16Tflops,
    string Interconnect,
    string? Notes,
    bool Retired,
    string Change,
    DateTimeOffset At);

public sealed record NodeRegistered(
    Guid NodeId,
    Guid ClusterId,
    Guid ProviderOrgId,
    string Region,
    string Jurisdiction,
    string AcceleratorModel,
    IReadOnlyList<GpuSlotInfo> Slots,
    DateTimeOffset At)
{
    /// <summary>Nodes of one cluster with the same value share an NVLink/NVSwitch domain (e.g. an NVL72 rack); null: the node alone.</summary>
    public string? NvlinkDomain { get; init; }

    /// <summary>The cluster's scale-out fabric ("infiniband", "roce", "ethernet"); multi-node gangs stay inside one cluster fabric.</summary>
    public string? Fabric { get; init; }

    public int FabricGbps { get; init; }
}

/// <summary>
/// Health and verification of a node from its agent's heartbeats. Health is "healthy" or "unhealthy"; Verified is false
/// while the observed inventory differs from the declared one.
/// </summary>
public sealed record NodeHealthChanged(
    Guid NodeId, Guid ClusterId, Guid ProviderOrgId, string Health, bool Verified, string Reason, DateTimeOffset At);

/// <summary>The node's capacity is unavailable (and never billed) during a provider's maintenance window.</summary>
public sealed record NodeMaintenanceScheduled(
    Guid MaintenanceId, Guid NodeId, Guid ProviderOrgId, DateTimeOffset Start, DateTimeOffset End, DateTimeOffset At);

public sealed record NodeMaintenanceCancelled(Guid MaintenanceId, Guid NodeId, DateTimeOffset At);

public sealed record OfferPublished(
    Guid OfferId,
    Guid ProviderOrgId,
    Guid ClusterId,
    IReadOnlyList<Guid> NodeIds,
    string AcceleratorModel,
    string Region,
    string Jurisdiction,
    int AcceleratorCount,
    DateTimeOffset WindowStart,
    DateTimeOffset WindowEnd,
    Money AskPerHour,
    int MinLeaseSeconds,
    bool InterruptibleAllowed,
    DateTimeOffset At)
{
    /// <summary>Interruptible use never trades below this price per accelerator-hour.</summary>
    public Money? InterruptibleFloorPerHour { get; init; }

    /// <summary>The notice an interruptible lease gets before it is preempted (an offered term).</summary>
    public int PreemptionNoticeSeconds { get; init; }

    /// <summary>The SLA level whose tiers turn recorded downtime into credits (docs/billing.md).</summary>
    public string SlaLevel { get; init; } = "standard";

    /// <summary>The availability windows inside [WindowStart, WindowEnd); null means that one window.</summary>
    public IReadOnlyList<TimeWindow>? Windows { get; init; }

    /// <summary>
    /// The offered accelerator slots when the offer is part of its nodes (AcceleratorCount of them, on NodeIds);
    /// null means every slot of every node in NodeIds (whole nodes).
    /// </summary>
    public IReadOnlyList<Guid>? SlotIds { get; init; }
}

public sealed record OfferWithdrawn(Guid OfferId, Guid ProviderOrgId, DateTimeOffset At);
