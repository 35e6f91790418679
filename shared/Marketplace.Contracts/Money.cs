namespace Marketplace.Contracts;

/// <summary>An amount in the currency's minor units (fen, cents, fils), never a float.</summary>
public sealed record Money(long Amount, string Currency);
