using Xunit;
using System.Collections.Concurrent;
using Dapper;
using MassTransit;
using Marketplace.Contracts;
using Marketplace.ServiceDefaults.Data;
using Marketplace.ServiceDefaults.Hosting;
using Marketplace.ServiceDefaults.Messaging;
using Marketplace.Testing;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;

namespace Marketplace.ServiceDefaults.Tests;

/// <summary>
/// Counts every delivery; applies its effect once per message through the inbox (<see cref="Tx.FirstDeliveryWithAsync"/>);
/// fails as scripted after writing the effect and the inbox mark (the failed attempt's transaction rolls both back).
/// </summary>
public sealed class ProbeConsumer(Db db, Deliveries deliveries, ScriptedFailures failures) : IConsumer<OfferWithdrawn>
{
    public async Task Consume(ConsumeContext<OfferWithdrawn> context)
    {
        deliveries.Add(context.Message.OfferId);
        try
        {
            await using var tx = await db.BeginAsync(context.CancellationToken);
            // The effect goes in with the inbox mark, in one round trip: a redelivery's copy of it must be rolled back.
            await using (var read = await tx.FirstDeliveryWithAsync(context, "probe", "INSERT INTO probe_effects (key) VALUES (@key)",
                             new { key = context.Message.OfferId.ToString() }))
                if (read is null) return;
            await failures.RunAsync(context.Message.OfferId, tx);
            await tx.CommitAsync(context.CancellationToken);
        }
        finally
        {
            deliveries.Finish(context.Message.OfferId); // committed or rolled back by now
        }
    }
}

/// <summary>Failures the probe consumer runs for a message: the first <c>times</c> deliveries of it fail.</summary>
public sealed class ScriptedFailures
{
    private readonly ConcurrentDictionary<Guid, (int Times, Func<Tx, int, Task> Fail)> _scripts = new();
    private readonly ConcurrentDictionary<Guid, int> _runs = new();

    /// <param name="fail">Given the transaction and the failure's number (0, 1, …); must throw.</param>
    public void Add(Guid key, int times, Func<Tx, int, Task> fail) => _scripts[key] = (times, fail);

    public async Task RunAsync(Guid key, Tx tx)
    {
        if (!_scripts.TryGetValue(key, out var script)) return;
        var n = _runs.AddOrUpdate(key, 0, (_, runs) => runs + 1);
        if (n >= script.Times) return;
        await script.Fail(tx, n);
        throw new InvalidOperationException("the scripted failure did not fail");
    }
}

public sealed class Deliveries
{
    private readonly ConcurrentBag<Guid> _seen = [];
    private readonly ConcurrentBag<Guid> _finished = [];
    public void Add(Guid id) => _seen.Add(id);
    public void Finish(Guid id) => _finished.Add(id);
    public int Count(Guid id) => _seen.Count(x => x == id);
    /// <summary>Deliveries whose transaction is over (committed, or rolled back).</summary>
    public int Finished(Guid id) => _finished.Count(x => x == id);
    public int Total => _seen.Count;
}

/// <summary>
/// Due work that records its key; fails while <see cref="FailuresLeft"/> is positive; when <see cref="WaitForInFlight"/>
/// is set, each run waits (at most 20 s) until that many runs are in flight at once.
/// </summary>
public sealed class ProbeDueHandler : IDueWorkHandler
{
    public int FailuresLeft;
    public int WaitForInFlight;
    private int _inFlight;
    private int _maxInFlight;
    private readonly TaskCompletionSource _allInFlight = new(TaskCreationOptions.RunContinuationsAsynchronously);
    public string Kind => "probe";
    public int MaxInFlight => Volatile.Read(ref _maxInFlight);

    public async Task HandleAsync(DueItem item, Tx tx, CancellationToken ct)
    {
        if (Interlocked.Decrement(ref FailuresLeft) >= 0) throw new InvalidOperationException("the provider's agent did not answer");
        if (WaitForInFlight > 0)
        {
            var now = Interlocked.Increment(ref _inFlight);
            lock (_allInFlight) _maxInFlight = Math.Max(_maxInFlight, now);
            if (now >= WaitForInFlight) _allInFlight.TrySetResult();
            try { await _allInFlight.Task.WaitAsync(TimeSpan.FromSeconds(20), ct); }
            catch (TimeoutException) { }
            finally { Interlocked.Decrement(ref _inFlight); }
        }
        await tx.Connection.ExecuteAsync("INSERT INTO probe_effects (key) VALUES (@Key)", new { item.Key });
    }
}

/// <summary>A service host built from the shared defaults, on the real servers, with the probe consumer.</summary>
public static class ProbeHost
{
    /// <summary>Writes <paramref name="message"/> to the probe service's outbox, as a committed state change would.</summary>
    public static async Task WriteToOutboxAsync(IServiceProvider services, OfferWithdrawn message)
    {
        var db = services.GetRequiredService<Db>();
        await using var tx = await db.BeginAsync(CancellationToken.None);
        await tx.PublishAsync(message, CancellationToken.None);
        await tx.CommitAsync(CancellationToken.None);
    }

    /// <summary>How many effects the probe consumer applied for <paramref name="key"/> (1 once its message was consumed).</summary>
    public static async Task<long> EffectsAsync(TestDatabase db, Guid key)
    {
        await using var c = db.OpenAdmin();
        return await c.ExecuteScalarAsync<long>("SELECT count(*) FROM listings.probe_effects WHERE key = @k", new { k = key.ToString() });
    }

    public static WebApplication Build(TestDatabase db, TestVirtualHost vhost, TimeProvider? time = null, int? rabbitPort = null,
        string connectionStringSuffix = "", IReadOnlyDictionary<string, string?>? settings = null)
    {
        var builder = WebApplication.CreateBuilder(new WebApplicationOptions { EnvironmentName = "Testing" });
        builder.WebHost.UseUrls("http://127.0.0.1:0");
        builder.Configuration.AddInMemoryCollection(new Dictionary<string, string?>
        {
            ["ConnectionStrings:Postgres"] = db.ConnectionString("listings") + connectionStringSuffix,
            ["RabbitMq:Port"] = (rabbitPort ?? TestServers.RabbitPort).ToString(),
            ["RabbitMq:VirtualHost"] = vhost.Name,
            ["RabbitMq:Username"] = TestServers.RabbitUser,
            ["RabbitMq:Password"] = TestServers.RabbitPassword,
            ["Outbox:PollInterval"] = "00:00:00.100",
            ["Logging:LogLevel:Default"] = "Warning",
        });
        if (settings is not null) builder.Configuration.AddInMemoryCollection(settings);
        if (time is not null) builder.Services.AddSingleton(time);
        builder.Services.AddSingleton<Deliveries>();
        builder.Services.AddSingleton<ScriptedFailures>();
        builder.Services.AddSingleton<ProbeDueHandler>();
        builder.Services.AddSingleton<IDueWorkHandler>(sp => sp.GetRequiredService<ProbeDueHandler>());
        builder.AddServiceDefaults("listings", bus => bus.AddConsumer<ProbeConsumer>());
        var app = builder.Build();
        app.Services.MigrateDatabase(typeof(ProbeHost).Assembly);
        return app;
    }
}
