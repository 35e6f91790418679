namespace Marketplace.Contracts;

// Events published by Billing. Owned by the Billing service.

/// <summary>Funds for the lease's maximum cost are reserved on the renter's wallet.</summary>
public sealed record HoldPlaced(Guid HoldId, Guid LeaseId, Guid OrderId, Guid RenterOrgId, Money Amount, DateTimeOffset At);

/// <summary>The renter cannot cover the lease; Scheduling cancels it and Bidding closes the order.</summary>
public sealed record HoldRejected(Guid LeaseId, Guid OrderId, Guid RenterOrgId, string Reason, DateTimeOffset At);

/// <summary>The wallet cannot cover an extension; Scheduling puts the lease's end back to <paramref name="RevertTo"/>.</summary>
public sealed record ExtensionRejected(Guid LeaseId, Guid OrderId, DateTimeOffset RevertTo, string Reason, DateTimeOffset At);

/// <summary>A renter's available balance fell below its low-balance threshold.</summary>
public sealed record LowBalance(Guid RenterOrgId, Money Available, Money Threshold, DateTimeOffset At);
