using System.Reflection;
using MassTransit;
using MassTransit.Configuration;
using MassTransit.RetryPolicies;
using MassTransit.Transports;
using Microsoft.Extensions.DependencyInjection;

namespace Marketplace.ServiceDefaults.Messaging;

/// <summary>
/// How quickly the bus comes back after it lost the broker (a broker restart, a node lost, connections closed).
/// <para>
/// MassTransit.RabbitMQ 8.x reconnects every receive endpoint, and retries every publish, on one hard-coded policy:
/// exponential from about 6 s to 30 s apart, ±25 % jitter, plus a fixed 1 s per attempt; and each receive
/// endpoint keeps counting its attempts for as long as the process lives (the count is never reset when it connects
/// again). So after a broker restart each endpoint came back on its own schedule, and a service is whole again only
/// when its last endpoint is: in the RabbitMQ kill fault scenario 8-12 s after the broker was ready the first time,
/// 19-37 s after later kills (waits of 24-37 s logged by the third), the first lease 8-26 s after the broker was back
/// (docs/reliability.md, known issue 16). The policy is a read-only property with
/// no configuration API (MassTransit issue #671), so <see cref="Install"/> replaces it on the bus's host
/// configuration before the bus starts: MassTransit's own filter of which failures are worth another attempt, with
/// short intervals (<see cref="RabbitMqOptions.ReconnectInterval"/> at most) and no limit on their number.
/// </para>
/// </summary>
public static class BrokerReconnect
{
    /// <summary>The compiler's backing field of <c>RabbitMqHostConfiguration.ReceiveTransportRetryPolicy</c> (MassTransit 8.x).</summary>
    private const string PolicyField = "<ReceiveTransportRetryPolicy>k__BackingField";

    /// <summary>
    /// Replaces the reconnect policy of <paramref name="host"/> (receive endpoints and sends/publishes, which
    /// MassTransit gives the same policy). Must run before the bus starts: each receive endpoint takes the policy when
    /// it starts. Throws when this MassTransit version keeps the policy elsewhere, rather than silently keeping the slow one.
    /// </summary>
    public static IRetryPolicy Install(IHostConfiguration host, TimeSpan maxInterval)
    {
        var field = FindField(host.GetType())
            ?? throw new InvalidOperationException(
                $"{host.GetType().FullName} keeps its transport retry policy elsewhere in this MassTransit version: " +
                "the quick broker reconnect (Marketplace.ServiceDefaults.Messaging.BrokerReconnect) must be updated");
        var original = host.ReceiveTransportRetryPolicy;
        if (original is QuickReconnectPolicy) return original;
        var policy = new QuickReconnectPolicy(original, maxInterval);
        field.SetValue(host, policy);
        return policy;
    }

    private static FieldInfo? FindField(Type? type)
    {
        for (; type is not null; type = type.BaseType)
            if (type.GetField(PolicyField, BindingFlags.Instance | BindingFlags.NonPublic | BindingFlags.DeclaredOnly) is { } field
                && field.FieldType == typeof(IRetryPolicy))
                return field;
        return null;
    }

    /// <summary>Installs the policy on the bus's host configuration just before the bus starts its receive endpoints.</summary>
    public sealed class Installer(IServiceProvider services, TimeSpan maxInterval) : IBusObserver
    {
        public Task PreStart(IBus bus)
        {
            Install(services.GetRequiredService<IBusInstance>().HostConfiguration, maxInterval);
            return Task.CompletedTask;
        }

        public void PostCreate(IBus bus) { }
        public void CreateFaulted(Exception exception) { }
        public Task PostStart(IBus bus, Task<BusReady> busReady) => Task.CompletedTask;
        public Task StartFaulted(IBus bus, Exception exception) => Task.CompletedTask;
        public Task PreStop(IBus bus) => Task.CompletedTask;
        public Task PostStop(IBus bus) => Task.CompletedTask;
        public Task StopFaulted(IBus bus, Exception exception) => Task.CompletedTask;
    }

    /// <summary>
    /// Retries what <paramref name="original"/> would retry (a lost or refused connection, a closed channel; never a
    /// refused login), after about 0.4 s growing to <paramref name="maxInterval"/> (±25 %), without end.
    /// </summary>
    public sealed class QuickReconnectPolicy(IRetryPolicy original, TimeSpan maxInterval) : IRetryPolicy
    {
        private readonly ExponentialRetryPolicy _intervals = new(new SameFilter(original), int.MaxValue,
            TimeSpan.FromMilliseconds(Math.Min(200, maxInterval.TotalMilliseconds)), maxInterval, TimeSpan.FromMilliseconds(200));

        public TimeSpan MaxInterval => maxInterval;

        public bool IsHandled(Exception exception) => original.IsHandled(exception);

        RetryPolicyContext<T> IRetryPolicy.CreatePolicyContext<T>(T context) => ((IRetryPolicy)_intervals).CreatePolicyContext(context);

        public void Probe(ProbeContext context) => ((IProbeSite)_intervals).Probe(context.CreateScope("quickReconnect"));

        public override string ToString() => $"QuickReconnect (at most {maxInterval.TotalSeconds:0.###} s apart, no limit)";

        private sealed class SameFilter(IRetryPolicy original) : IExceptionFilter
        {
            public bool Match(Exception exception) => original.IsHandled(exception);

            public void Probe(ProbeContext context) => context.Add("filter", "as MassTransit's transport retry policy");
        }
    }
}
