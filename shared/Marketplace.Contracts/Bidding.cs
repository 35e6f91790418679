namespace Marketplace.Contracts;

// Events published by Bidding. Owned by the Bidding service.

/// <summary>An order was matched with an offer at a price; Scheduling now places it on concrete slots.</summary>
public sealed record OrderMatched(
    Guid MatchId,
    Guid OrderId,
    Guid RenterOrgId,
    Guid OfferId,
    Guid ProviderOrgId,
    IReadOnlyList<Guid> NodeIds,
    string AcceleratorModel,
    int AcceleratorCount,
    DateTimeOffset Start,
    DateTimeOffset End,
    Money PricePerHour,
    string OrderType,
    DateTimeOffset At);
