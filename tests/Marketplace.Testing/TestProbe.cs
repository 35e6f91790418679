using MassTransit;

namespace Marketplace.Testing;

public static class TestProbe
{
    /// <summary>How long a probe's endpoint may take to become ready before it is connected again.</summary>
    public static readonly TimeSpan ReadyTimeout = TimeSpan.FromSeconds(30);

    private const int Attempts = 3;

    /// <summary>
    /// Connects a receive endpoint of the test's own (a probe that records what a service publishes) and waits until it
    /// consumes. Once in CI (2026-11-30, Listings) a probe's endpoint never became ready: its fixture waited on
    /// <c>Ready</c> until the blame timeout killed the test host ten minutes later, and the 8 test cases of that class
    /// never ran (docs/reliability.md, known issue 17). A probe not ready within <see cref="ReadyTimeout"/> is stopped
    /// (given 5 s) and connected again under a queue name of its own, up to three attempts; each failed attempt is written
    /// to stderr. The last one fails the fixture with a <see cref="TimeoutException"/> instead of waiting for ever.
    /// </summary>
    public static async Task<HostReceiveEndpointHandle> ConnectProbeAsync(this IBus bus, string queueName,
        Action<IReceiveEndpointConfigurator> configure)
    {
        for (var attempt = 1; ; attempt++)
        {
            var name = attempt == 1 ? queueName : $"{queueName}-{attempt}";
            var handle = bus.ConnectReceiveEndpoint(name, configure);
            try
            {
                await handle.Ready.WaitAsync(ReadyTimeout);
                return handle;
            }
            catch (TimeoutException) when (attempt < Attempts)
            {
                await Console.Error.WriteLineAsync(
                    $"[{DateTimeOffset.UtcNow:HH:mm:ss.fff}] the probe endpoint {name} was not ready within {ReadyTimeout.TotalSeconds:0} s " +
                    $"(attempt {attempt} of {Attempts}); stopping it and connecting {queueName}-{attempt + 1}");
                try
                {
                    using var stop = new CancellationTokenSource(TimeSpan.FromSeconds(5));
                    await handle.StopAsync(stop.Token);
                }
                catch (Exception e)
                {
                    await Console.Error.WriteLineAsync($"[{DateTimeOffset.UtcNow:HH:mm:ss.fff}] stopping {name} failed, left behind: {e.GetType().Name}: {e.Message}");
                }
            }
        }
    }
}
