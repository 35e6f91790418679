using System.ComponentModel.DataAnnotations;

namespace Marketplace.Billing;

public sealed class BillingOptions
{
    /// <summary>The platform's cut of every invoice line, in basis points (1000 = 10%).</summary>
    [Range(0, 10_000)] public int PlatformFeeBasisPoints { get; set; } = 1000;

    /// <summary>The largest single top-up, in minor units; guards against a typo adding four zeros.</summary>
    [Range(1, long.MaxValue)] public long MaxTopUpMinor { get; set; } = 100_000_000;

    /// <summary>LowBalance is published when a renter's available balance drops below this (minor units, any currency),
    /// unless the org set its own threshold (PUT /v1/wallet/low-balance-threshold). 0 = no alert.</summary>
    [Range(0, long.MaxValue)] public long LowBalanceThresholdMinor { get; set; }

    /// <summary>Leases a billing run closes per database transaction (its unit of progress and of resumption).</summary>
    [Range(1, 100_000)] public int RunBatchSize { get; set; } = 10_000;

    /// <summary>Leases a billing run reads and rates at a time, while the chunks before are written (at most RunBatchSize).</summary>
    [Range(1, 100_000)] public int RunChunkSize { get; set; } = 5_000;

    /// <summary>Transactions a billing run writes at once, each on its own connection, taking the rated chunks in turn.</summary>
    [Range(1, 8)] public int RunWriters { get; set; } = 2;
}

public sealed class StripeOptions
{
    [Required] public string ApiKey { get; set; } = "sk_test_local_fake";

    /// <summary>https://api.stripe.com in production; the local stand-in (infra/stripe-fake) in development and tests.</summary>
    [Required, Url] public string ApiBase { get; set; } = "http://127.0.0.1:12111";

    [Required] public string WebhookSecret { get; set; } = "whsec_local_development_only";

    /// <summary>How old a webhook's signed timestamp may be, in seconds (Stripe's default is 300).</summary>
    [Range(1, 3600)] public long WebhookToleranceSeconds { get; set; } = 300;

    /// <summary>Where Stripe sends a provider after onboarding (unless the request names its own return_url).</summary>
    [Required, Url] public string ConnectReturnUrl { get; set; } = "http://127.0.0.1:8080/docs#payout-accounts";

    /// <summary>Where Stripe sends a provider whose onboarding link expired, to ask for a new one.</summary>
    [Required, Url] public string ConnectRefreshUrl { get; set; } = "http://127.0.0.1:8080/docs#payout-accounts";
}
