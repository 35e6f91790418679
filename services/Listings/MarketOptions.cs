using System.ComponentModel.DataAnnotations;

namespace Marketplace.Listings;

/// <summary>Market rules shared by every service (section "Market").</summary>
public sealed class MarketOptions
{
    /// <summary>The shortest lease an offer may require; production 1 hour, the demo and tests a minute.</summary>
    [Range(1, 31 * 24 * 3600)]
    public int MinLeaseSeconds { get; set; } = 3600;
}
