using System.Collections.Concurrent;
using Dapper;
using MassTransit;
using Marketplace.Contracts;
using Marketplace.ServiceDefaults.Messaging;
using Marketplace.Testing;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Time.Testing;
using Npgsql;

namespace Marketplace.Scheduling.Tests;

/// <summary>
/// The Scheduling service in-process on a fresh database and virtual host, with a clock the tests move, a recorder of
/// the events it publishes (a queue bound like any other subscriber's) and a count of the messages it consumed.
/// </summary>
public class SchedulingFixture : IAsyncLifetime
{
    public const string Model = "h100-sxm";

    private TestDatabase? _db;
    private TestVirtualHost? _vhost;
    private ServiceFactory<Program>? _factory;
    private ServiceFactory<Program>? _second;

    /// <summary>Configuration the service starts with (a derived fixture turns on agent acknowledgements).</summary>
    protected virtual IDictionary<string, string?>? Settings => null;

    /// <summary>Services a derived fixture adds to (or replaces in) every instance it starts.</summary>
    protected virtual void ConfigureServices(IServiceCollection services) { }

    /// <summary>A derived fixture runs a second instance of the service on the same database and virtual host.</summary>
    protected virtual bool TwoInstances => false;

    /// <summary>The second instance, when <see cref="TwoInstances"/>: it competes for the same queues and due work.</summary>
    public ServiceFactory<Program> Second => _second ?? throw new InvalidOperationException("this fixture runs one instance");

    public FakeTimeProvider Clock { get; } = new(new DateTimeOffset(2030, 1, 1, 0, 0, 0, TimeSpan.Zero));
    public ServiceFactory<Program> Factory => _factory!;
    public TestDatabase Database => _db!;
    public IBus Bus => Factory.Services.GetRequiredService<IBus>();
    public DueWorkRunner DueWork => Factory.Services.GetRequiredService<DueWorkRunner>();
    public ConcurrentQueue<object> Events { get; } = new();
    public ConsumeCounter Consumed { get; } = new();

    public async Task InitializeAsync()
    {
        _db = await TestDatabase.CreateAsync();
        _vhost = await TestVirtualHost.CreateAsync();
        _factory = new ServiceFactory<Program>("scheduling", _db, _vhost, Configure, Settings);
        _ = Factory.Server; // starts the host: migrations, bus, relay
        if (TwoInstances)
        {
            _second = new ServiceFactory<Program>("scheduling", _db, _vhost, Configure, Settings);
            _ = _second.Server;
        }
        Bus.ConnectConsumeObserver(Consumed);
        await Bus.ConnectProbeAsync("scheduling-tests-recorder", e =>
        {
            e.Handler<LeaseScheduled>(Record);
            e.Handler<PlacementFailed>(Record);
            e.Handler<LeaseStarted>(Record);
            e.Handler<LeaseEnded>(Record);
            e.Handler<LeaseInterrupted>(Record);
            e.Handler<LeaseResumed>(Record);
            e.Handler<LeaseSlotsMoved>(Record);
            e.Handler<PreemptionNoticeGiven>(Record);
            e.Handler<LeaseExtended>(Record);
        });
    }

    private void Configure(IServiceCollection services)
    {
        services.AddSingleton<TimeProvider>(Clock);
        ConfigureServices(services);
    }

    private Task Record<T>(ConsumeContext<T> context) where T : class
    {
        Events.Enqueue(context.Message);
        return Task.CompletedTask;
    }

    public IEnumerable<T> EventsOf<T>() => Events.OfType<T>();

    public async Task DisposeAsync()
    {
        if (_second is not null) await _second.DisposeAsync();
        if (_factory is not null) await _factory.DisposeAsync();
        if (_vhost is not null) await _vhost.DisposeAsync();
        if (_db is not null) await _db.DisposeAsync();
    }

    /// <summary>Registers a node through the bus, as Listings would, and waits until Scheduling has its copy.</summary>
    public async Task<NodeRegistered> RegisterNodeAsync(Guid provider, int slots, string model = Model,
        Guid? cluster = null, string? nvlinkDomain = null, string? fabric = null)
    {
        var node = new NodeRegistered(Guid.NewGuid(), cluster ?? Guid.NewGuid(), provider, "cn-east", "CN", model,
            Enumerable.Range(0, slots).Select(i => new GpuSlotInfo(Guid.NewGuid(), i)).ToList(), Clock.GetUtcNow())
        {
            NvlinkDomain = nvlinkDomain,
            Fabric = fabric,
            FabricGbps = fabric is null ? 0 : 400,
        };
        await Bus.PublishAsync(node);
        await Eventually.True(async () => await ScalarAsync<long>(
            "SELECT count(*) FROM scheduling.gpu_slots WHERE node_id = @NodeId", new { node.NodeId }) == slots, what: "the node copy");
        return node;
    }

    public OrderMatched Match(Guid renter, Guid provider, IEnumerable<Guid> nodes, int count, DateTimeOffset start, DateTimeOffset end,
        string model = Model) =>
        new(Guid.NewGuid(), Guid.NewGuid(), renter, Guid.NewGuid(), provider, nodes.ToList(), model, count, start, end,
            new Money(235, "CNY"), "on_demand", Clock.GetUtcNow());

    /// <summary>Publishes a match and waits for Scheduling's answer (LeaseScheduled or PlacementFailed).</summary>
    public async Task<object> PlaceAsync(OrderMatched match)
    {
        await Bus.PublishAsync(match);
        return await OutcomeAsync(match.MatchId);
    }

    public Task<object> OutcomeAsync(Guid matchId) =>
        Eventually.Get(() => Task.FromResult(Events.FirstOrDefault(e =>
            e is LeaseScheduled s && s.MatchId == matchId || e is PlacementFailed f && f.MatchId == matchId)), _ => true,
            what: $"the placement outcome of match {matchId}");

    public async Task<LeaseScheduled> ScheduleAsync(OrderMatched match) =>
        Assert.IsType<LeaseScheduled>(await PlaceAsync(match));

    public async Task<T> ScalarAsync<T>(string sql, object? args = null)
    {
        await using var c = Database.OpenAdmin();
        return await c.ExecuteScalarAsync<T>(sql, args) ?? throw new InvalidOperationException("no value: " + sql);
    }

    /// <summary>The first recorded event of type <typeparamref name="T"/> that matches, waiting for it to arrive.</summary>
    public Task<T> EventAsync<T>(Func<T, bool> match, string? what = null) =>
        Eventually.Get(() => Task.FromResult(Events.OfType<T>().FirstOrDefault(match)), _ => true, what: what ?? typeof(T).Name);

    /// <summary>Publishes a message as another service would and waits until Scheduling consumed it.</summary>
    public async Task PublishAndWaitAsync<T>(T message) where T : class
    {
        var id = await Bus.PublishAsync(message);
        await Eventually.True(() => Task.FromResult(Consumed.Of(id) > 0), what: $"{typeof(T).Name} to be consumed");
    }

    public async Task<string> StatusAsync(Guid leaseId) =>
        await ScalarAsync<string>("SELECT status FROM scheduling.leases WHERE id = @leaseId", new { leaseId });

    /// <summary>Pairs of bookings of one slot whose time ranges overlap: must always be zero.</summary>
    public Task<long> OverlappingBookingsAsync() => ScalarAsync<long>("""
        SELECT count(*) FROM scheduling.bookings a
        JOIN scheduling.bookings b ON a.slot_id = b.slot_id AND a.lease_id < b.lease_id AND a.during && b.during
        """);

    /// <summary>A connection as the service's own login, for running the service's own SQL directly.</summary>
    public async Task<NpgsqlConnection> OpenServiceConnectionAsync()
    {
        // Not pooled: a test may hold more of these open at once (twenty transactions at one start line) than a
        // service's pool allows.
        var csb = new NpgsqlConnectionStringBuilder(Database.ConnectionString("scheduling")) { SearchPath = "scheduling,public", Pooling = false };
        var c = new NpgsqlConnection(csb.ConnectionString);
        await c.OpenAsync();
        return c;
    }

    /// <summary>Moves the clock and runs the due work until <paramref name="done"/> holds (the background runner may take an item first).</summary>
    public async Task AdvanceAndRunAsync(TimeSpan by, Func<Task<bool>> done)
    {
        Clock.Advance(by);
        await Eventually.True(async () =>
        {
            await DueWork.RunDueAsync(CancellationToken.None);
            return await done();
        }, what: "the due work to run");
    }
}

/// <summary>Counts messages the service finished consuming, by message id (redeliveries included).</summary>
public sealed class ConsumeCounter : IConsumeObserver
{
    private readonly ConcurrentDictionary<Guid, int> _counts = new();

    public int Of(Guid messageId) => _counts.GetValueOrDefault(messageId);

    public Task PreConsume<T>(ConsumeContext<T> context) where T : class => Task.CompletedTask;

    public Task PostConsume<T>(ConsumeContext<T> context) where T : class
    {
        if (context.MessageId is { } id) _counts.AddOrUpdate(id, 1, (_, n) => n + 1);
        return Task.CompletedTask;
    }

    public Task ConsumeFault<T>(ConsumeContext<T> context, Exception exception) where T : class => Task.CompletedTask;
}
