using System.ComponentModel.DataAnnotations;

namespace Marketplace.Bidding;

/// <summary>Market rules from configuration (section "Market").</summary>
public sealed class MarketOptions
{
    /// <summary>The shortest lease an order may ask for: an hour in production, a minute in the demo and tests.</summary>
    [Range(1, 30 * 24 * 3600)] public int MinLeaseSeconds { get; set; } = 3600;
}
