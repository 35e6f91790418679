using System.ComponentModel.DataAnnotations;
using System.Reflection;
using MassTransit;
using MassTransit.Transports;
using Microsoft.Extensions.Diagnostics.HealthChecks;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;
using RabbitMQ.Client;

namespace Marketplace.ServiceDefaults.Messaging;

/// <summary><c>RabbitMq:EndpointWatchdog</c>: <see cref="EndpointWatchdog"/>.</summary>
public sealed class EndpointWatchdogOptions
{
    /// <summary>How often the endpoints are looked at. Zero turns the watchdog off.</summary>
    [Range(typeof(TimeSpan), "00:00:00", "00:10:00")] public TimeSpan Interval { get; set; } = TimeSpan.FromSeconds(5);

    /// <summary>
    /// How long an endpoint may stay down while the broker answers before it is restarted. After a broker restart each
    /// endpoint is back within about 2 s (known issue 16), so 15 s does not cut a slow reconnect short.
    /// </summary>
    [Range(typeof(TimeSpan), "00:00:01", "01:00:00")] public TimeSpan Grace { get; set; } = TimeSpan.FromSeconds(15);
}

/// <summary>
/// Restarts a receive endpoint that stays down while the broker answers. Seen once after a broker kill that came while
/// an endpoint was declaring its topology on a new connection: that endpoint never logged again and never came back
/// while the rest of the service did (docs/reliability.md, known issue 16), likely RabbitMQ.Client 7.2 leaving an
/// operation waiting when its connection is closed under it (as in known issue 7). MassTransit retries a failed
/// connection for ever, but not an attempt that never ends.
/// <para>
/// It learns each endpoint's state from MassTransit's receive endpoint events. An endpoint that is neither ready nor
/// stopped on purpose for longer than <see cref="EndpointWatchdogOptions.Grace"/>, counted from when the broker answers
/// again (another endpoint of the bus is ready, or a fresh connection succeeds), is stopped and started again through
/// <see cref="IReceiveEndpoint"/>. A stop waits for the endpoint's transport to finish its current attempt, which a
/// wedged one never does: after <see cref="StopTimeout"/> that transport is abandoned (MassTransit's endpoint forgets
/// its handle, by reflection: there is no API for it) and a new one started; the old one ends by itself if its attempt
/// ever returns (it is already told to stop). Restarting the whole bus would not help: it stops every endpoint the same
/// way and would wait on the same attempt.
/// </para>
/// </summary>
public sealed class EndpointWatchdog(
    IOptions<EndpointWatchdogOptions> options,
    IOptions<RabbitMqOptions> rabbit,
    TimeProvider time,
    ILogger<EndpointWatchdog> logger) : BackgroundService, IReceiveEndpointObserver, IHealthCheck
{
    /// <summary>How long a restart waits for the endpoint's transport to stop before abandoning it.</summary>
    public static readonly TimeSpan StopTimeout = TimeSpan.FromSeconds(5);

    /// <summary>MassTransit 8.x <c>ReceiveEndpoint</c>'s handle of its running transport; null when stopped.</summary>
    private static readonly FieldInfo? TransportHandle =
        typeof(ReceiveEndpoint).GetField("_handle", BindingFlags.Instance | BindingFlags.NonPublic);

    private readonly Lock _lock = new();
    private readonly Dictionary<Uri, Watched> _endpoints = [];
    private readonly List<Recovery> _recoveries = [];
    private DateTimeOffset? _brokerAnsweringSince;
    private string? _cannotRestart;

    /// <summary>An endpoint the watchdog restarted, and how long it was down in all (from its fault until ready again).</summary>
    public sealed record Recovery(string Endpoint, TimeSpan Down, TimeSpan ReadyAfterRestart, bool TransportAbandoned);

    public IReadOnlyList<Recovery> Recoveries { get { lock (_lock) return [.. _recoveries]; } }

    public int Restarts { get { lock (_lock) return _endpoints.Values.Sum(e => e.Restarts); } }

    protected override async Task ExecuteAsync(CancellationToken stoppingToken)
    {
        var interval = options.Value.Interval;
        if (interval <= TimeSpan.Zero) return;
        if (TransportHandle?.FieldType.IsClass != true)
            logger.LogError("This MassTransit version keeps a receive endpoint's transport elsewhere: the endpoint watchdog " +
                "(Marketplace.ServiceDefaults.Messaging.EndpointWatchdog) can only restart an endpoint whose transport stops");
        using var timer = new PeriodicTimer(interval, time);
        try
        {
            while (await timer.WaitForNextTickAsync(stoppingToken))
                await CheckAsync(stoppingToken);
        }
        catch (OperationCanceledException) when (stoppingToken.IsCancellationRequested) { }
    }

    private async Task CheckAsync(CancellationToken ct)
    {
        Watched[] down;
        bool anyReady;
        lock (_lock)
        {
            down = [.. _endpoints.Values.Where(e => e is { Ready: false, Stopped: false, Restarting: false })];
            anyReady = _endpoints.Values.Any(e => e is { Ready: true, Connected: true });
        }
        if (down.Length == 0) return;

        var now = time.GetUtcNow();
        if (anyReady || await BrokerAnswersAsync(ct)) _brokerAnsweringSince ??= now;
        else
        {
            _brokerAnsweringSince = null;
            return;
        }
        foreach (var endpoint in down)
        {
            var since = endpoint.DownSince > _brokerAnsweringSince ? endpoint.DownSince : _brokerAnsweringSince.Value;
            if (now - since >= options.Value.Grace)
                await RestartAsync(endpoint, now, ct);
        }
    }

    private async Task RestartAsync(Watched endpoint, DateTimeOffset now, CancellationToken ct)
    {
        logger.LogWarning("Receive endpoint {Endpoint} has not been ready for {DownSeconds:0.0} s while the broker answers: restarting it",
            endpoint.Name, (now - endpoint.FaultedAt).TotalSeconds);
        lock (_lock) endpoint.Restarting = true;
        try
        {
            var stop = endpoint.Endpoint.Stop(CancellationToken.None);
            var abandoned = false;
            var stopped = await Task.WhenAny(stop, Task.Delay(StopTimeout, time, ct)) == stop;
            ct.ThrowIfCancellationRequested();
            if (!stopped || !stop.IsCompletedSuccessfully)
            {
                if (endpoint.Endpoint is not ReceiveEndpoint concrete || TransportHandle?.FieldType.IsClass != true)
                {
                    lock (_lock) _cannotRestart = $"{endpoint.Name} is stuck and its transport does not stop (restart the process)";
                    logger.LogError("Receive endpoint {Endpoint} did not stop within {StopSeconds} s and this MassTransit version " +
                        "gives no way to replace its transport: restart the process", endpoint.Name, StopTimeout.TotalSeconds);
                    return;
                }
                logger.LogWarning("Receive endpoint {Endpoint} did not stop within {StopSeconds} s (its transport is waiting on an " +
                    "attempt that does not end): starting a new transport beside it", endpoint.Name, StopTimeout.TotalSeconds);
                TransportHandle.SetValue(concrete, null);
                abandoned = true;
            }
            endpoint.Endpoint.Start(CancellationToken.None);
            lock (_lock)
            {
                endpoint.Restarts++;
                endpoint.RestartedAt = now;
                endpoint.Abandoned = abandoned;
                endpoint.DownSince = time.GetUtcNow(); // a new grace before the next attempt
            }
        }
        catch (Exception ex) when (ex is not OperationCanceledException)
        {
            logger.LogError(ex, "Receive endpoint {Endpoint} could not be restarted", endpoint.Name);
        }
        finally
        {
            lock (_lock) endpoint.Restarting = false;
        }
    }

    /// <summary>A fresh connection with the bus's settings: the broker is back for this service (not only up).</summary>
    private async Task<bool> BrokerAnswersAsync(CancellationToken ct)
    {
        var o = rabbit.Value;
        var factory = new ConnectionFactory
        {
            VirtualHost = o.VirtualHost,
            UserName = o.Username,
            Password = o.Password,
            AutomaticRecoveryEnabled = false,
            RequestedConnectionTimeout = TimeSpan.FromSeconds(5),
        };
        AmqpTcpEndpoint[] nodes = o.ClusterNodes.Length > 0
            ? [.. o.ClusterNodes.Select(n => AmqpTcpEndpoint.Parse(n))]
            : [new AmqpTcpEndpoint(o.Host, o.Port)];
        try
        {
            await using var connection = await factory.CreateConnectionAsync(nodes, "endpoint-watchdog", ct);
            await connection.CloseAsync(ct);
            return true;
        }
        catch (Exception ex) when (ex is not OperationCanceledException || !ct.IsCancellationRequested)
        {
            return false;
        }
    }

    public Task<HealthCheckResult> CheckHealthAsync(HealthCheckContext context, CancellationToken ct = default)
    {
        if (options.Value.Interval <= TimeSpan.Zero) return Task.FromResult(HealthCheckResult.Healthy("watchdog off"));
        var now = time.GetUtcNow();
        lock (_lock)
        {
            var data = _endpoints.Values.ToDictionary(e => e.Name, object (e) => new
            {
                ready = e.Ready,
                stopped = e.Stopped,
                down_seconds = e.Ready || e.Stopped ? 0 : Math.Round((now - e.FaultedAt).TotalSeconds, 1),
                restarts = e.Restarts,
            });
            if (_cannotRestart is not null) return Task.FromResult(HealthCheckResult.Unhealthy(_cannotRestart, data: data));
            var stuck = _endpoints.Values.Where(e => e is { Ready: false, Stopped: false } && now - e.FaultedAt >= options.Value.Grace).ToArray();
            if (stuck.Length > 0)
                return Task.FromResult(HealthCheckResult.Degraded(
                    "not ready for longer than the grace: " + string.Join(", ", stuck.Select(e => $"{e.Name} ({(now - e.FaultedAt).TotalSeconds:0} s, restarted {e.Restarts}x)")),
                    data: data));
            var last = _recoveries.LastOrDefault();
            return Task.FromResult(HealthCheckResult.Healthy(
                last is null ? "no endpoint restarted" : $"{_recoveries.Count} restart(s); last {last.Endpoint}, down {last.Down.TotalSeconds:0.0} s",
                data));
        }
    }

    Task IReceiveEndpointObserver.Ready(ReceiveEndpointReady ready)
    {
        Recovery? recovered = null;
        lock (_lock)
        {
            var e = Get(ready);
            if (e.RestartedAt is { } restartedAt)
            {
                var now = time.GetUtcNow();
                recovered = new Recovery(e.Name, now - e.FaultedAt, now - restartedAt, e.Abandoned);
                _recoveries.Add(recovered);
                e.RestartedAt = null;
            }
            e.Ready = true;
            e.Stopped = false;
            e.Connected = ready.IsStarted;
        }
        if (recovered is not null)
            logger.LogWarning("Receive endpoint {Endpoint} is ready again {ReadySeconds:0.0} s after the watchdog began restarting it " +
                "(down {DownSeconds:0.0} s in all; transport abandoned: {Abandoned})",
                recovered.Endpoint, recovered.ReadyAfterRestart.TotalSeconds, recovered.Down.TotalSeconds, recovered.TransportAbandoned);
        return Task.CompletedTask;
    }

    Task IReceiveEndpointObserver.Faulted(ReceiveEndpointFaulted faulted)
    {
        lock (_lock) Down(Get(faulted));
        return Task.CompletedTask;
    }

    Task IReceiveEndpointObserver.Completed(ReceiveEndpointCompleted completed)
    {
        lock (_lock) Down(Get(completed));
        return Task.CompletedTask;
    }

    /// <summary>Stopped by the bus (the service is stopping) or the application: not the watchdog's to restart.</summary>
    Task IReceiveEndpointObserver.Stopping(ReceiveEndpointStopping stopping)
    {
        lock (_lock)
        {
            var e = Get(stopping);
            if (!e.Restarting) e.Stopped = true;
            Down(e);
        }
        return Task.CompletedTask;
    }

    private void Down(Watched e)
    {
        if (!e.Ready) return;
        e.Ready = false;
        e.DownSince = e.FaultedAt = time.GetUtcNow();
    }

    private Watched Get(ReceiveEndpointEvent evt)
    {
        if (!_endpoints.TryGetValue(evt.InputAddress, out var e))
        {
            var now = time.GetUtcNow();
            _endpoints[evt.InputAddress] = e = new Watched(evt.ReceiveEndpoint, evt.InputAddress.AbsolutePath.Split('/')[^1])
            {
                DownSince = now,
                FaultedAt = now,
            };
        }
        return e;
    }

    private sealed class Watched(IReceiveEndpoint endpoint, string name)
    {
        public IReceiveEndpoint Endpoint { get; } = endpoint;
        public string Name { get; } = name;
        public bool Ready;
        /// <summary>False for an endpoint MassTransit starts only on first use (the bus's own): ready says nothing of the broker.</summary>
        public bool Connected;
        public bool Stopped;
        public bool Restarting;
        public bool Abandoned;
        public int Restarts;
        /// <summary>When it went down (the measure of how long it was down).</summary>
        public DateTimeOffset FaultedAt;
        /// <summary>From when its grace counts: when it went down, or when the watchdog last restarted it.</summary>
        public DateTimeOffset DownSince;
        public DateTimeOffset? RestartedAt;
    }
}
