namespace Marketplace.Contracts;

// Events published by Scheduling. Owned by the Scheduling service.

/// <summary>Scheduling could not place a match on concrete slots; Bidding returns the order to the book.</summary>
public sealed record PlacementFailed(Guid MatchId, Guid OrderId, string Reason, DateTimeOffset At)
{
    /// <summary>
    /// True when the only cause was that too few of the offered accelerators were free for the window, with no offered
    /// node left out as unhealthy, in maintenance or unverified: Bidding's view of the offer was behind (matches still in
    /// flight), and clearing the order again a moment later may place it. False for every other refusal.
    /// </summary>
    public bool SlotsBooked { get; init; }
}

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
    DateTimeOffset At)
{
    public bool Interruptible { get; init; }
    public string SlaLevel { get; init; } = "standard";
}

/// <summary>Downtime starts (a node failed and could not be replaced at once). Cause: provider, platform, renter, market.</summary>
public sealed record LeaseInterrupted(Guid LeaseId, Guid OrderId, string Reason, string Cause, DateTimeOffset At);

/// <summary>Downtime ends (replacement capacity is running).</summary>
public sealed record LeaseResumed(Guid LeaseId, Guid OrderId, DateTimeOffset At);

/// <summary>
/// The lease moved off a node that could no longer serve it: from <paramref name="From"/> on it holds
/// <paramref name="SlotIds"/> (all its accelerators now, not only the moved ones). Bidding counts the match on these from
/// then on; of two slot sets for one match, the one with the later <paramref name="At"/> wins (this may overtake
/// LeaseScheduled).
/// </summary>
public sealed record LeaseSlotsMoved(Guid LeaseId, Guid OrderId, Guid MatchId, IReadOnlyList<Guid> SlotIds, DateTimeOffset From,
    DateTimeOffset At);

/// <summary>An interruptible lease will be preempted at <paramref name="PreemptAt"/>.</summary>
public sealed record PreemptionNoticeGiven(Guid LeaseId, Guid OrderId, DateTimeOffset PreemptAt, string Reason, DateTimeOffset At);

/// <summary>The lease now ends at <paramref name="NewEnd"/> on the same slots; Billing grows the hold.</summary>
public sealed record LeaseExtended(Guid LeaseId, Guid OrderId, DateTimeOffset PreviousEnd, DateTimeOffset NewEnd, DateTimeOffset At);

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
    DateTimeOffset At)
{
    /// <summary>
    /// Scheduling's own record says the lease never started (no LeaseStarted was or ever will be published for it): its
    /// hold can be released at once, even if this event overtook others. False from publishers older than this field, who
    /// said nothing either way.
    /// </summary>
    public bool NeverRan { get; init; }

    /// <summary>
    /// How many interruptions (distinct starts) Scheduling recorded for the lease, each published as LeaseInterrupted.
    /// With <see cref="Resumes"/>, it lets Billing wait for downtime events still on their way (another queue) before it
    /// bills the lease. Null from publishers older than this field.
    /// </summary>
    public int? Interruptions { get; init; }

    /// <summary>
    /// How many resumes (distinct ends) Scheduling recorded for the lease before it ended, each published as
    /// LeaseResumed (the end closes an open interruption without a resume). Null from publishers older than this field.
    /// </summary>
    public int? Resumes { get; init; }
}
