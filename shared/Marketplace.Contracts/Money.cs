namespace Marketplace.Contracts;

/// <summary>An amount in the currency's minor units (fen, cents, fils), never a float.</summary>
public sealed record Money(long Amount, string Currency);

/// <summary>A half-open interval [Start, End) in UTC.</summary>
public sealed record TimeWindow(DateTimeOffset Start, DateTimeOffset End);
