using System.ComponentModel.DataAnnotations;

namespace Marketplace.Gateway;

public sealed class GatewayOptions
{
    public const string Section = "Gateway";

    /// <summary>The upstream services every public route lands on.</summary>
    public static readonly string[] UpstreamNames = ["listings", "bidding", "scheduling", "billing"];

    /// <summary>Proves to the services that a request came through the gateway (header X-Marketplace-Gateway-Token).</summary>
    [Required] public string InternalToken { get; set; } = "";

    /// <summary>An API key (mk_&lt;prefix&gt;_&lt;secret&gt;) registered at start-up for the platform org with the admin role.</summary>
    public string? BootstrapAdminKey { get; set; }

    /// <summary>Base URL per upstream name (listings, bidding, scheduling, billing).</summary>
    public Dictionary<string, string> Upstreams { get; set; } = new(StringComparer.OrdinalIgnoreCase);

    public RateLimitOptions RateLimit { get; set; } = new();

    internal IEnumerable<string> Errors()
    {
        foreach (var name in UpstreamNames)
            if (!Upstreams.TryGetValue(name, out var url) || !Uri.TryCreate(url, UriKind.Absolute, out _))
                yield return $"Gateway:Upstreams:{name} must be an absolute URL.";
        if (RateLimit.PermitsPerSecond < 1) yield return "Gateway:RateLimit:PermitsPerSecond must be at least 1.";
        if (RateLimit.Burst < 1) yield return "Gateway:RateLimit:Burst must be at least 1.";
        if (!string.IsNullOrEmpty(BootstrapAdminKey) && !ApiKeys.TryParse(BootstrapAdminKey, out _, out _))
            yield return "Gateway:BootstrapAdminKey must look like mk_<prefix>_<secret>.";
    }
}

public sealed class RateLimitOptions
{
    /// <summary>Tokens added per second to each API key's bucket (or each client IP's, before authentication).</summary>
    public int PermitsPerSecond { get; set; } = 50;

    /// <summary>The bucket's size: how many requests may arrive at once.</summary>
    public int Burst { get; set; } = 100;
}
