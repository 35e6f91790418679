using System.Diagnostics;
using Dapper;
using MassTransit;
using MassTransit.Transports;
using Marketplace.Contracts;
using Marketplace.ServiceDefaults.Data;
using Marketplace.ServiceDefaults.Messaging;
using Marketplace.Testing;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Diagnostics.HealthChecks;
using RabbitMQ.Client.Exceptions;
using Xunit;
using Xunit.Abstractions;

namespace Marketplace.ServiceDefaults.Tests;

/// <summary>
/// After the broker was lost and is back, the bus must be whole again within seconds: every receive endpoint
/// consuming and the outbox publishing (MassTransit's own policy waited up to 30 s between attempts, and longer with
/// each outage: <see cref="BrokerReconnect"/>).
/// </summary>
public sealed class BrokerReconnectTests(ITestOutputHelper output) : ServersPerTest
{
    [Fact]
    public async Task The_bus_retries_a_lost_broker_on_the_quick_policy_and_still_never_retries_a_refused_login()
    {
        await using var app = ProbeHost.Build(_db, _vhost);
        await app.StartAsync();
        await app.Services.WaitForBusAsync();

        var policy = app.Services.GetRequiredService<IBusInstance>().HostConfiguration.ReceiveTransportRetryPolicy;
        var quick = Assert.IsType<BrokerReconnect.QuickReconnectPolicy>(policy);
        Assert.Equal(TimeSpan.FromSeconds(1), quick.MaxInterval);
        Assert.True(policy.IsHandled(new MassTransit.RabbitMqConnectionException("Broker unreachable")));
        Assert.False(policy.IsHandled(new AuthenticationFailureException("ACCESS_REFUSED")));
        await app.StopAsync();
    }

    /// <summary>
    /// A private broker (never the shared one) killed three times: each time, once it is back, the probe service's
    /// bus is healthy again and a message its outbox held during the outage is consumed within
    /// <see cref="Bound"/> (0.7-1.1 s measured). With MassTransit's own policy (<c>RabbitMq__ReconnectInterval=00:00:00</c>)
    /// it failed at the first outage; its waits grow to 30 s ±25 % by the third.
    /// </summary>
    [Fact]
    public async Task After_each_of_three_broker_kills_the_bus_consumes_again_within_seconds_of_the_broker_being_back()
    {
        await using var broker = await PrivateRabbitMq.StartAsync();
        await using var vhost = await TestVirtualHost.CreateAsync(new ServerEndpoints(TestServers.PgPort, broker.Port, broker.ManagementPort));
        await using var app = ProbeHost.Build(_db, vhost, rabbitPort: broker.Port);
        await app.StartAsync();
        await app.Services.WaitForBusAsync(TimeSpan.FromSeconds(60));
        var health = app.Services.GetRequiredService<HealthCheckService>();

        for (var outage = 1; outage <= 3; outage++)
        {
            broker.Kill();
            await Eventually.True(async () => (await health.CheckHealthAsync(c => c.Tags.Contains("ready"))).Status != HealthStatus.Healthy,
                TimeSpan.FromSeconds(30), "the bus to notice the broker is gone");
            // Written while the broker is down: the relay holds it until the bus can publish again.
            var message = new OfferWithdrawn(Guid.NewGuid(), Guid.NewGuid(), DateTimeOffset.UtcNow);
            await ProbeHost.WriteToOutboxAsync(app.Services, message);
            await Task.Delay(TimeSpan.FromSeconds(5));
            await broker.StartAgainAsync();
            var back = Stopwatch.StartNew();

            await Eventually.True(async () => (await health.CheckHealthAsync(c => c.Tags.Contains("ready"))).Status == HealthStatus.Healthy,
                Bound, $"every endpoint consuming again within {Bound.TotalSeconds:0} s of the broker being back (outage {outage})");
            var healthy = back.Elapsed;
            await Eventually.True(async () => await ProbeHost.EffectsAsync(_db, message.OfferId) == 1,
                TimeSpan.FromMilliseconds(Math.Max(100, (Bound - back.Elapsed).TotalMilliseconds)), $"the message held during outage {outage} consumed within {Bound.TotalSeconds:0} s of the broker being back");
            output.WriteLine($"outage {outage}: bus healthy {healthy.TotalSeconds:0.0} s and the held message consumed {back.Elapsed.TotalSeconds:0.0} s after the broker was back");
        }
        await app.StopAsync();
    }

    /// <summary>Generous for a busy machine (the quick policy tries every 2.25 s at most); MassTransit's own needs up to 30 s.</summary>
    private static readonly TimeSpan Bound = TimeSpan.FromSeconds(8);

}

/// <summary>
/// A RabbitMQ node of this test's own (<c>infra/servers.sh start rabbitmq</c> on free ports, data in the temp folder),
/// to kill and restart; the shared broker is never touched. Removed at the end.
/// </summary>
public sealed class PrivateRabbitMq : IAsyncDisposable
{
    private readonly Dictionary<string, string> _env;
    private readonly string _data;

    public int Port { get; }
    public int ManagementPort { get; }

    private PrivateRabbitMq(int[] ports, string data)
    {
        Port = ports[0];
        ManagementPort = ports[1];
        _data = data;
        _env = new Dictionary<string, string>
        {
            ["MP_DATA_DIR"] = data,
            ["MP_RABBIT_PORT"] = ports[0].ToString(),
            ["MP_RABBIT_MGMT_PORT"] = ports[1].ToString(),
            ["MP_RABBIT_DIST_PORT"] = ports[2].ToString(),
            ["MP_EPMD_PORT"] = ports[3].ToString(),
            ["MP_RABBIT_NODENAME"] = $"reconnect{Path.GetFileName(data)[^8..]}@localhost",
        };
    }

    public static async Task<PrivateRabbitMq> StartAsync()
    {
        var ports = InfraScripts.FreePorts(4);
        var shared = TestServers.Shared;
        if (ports.Any(p => p is >= 8080 and <= 8089 || p == shared.PgPort || p == shared.RabbitPort || p == shared.RabbitManagementPort))
            throw new InvalidOperationException("a private broker may not take a shared or reserved port");
        var broker = new PrivateRabbitMq(ports, Path.Combine("/tmp", "marketplace-reconnect-" + Guid.NewGuid().ToString("N")[..8]));
        try
        {
            await broker.ScriptAsync("start", "rabbitmq");
            return broker;
        }
        catch
        {
            await broker.DisposeAsync();
            throw;
        }
    }

    /// <summary>kill -9 of the node's Erlang VM: its clients get no goodbye.</summary>
    public void Kill()
    {
        using var node = Process.GetProcessById(int.Parse(File.ReadAllText(Path.Combine(_data, "rabbitmq", "rabbit.pid")).Trim()));
        node.Kill();
        node.WaitForExit(10_000);
    }

    /// <summary>Starts the node again from its data; returns once its management API answers (our vhost and user are back).</summary>
    public Task StartAgainAsync() => ScriptAsync("start", "rabbitmq");

    public async ValueTask DisposeAsync()
    {
        try { await ScriptAsync("stop", "rabbitmq"); }
        catch (InvalidOperationException) { }
        try { Directory.Delete(_data, recursive: true); }
        catch (IOException) { }
        catch (UnauthorizedAccessException) { }
    }

    private Task ScriptAsync(params string[] args) => InfraScripts.ServersAsync(_env, TimeSpan.FromMinutes(3), args);
}
