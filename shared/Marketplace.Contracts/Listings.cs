namespace Marketplace.Contracts;

// Events published by Listings. Owned by the Listings service.

public sealed record GpuSlotInfo(Guid SlotId, int Index);

public sealed record NodeRegistered(
    Guid NodeId,
    Guid ClusterId,
    Guid ProviderOrgId,
    string Region,
    string Jurisdiction,
    string AcceleratorModel,
    IReadOnlyList<GpuSlotInfo> Slots,
    DateTimeOffset At);

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
    DateTimeOffset At);

public sealed record OfferWithdrawn(Guid OfferId, Guid ProviderOrgId, DateTimeOffset At);
