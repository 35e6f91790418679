namespace Marketplace.Contracts;

// Events published by Scheduling. Owned by the Scheduling service.

/// <summary>Scheduling could not place a match on concrete slots; Bidding returns the order to the book.</summary>
public sealed record PlacementFailed(Guid MatchId, Guid OrderId, string Reason, DateTimeOffset At);

public sealed record LeaseScheduled(
    Guid LeaseId,
    Guid OrderId,
    Guid MatchId,
    Guid RenterOrgId,
    Guid ProviderOrgId,
    string AcceleratorModel,
    int AcceleratorCount,
    DateTimeOffset Start,
    DateTimeOffset End,
    Money PricePerHour,
    IReadOnlyList<Guid> SlotIds,
    DateTimeOffset At);

public sealed record LeaseStarted(Guid LeaseId, Guid OrderId, DateTimeOffset At);

/// <summary>
/// A lease reached a terminal state. Status is completed, cancelled, preempted or failed;
/// Cause is renter, provider, platform or market.
/// </summary>
public sealed record LeaseEnded(
    Guid LeaseId,
    Guid OrderId,
    string Status,
    string Reason,
    string Cause,
    DateTimeOffset At);
