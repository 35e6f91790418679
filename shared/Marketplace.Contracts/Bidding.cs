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
    DateTimeOffset At)
{
    public bool Interruptible { get; init; }
    public int PreemptionNoticeSeconds { get; init; }
    public string SlaLevel { get; init; } = "standard";

    /// <summary>The offer's slots when it is part of its nodes (from <see cref="OfferPublished.SlotIds"/>); null means whole nodes.</summary>
    public IReadOnlyList<Guid>? SlotIds { get; init; }

    /// <summary>The renter asked for verified capacity only: Scheduling must not place on unverified nodes.</summary>
    public bool VerifiedOnly { get; init; }
}

/// <summary>
/// An interruptible match must make way (outbid, or displaced by a higher-priority order). Scheduling gives the lease
/// notice (<see cref="PreemptionNoticeGiven"/>) and ends it as preempted after <paramref name="NoticeSeconds"/>.
/// </summary>
public sealed record PreemptionRequested(Guid MatchId, Guid OrderId, string Reason, int NoticeSeconds, DateTimeOffset At);

/// <summary>A trade or a change of the best bid/ask in one market (model × region group).</summary>
public sealed record PriceTicked(string Market, Money? LastTrade, Money? BestBid, Money? BestAsk, DateTimeOffset At);
