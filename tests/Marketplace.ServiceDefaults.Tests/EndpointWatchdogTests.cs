using System.Diagnostics;
using Dapper;
using MassTransit;
using Marketplace.Contracts;
using Marketplace.ServiceDefaults.Data;
using Marketplace.ServiceDefaults.Messaging;
using Marketplace.Testing;
using Microsoft.AspNetCore.Builder;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Diagnostics.HealthChecks;
using Xunit;
using Xunit.Abstractions;

namespace Marketplace.ServiceDefaults.Tests;

/// <summary>
/// A receive endpoint that stays down while the broker answers is restarted (<see cref="EndpointWatchdog"/>); one that
/// reconnects by itself is left alone. On a private broker (never the shared one), killed and started again.
/// </summary>
public sealed class EndpointWatchdogTests(ITestOutputHelper output) : ServersPerTest
{
    private static readonly TimeSpan Grace = TimeSpan.FromSeconds(5);

    private static readonly Dictionary<string, string?> QuickWatchdog = new()
    {
        ["RabbitMq:EndpointWatchdog:Interval"] = "00:00:00.500",
        ["RabbitMq:EndpointWatchdog:Grace"] = Grace.ToString(),
    };

    /// <summary>
    /// The probe endpoint's transport is wedged at the broker kill: its fault notification never returns (as an attempt
    /// RabbitMQ.Client never finishes), so MassTransit neither retries nor stops it; the bus's other endpoint comes back.
    /// The watchdog restarts it and it consumes again. With <c>RabbitMq:EndpointWatchdog:Interval</c> 0 this fails: the
    /// endpoint stays down and the bus stays Degraded.
    /// </summary>
    [Fact]
    public async Task A_receive_endpoint_wedged_while_the_broker_restarts_is_restarted_and_consumes_again()
    {
        await using var broker = await PrivateRabbitMq.StartAsync();
        await using var vhost = await TestVirtualHost.CreateAsync(new ServerEndpoints(TestServers.PgPort, broker.Port, broker.ManagementPort));
        await using var app = ProbeHost.Build(_db, vhost, rabbitPort: broker.Port, settings: QuickWatchdog);
        await app.StartAsync();
        await app.Services.WaitForBusAsync(TimeSpan.FromSeconds(60));
        var watchdog = app.Services.GetRequiredService<EndpointWatchdog>();
        var wedge = new WedgeAtFault("probe");
        var observer = app.Services.GetRequiredService<IBus>().ConnectReceiveEndpointObserver(wedge);
        try
        {
            broker.Kill();
            await wedge.Wedged.WaitAsync(TimeSpan.FromSeconds(30));
            // What the watchdog saw, in the ready check: the endpoint down for longer than the grace.
            await Eventually.True(async () => await WatchdogCheckAsync(app) is { Status: HealthStatus.Degraded } e && e.Description!.Contains("listings-probe"),
                TimeSpan.FromSeconds(30), "the ready check to name the endpoint down for longer than the grace");
            await broker.StartAgainAsync();
            var back = Stopwatch.StartNew();
            Assert.NotEqual(HealthStatus.Healthy, await ReadyAsync(app));

            await Eventually.True(async () => await ReadyAsync(app) == HealthStatus.Healthy, TimeSpan.FromSeconds(60),
                "the wedged endpoint restarted and the bus whole again within 60 s of the broker being back");
            var healthy = back.Elapsed;
            var recovery = Assert.Single(watchdog.Recoveries);
            Assert.EndsWith("probe", recovery.Endpoint);
            Assert.True(recovery.TransportAbandoned, "the wedged transport never stops, so it is abandoned");

            var message = new OfferWithdrawn(Guid.NewGuid(), Guid.NewGuid(), DateTimeOffset.UtcNow);
            await ProbeHost.WriteToOutboxAsync(app.Services, message);
            await Eventually.True(async () => await ProbeHost.EffectsAsync(_db, message.OfferId) == 1, TimeSpan.FromSeconds(15),
                "a message sent to the restarted endpoint consumed");
            output.WriteLine($"bus healthy {healthy.TotalSeconds:0.0} s after the broker was back; {recovery.Endpoint} down " +
                $"{recovery.Down.TotalSeconds:0.0} s in all, ready {recovery.ReadyAfterRestart.TotalSeconds:0.0} s after its restart; " +
                $"a new message consumed {back.Elapsed.TotalSeconds:0.0} s after the broker was back");
        }
        finally
        {
            observer.Disconnect();
            wedge.Release();
        }
        await app.StopAsync();
    }

    [Fact]
    public async Task The_watchdog_restarts_nothing_in_normal_operation_nor_across_a_broker_restart()
    {
        await using var broker = await PrivateRabbitMq.StartAsync();
        await using var vhost = await TestVirtualHost.CreateAsync(new ServerEndpoints(TestServers.PgPort, broker.Port, broker.ManagementPort));
        await using var app = ProbeHost.Build(_db, vhost, rabbitPort: broker.Port, settings: QuickWatchdog);
        await app.StartAsync();
        await app.Services.WaitForBusAsync(TimeSpan.FromSeconds(60));
        var watchdog = app.Services.GetRequiredService<EndpointWatchdog>();

        var before = new OfferWithdrawn(Guid.NewGuid(), Guid.NewGuid(), DateTimeOffset.UtcNow);
        await ProbeHost.WriteToOutboxAsync(app.Services, before);
        await Eventually.True(async () => await ProbeHost.EffectsAsync(_db, before.OfferId) == 1, TimeSpan.FromSeconds(15), "a message consumed");

        broker.Kill();
        await Eventually.True(async () => await ReadyAsync(app) != HealthStatus.Healthy, TimeSpan.FromSeconds(30), "the bus to notice the broker is gone");
        // Down for longer than the grace, so only "counted from when the broker answers" keeps the endpoints from a restart.
        await broker.StartAgainAsync();
        await Eventually.True(async () => await ReadyAsync(app) == HealthStatus.Healthy, TimeSpan.FromSeconds(30), "the bus whole again");
        var after = new OfferWithdrawn(Guid.NewGuid(), Guid.NewGuid(), DateTimeOffset.UtcNow);
        await ProbeHost.WriteToOutboxAsync(app.Services, after);
        await Eventually.True(async () => await ProbeHost.EffectsAsync(_db, after.OfferId) == 1, TimeSpan.FromSeconds(15), "a message consumed after the restart");

        Assert.Equal(0, watchdog.Restarts);
        Assert.Empty(watchdog.Recoveries);
        await app.StopAsync();
    }

    private static async Task<HealthStatus> ReadyAsync(WebApplication app) =>
        (await app.Services.GetRequiredService<HealthCheckService>().CheckHealthAsync(c => c.Tags.Contains("ready"))).Status;

    private static async Task<HealthReportEntry> WatchdogCheckAsync(WebApplication app) =>
        (await app.Services.GetRequiredService<HealthCheckService>().CheckHealthAsync(c => c.Name == "receive-endpoints")).Entries["receive-endpoints"];


    /// <summary>
    /// Holds the first fault notification of the endpoint whose name ends with <paramref name="endpoint"/> until
    /// <see cref="Release"/>: MassTransit awaits it in the transport's reconnect loop, which then neither retries nor stops.
    /// </summary>
    private sealed class WedgeAtFault(string endpoint) : IReceiveEndpointObserver
    {
        private readonly TaskCompletionSource _wedged = new(TaskCreationOptions.RunContinuationsAsynchronously);
        private readonly TaskCompletionSource _release = new(TaskCreationOptions.RunContinuationsAsynchronously);
        private int _held;

        public Task Wedged => _wedged.Task;

        public void Release() => _release.TrySetResult();

        public Task Faulted(ReceiveEndpointFaulted faulted)
        {
            if (!faulted.InputAddress.AbsolutePath.EndsWith(endpoint, StringComparison.Ordinal) || Interlocked.Exchange(ref _held, 1) == 1)
                return Task.CompletedTask;
            _wedged.TrySetResult();
            return _release.Task;
        }

        public Task Ready(ReceiveEndpointReady ready) => Task.CompletedTask;
        public Task Stopping(ReceiveEndpointStopping stopping) => Task.CompletedTask;
        public Task Completed(ReceiveEndpointCompleted completed) => Task.CompletedTask;
    }
}
