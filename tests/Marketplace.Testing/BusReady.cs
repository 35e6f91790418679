using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Diagnostics.HealthChecks;

namespace Marketplace.Testing;

public static class BusReady
{
    /// <summary>
    /// Waits until the service's bus has started and its receive endpoints exist: a message published before its
    /// consumer's queue is bound would have nowhere to go.
    /// </summary>
    public static async Task WaitForBusAsync(this IServiceProvider services, TimeSpan? timeout = null)
    {
        var health = services.GetRequiredService<HealthCheckService>();
        await Eventually.True(async () =>
            (await health.CheckHealthAsync(c => c.Tags.Contains("ready"))).Status == HealthStatus.Healthy,
            timeout ?? TimeSpan.FromSeconds(30), "the bus to be ready");
    }
}
