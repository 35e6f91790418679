using System.Diagnostics;
using Dapper;
using Marketplace.Testing;
using Xunit;
using Xunit.Abstractions;

namespace Marketplace.Proof.Tests;

/// <summary>
/// A marketplace of its own on a PostgreSQL + RabbitMQ pair of its own: these tests kill its processes and its servers
/// (never the shared servers other people's tests use).
/// </summary>
public sealed class FaultFixture : IAsyncLifetime
{
    public PrivateServers Servers { get; private set; } = null!;
    public MarketplaceStack Stack { get; private set; } = null!;

    public async Task InitializeAsync()
    {
        Servers = await PrivateServers.StartAsync();
        Stack = await MarketplaceStack.StartAsync(new StackOptions { Servers = Servers.Endpoints, Settings = LoadProfile.StackSettings() });
    }

    public async Task DisposeAsync()
    {
        if (Stack is not null) await Stack.DisposeAsync();
        if (Servers is not null) await Servers.DisposeAsync();
    }
}

[CollectionDefinition(Name)]
public sealed class FaultCollection : ICollectionFixture<FaultFixture>
{
    public const string Name = "faults";
}

/// <summary>
/// Fault scenarios under load (<see cref="FaultMarket"/>: orders through the gateway at a steady rate, offers
/// published meanwhile): a fault strikes <see cref="LoadProfile.Repeats"/> times during the load; after recovery every
/// invariant of <see cref="Invariants"/> holds. Short in CI; <c>infra/proof.sh faults</c> runs the long versions.
/// </summary>
[Collection(FaultCollection.Name)]
public sealed class FaultTests(FaultFixture fixture, ITestOutputHelper output)
{
    private static readonly string[] Services = ["Gateway", "Listings", "Bidding", "Scheduling", "Billing"];

    /// <summary>CI kills each service in turn during one load; the long version gives each service a run of its own.</summary>
    public static TheoryData<string> KillPlans =>
        TestServers.Env("MP_FAULT_EACH", "0") == "1" ? new TheoryData<string>(Services) : new TheoryData<string>(string.Join(",", Services));

    [Theory]
    [MemberData(nameof(KillPlans))]
    public async Task Services_killed_mid_load_and_restarted_leave_every_order_settled_and_every_invariant_true(string services)
    {
        var victims = services.Split(',');
        var profile = LoadProfile.Faults;
        // Each kill is followed by the down time and a restart; the load runs at least as long as all of them.
        var loadSeconds = Math.Max(profile.LoadSeconds, victims.Length * profile.Repeats * (profile.DownSeconds + 8));
        await RunAsync($"kill-{string.Join('-', victims).ToLowerInvariant()}", profile with { LoadSeconds = loadSeconds },
            victims.SelectMany(v => Enumerable.Repeat(v, profile.Repeats)).Select<string, Func<Task>>(service => async () =>
            {
                fixture.Stack.Kill(service);
                await Task.Delay(TimeSpan.FromSeconds(profile.DownSeconds));
                await fixture.Stack.StartServiceAsync(service);
            }).ToList(), victim: i => victims[i / profile.Repeats] + " kill -9");
    }

    [Fact]
    public async Task Every_broker_connection_closed_mid_load_leaves_every_order_settled_and_every_invariant_true()
    {
        var profile = LoadProfile.Faults;
        var closed = new List<int>();
        await RunAsync("close-connections", profile, Enumerable.Range(0, profile.Repeats).Select<int, Func<Task>>(_ => async () =>
        {
            closed.Add(await fixture.Stack.VirtualHost.CloseConnectionsAsync());
            // Every service connects again by itself (its readiness includes the bus).
            await Task.Delay(TimeSpan.FromSeconds(1));
            await fixture.Stack.WaitReadyAsync(TimeSpan.FromSeconds(60));
        }).ToList(), victim: i => $"closed every broker connection ({closed[i]})");
        Assert.All(closed, n => Assert.True(n >= 4, $"only {n} connections were there to close"));
    }

    /// <summary>
    /// Also measures, for each kill, how long after the broker was back each service's bus was whole again (every receive
    /// endpoint consuming: <c>/health/ready</c> says Healthy) and when the first order was matched into a lease again.
    /// The measuring runs beside the load and does not hold up the next kill (which ends it).
    /// </summary>
    [Fact]
    public async Task RabbitMQ_killed_mid_load_and_restarted_leaves_every_order_settled_and_every_invariant_true()
    {
        var profile = LoadProfile.Faults;
        var recoveries = new List<(DateTime BrokerReady, Task<string> Services)>();
        CancellationTokenSource? measuring = null;
        try
        {
            await RunAsync("kill-rabbitmq", profile with { LoadSeconds = Math.Max(profile.LoadSeconds, profile.Repeats * (profile.DownSeconds + 12)) },
                Enumerable.Range(0, profile.Repeats).Select<int, Func<Task>>(_ => async () =>
                {
                    measuring?.Cancel();
                    fixture.Servers.KillRabbitMq();
                    await Task.Delay(TimeSpan.FromSeconds(profile.DownSeconds));
                    await fixture.Servers.StartRabbitMqAsync();
                    var brokerReady = DateTime.UtcNow;
                    measuring = new CancellationTokenSource(TimeSpan.FromMinutes(3));
                    recoveries.Add((brokerReady, BusesReadyAsync(brokerReady, measuring.Token)));
                }).ToList(), victim: i => $"RabbitMQ kill -9; broker ready at {recoveries[i].BrokerReady:HH:mm:ss.fff} UTC");
        }
        finally
        {
            await using var db = fixture.Stack.Database.OpenAdmin();
            foreach (var (brokerReady, services) in recoveries)
            {
                var firstLease = await db.ExecuteScalarAsync<DateTime?>(
                    "SELECT min(created_at) FROM scheduling.leases WHERE created_at >= @brokerReady", new { brokerReady });
                output.WriteLine($"broker ready at {brokerReady:HH:mm:ss.fff} UTC; each bus whole again after: {await services}; " +
                                 $"first order matched into a lease {(firstLease is { } t ? $"{(t - brokerReady).TotalSeconds:0.0} s" : "never")} later");
            }
        }
    }

    /// <summary>For each service, seconds from <paramref name="since"/> until its readiness check says Healthy (database and every endpoint of its bus).</summary>
    private async Task<string> BusesReadyAsync(DateTime since, CancellationToken ct)
    {
        using var http = new HttpClient { Timeout = TimeSpan.FromSeconds(2) };
        var ready = await Task.WhenAll(Services.Select(async service =>
        {
            var url = new Uri(fixture.Stack.UrlOf(service), "/health/ready");
            while (!ct.IsCancellationRequested)
            {
                try
                {
                    // "Healthy", not only a 200: a bus with some endpoints back and others not is "Degraded", also answered 200.
                    var answer = await http.GetAsync(url, ct);
                    if (answer.IsSuccessStatusCode && System.Text.Json.JsonDocument.Parse(await answer.Content.ReadAsStringAsync(ct))
                            .RootElement.GetProperty("status").GetString() == "Healthy")
                        return $"{service} {(DateTime.UtcNow - since).TotalSeconds:0.0} s";
                }
                catch (HttpRequestException) { }
                catch (OperationCanceledException) { }
                try { await Task.Delay(100, ct); } catch (OperationCanceledException) { }
            }
            return $"{service} not before the next kill ({(DateTime.UtcNow - since).TotalSeconds:0.0} s)";
        }));
        return string.Join(", ", ready);
    }

    /// <summary>CI crashes PostgreSQL (immediate: no checkpoint, recovery at start); the long version also stops it politely.</summary>
    public static TheoryData<string> StopModes =>
        TestServers.Env("MP_FAULT_EACH", "0") == "1" ? new TheoryData<string>("immediate", "fast") : new TheoryData<string>("immediate");

    [Theory]
    [MemberData(nameof(StopModes))]
    public async Task PostgreSQL_restarted_mid_load_leaves_every_order_settled_and_every_invariant_true(string mode)
    {
        var profile = LoadProfile.Faults;
        await RunAsync($"restart-postgres-{mode}", profile, Enumerable.Range(0, profile.Repeats).Select<int, Func<Task>>(_ => async () =>
        {
            await fixture.Servers.StopPostgresAsync(mode);
            await Task.Delay(TimeSpan.FromSeconds(profile.DownSeconds));
            await fixture.Servers.StartPostgresAsync();
        }).ToList(), victim: _ => $"PostgreSQL stop -m {mode}");
    }

    /// <summary>Starts the load, strikes with each fault at evenly spaced times, stops the load and checks the invariants.</summary>
    private async Task RunAsync(string name, LoadProfile profile, IReadOnlyList<Func<Task>> faults, Func<int, string> victim)
    {
        var quiet = await Invariants.WaitQuietAsync(fixture.Stack, TimeSpan.FromSeconds(LoadProfile.SettleSeconds * 2), output);
        output.WriteLine($"{name}: {profile.OrdersPerSecond}/s for {profile.LoadSeconds} s, {faults.Count} faults; " +
                         $"waited {quiet.TotalSeconds:0} s for the earlier scenarios' work to finish; load average {LoadAverage()}");
        var market = await FaultMarket.CreateAsync(fixture.Stack, name, profile.Orders, profile.LoadSeconds / 2 + 2);
        var clock = Stopwatch.StartNew();
        var stream = market.StartLoad(profile.OrdersPerSecond);
        IReadOnlyList<OrderStream.Placement> placements;
        try
        {
            for (var i = 0; i < faults.Count; i++)
            {
                var at = TimeSpan.FromSeconds(profile.LoadSeconds * (i + 1.0) / (faults.Count + 1));
                if (at > clock.Elapsed) await Task.Delay(at - clock.Elapsed);
                var started = clock.Elapsed;
                await faults[i]();
                output.WriteLine($"{started.TotalSeconds,6:0.0} s: {victim(i)}; back after {(clock.Elapsed - started).TotalSeconds:0.0} s");
            }
            if (TimeSpan.FromSeconds(profile.LoadSeconds) > clock.Elapsed) await Task.Delay(TimeSpan.FromSeconds(profile.LoadSeconds) - clock.Elapsed);
        }
        finally
        {
            // Also when a fault step failed (a restart not ready in time): a load left running would go on placing orders
            // through every later scenario (it did: 19,000 orders of the Billing scenario while the next ones ran).
            placements = await stream.StopAsync();
        }
        output.WriteLine($"{clock.Elapsed.TotalSeconds,6:0.0} s: load stopped, every order answered");
        var outcome = await Invariants.AssertAsync(market, stream, placements, output);
        output.WriteLine($"{clock.Elapsed.TotalSeconds,6:0.0} s: settled; {outcome}; load average {LoadAverage()}");
    }

    /// <summary>The machine's 1, 5 and 15 minute load averages (the fault runs share two cores with other work).</summary>
    private static string LoadAverage() =>
        File.Exists("/proc/loadavg") ? string.Join(' ', File.ReadAllText("/proc/loadavg").Split(' ').Take(3)) : "unknown";
}
