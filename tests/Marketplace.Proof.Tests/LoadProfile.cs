using Marketplace.Testing;

namespace Marketplace.Proof.Tests;

/// <summary>
/// How hard and how long the fault and scale-out scenarios push. The defaults are CI's short versions;
/// <c>infra/proof.sh faults|scale</c> sets the long ones through these environment variables.
/// </summary>
public sealed record LoadProfile(double OrdersPerSecond, int LoadSeconds, int DownSeconds, int Repeats)
{
    /// <summary>
    /// Longer than any outage of the scenarios, so a delayed match still has time to run (a match delayed past its whole
    /// window goes back to the book: <see cref="Invariants.BackInTheBook"/>). Leases still running at the checks are
    /// checked as far as they got.
    /// </summary>
    public const int LeaseSeconds = 60;

    public static LoadProfile Faults { get; } = new(
        double.Parse(TestServers.Env("MP_FAULT_RATE", "5"), System.Globalization.CultureInfo.InvariantCulture),
        int.Parse(TestServers.Env("MP_FAULT_SECONDS", "12")),
        int.Parse(TestServers.Env("MP_FAULT_DOWN_SECONDS", "3")),
        int.Parse(TestServers.Env("MP_FAULT_REPEATS", "1")));

    public static LoadProfile Scale { get; } = new(
        double.Parse(TestServers.Env("MP_SCALE_RATE", "8"), System.Globalization.CultureInfo.InvariantCulture),
        int.Parse(TestServers.Env("MP_SCALE_SECONDS", "15")),
        0, 0);

    /// <summary>Also measure the same load on one instance of each service (the long version only: it doubles the time).</summary>
    public static bool CompareScale => TestServers.Env("MP_SCALE_COMPARE", "0") == "1";

    public int Orders => (int)Math.Ceiling(OrdersPerSecond * LoadSeconds);

    /// <summary>How long the checks wait for the marketplace to settle after the load (longer in the long runs: more to settle).</summary>
    public static int SettleSeconds => int.Parse(TestServers.Env("MP_FAULT_SETTLE_SECONDS", "120"));

    /// <summary>Settings every fault or scale stack runs with: short leases (they end during the run) and no rate limit in the way.</summary>
    public static Dictionary<string, string> StackSettings() => new()
    {
        ["Market__MinLeaseSeconds"] = LeaseSeconds.ToString(),
        ["Gateway__RateLimit__PermitsPerSecond"] = "10000",
        ["Gateway__RateLimit__Burst"] = "10000",
    };
}
