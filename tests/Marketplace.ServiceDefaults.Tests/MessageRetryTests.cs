using Dapper;
using MassTransit;
using Marketplace.Contracts;
using Marketplace.ServiceDefaults.Data;
using Marketplace.ServiceDefaults.Messaging;
using Marketplace.Testing;
using Microsoft.AspNetCore.Builder;
using Microsoft.Extensions.DependencyInjection;
using Npgsql;
using Xunit;

namespace Marketplace.ServiceDefaults.Tests;

/// <summary>
/// A consumer's failure is retried by what it is (known issue 12 in docs/reliability.md): a transient database failure
/// for minutes, anything else a few times, then <c>_error</c>. The intervals are shortened here; the counts are the
/// configured ones.
/// </summary>
public sealed class MessageRetryTests : ServersPerTest
{
    private const string Queue = "listings-probe";
    private const string ErrorQueue = Queue + "_error";

    /// <summary>Two quick retries (the default is five), milliseconds apart; transient failures for one second (13 retries).</summary>
    private static Dictionary<string, string?> Settings(string transientFor = "00:00:01") => new()
    {
        ["MessageRetry:Retries"] = "2",
        ["MessageRetry:MinInterval"] = "00:00:00.010",
        ["MessageRetry:IntervalDelta"] = "00:00:00.010",
        ["MessageRetry:MaxInterval"] = "00:00:00.050",
        ["MessageRetry:TransientMaxInterval"] = "00:00:00.100",
        ["MessageRetry:TransientFor"] = transientFor,
    };

    private static OfferWithdrawn Message() => new(Guid.NewGuid(), Guid.NewGuid(), DateTimeOffset.UtcNow);

    // Real failures of the kinds a busy or restarting PostgreSQL gives, each raised inside the consumer's transaction.
    private static Task Deadlock(Tx tx) => tx.Connection.ExecuteAsync("DO $$ BEGIN RAISE EXCEPTION 'deadlock detected' USING ERRCODE = 'deadlock_detected'; END $$");
    private static Task SerializationFailure(Tx tx) => tx.Connection.ExecuteAsync("DO $$ BEGIN RAISE EXCEPTION 'could not serialize' USING ERRCODE = 'serialization_failure'; END $$");
    private static Task ConnectionTerminated(Tx tx) => tx.Connection.ExecuteAsync("SELECT pg_terminate_backend(pg_backend_pid())"); // 57P01, as in a fast shutdown
    private static Task CommandTimeout(Tx tx) => tx.Connection.ExecuteAsync("SELECT pg_sleep(10)", commandTimeout: 1);         // the "Timeout during reading attempt"

    private static async Task ServerUnreachable(Tx tx)
    {
        var builder = new NpgsqlConnectionStringBuilder(tx.Connection.ConnectionString) { Port = 1, Pooling = false, Timeout = 2 };
        await using var down = new NpgsqlConnection(builder.ConnectionString); // as while PostgreSQL restarts: connection refused
        await down.OpenAsync();
    }

    private static readonly Func<Tx, Task>[] TransientKinds = [Deadlock, SerializationFailure, ConnectionTerminated, CommandTimeout, ServerUnreachable];

    private async Task<long> EffectsAsync(Guid key)
    {
        await using var c = _db.OpenAdmin();
        return await c.ExecuteScalarAsync<long>("SELECT count(*) FROM listings.probe_effects WHERE key = @k", new { k = key.ToString() });
    }

    private async Task<long> DepthAsync(string queue) => (await _vhost.QueueDepthsAsync()).GetValueOrDefault(queue);

    private async Task<WebApplication> StartAsync(Dictionary<string, string?> settings)
    {
        var app = ProbeHost.Build(_db, _vhost, settings: settings);
        await app.StartAsync();
        await app.Services.WaitForBusAsync();
        return app;
    }

    [Fact]
    public async Task A_transient_database_failure_is_retried_past_the_quick_retries_and_commits_its_effect_once()
    {
        await using var app = await StartAsync(Settings());
        var message = Message();
        // Ten failures, each kind twice: far more than the two quick retries (and than the five of the old policy).
        app.Services.GetRequiredService<ScriptedFailures>().Add(message.OfferId, 10, (tx, n) => TransientKinds[n % TransientKinds.Length](tx));

        await app.Services.GetRequiredService<IBus>().Publish(message);

        await Eventually.True(async () => await EffectsAsync(message.OfferId) == 1, TimeSpan.FromSeconds(60), "the effect after the failures");
        Assert.Equal(11, app.Services.GetRequiredService<Deliveries>().Count(message.OfferId));
        Assert.Equal(0, await DepthAsync(ErrorQueue));
        await app.StopAsync();
        Assert.Equal(1, await EffectsAsync(message.OfferId));
    }

    [Fact]
    public async Task A_failure_a_retry_cannot_fix_goes_to_error_after_the_quick_retries()
    {
        // Transient failures would be retried for five minutes here: a misjudged failure would not reach _error in time.
        await using var app = await StartAsync(Settings(transientFor: "00:05:00"));
        var failures = app.Services.GetRequiredService<ScriptedFailures>();
        var bug = Message();
        var refused = Message();
        failures.Add(bug.OfferId, int.MaxValue, (_, _) => throw new InvalidOperationException("a bug"));
        failures.Add(refused.OfferId, int.MaxValue, (tx, _) => tx.Connection.ExecuteAsync("INSERT INTO probe_effects (key) VALUES (NULL)")); // 23502

        var bus = app.Services.GetRequiredService<IBus>();
        await bus.Publish(bug);
        await bus.Publish(refused);

        await Eventually.True(async () => await DepthAsync(ErrorQueue) == 2, TimeSpan.FromSeconds(60), "both messages in _error");
        var deliveries = app.Services.GetRequiredService<Deliveries>();
        Assert.Equal(3, deliveries.Count(bug.OfferId)); // the delivery and the two quick retries
        Assert.Equal(3, deliveries.Count(refused.OfferId));
        Assert.Equal(0, await EffectsAsync(bug.OfferId) + await EffectsAsync(refused.OfferId));
        await app.StopAsync();
    }

    [Fact]
    public async Task A_transient_failure_that_does_not_end_goes_to_error_after_the_transient_retries()
    {
        await using var app = await StartAsync(Settings());
        var message = Message();
        app.Services.GetRequiredService<ScriptedFailures>().Add(message.OfferId, int.MaxValue, (tx, _) => Deadlock(tx));

        await app.Services.GetRequiredService<IBus>().Publish(message);

        await Eventually.True(async () => await DepthAsync(ErrorQueue) == 1, TimeSpan.FromSeconds(60), "the message in _error");
        var transientRetries = new MessageRetryOptions { MinInterval = TimeSpan.FromMilliseconds(10), IntervalDelta = TimeSpan.FromMilliseconds(10),
            TransientMaxInterval = TimeSpan.FromMilliseconds(100), TransientFor = TimeSpan.FromSeconds(1) }.TransientIntervals().Length;
        Assert.Equal(13, transientRetries);
        Assert.Equal(1 + transientRetries, app.Services.GetRequiredService<Deliveries>().Count(message.OfferId));
        Assert.Equal(0, await EffectsAsync(message.OfferId));
        await app.StopAsync();
    }

    [Fact]
    public async Task A_service_stopped_while_it_waits_to_retry_leaves_the_message_in_its_queue()
    {
        await using var app = await StartAsync(Settings(transientFor: "00:05:00"));
        var message = Message();
        app.Services.GetRequiredService<ScriptedFailures>().Add(message.OfferId, int.MaxValue, (tx, _) => Deadlock(tx));
        var deliveries = app.Services.GetRequiredService<Deliveries>();

        await app.Services.GetRequiredService<IBus>().Publish(message);
        await Eventually.True(() => Task.FromResult(deliveries.Count(message.OfferId) >= 4), TimeSpan.FromSeconds(30), "a few retries");

        // MassTransit cancels the wait for the next retry when the endpoint stops (so stopping does not take the five
        // minutes of retries) and returns the message to its queue rather than to _error.
        await app.StopAsync(new CancellationTokenSource(TimeSpan.FromSeconds(60)).Token);

        Assert.Equal(0, await DepthAsync(ErrorQueue));
        await Eventually.True(async () => await DepthAsync(Queue) == 1, what: "the message back in its queue");
    }

    [Fact]
    public void By_default_a_failure_gets_five_quick_retries_and_a_transient_one_about_five_minutes_of_them()
    {
        var options = new MessageRetryOptions();
        Assert.Equal([300, 500, 900, 1700, 3300], options.QuickIntervals().Select(i => i.TotalMilliseconds));
        var transient = options.TransientIntervals();
        Assert.Equal(13, transient.Length);
        Assert.Equal(TimeSpan.FromSeconds(60), transient[^1]);
        Assert.Equal(TimeSpan.FromSeconds(343.1), transient.Aggregate(TimeSpan.Zero, (a, b) => a + b));
    }

    [Fact]
    public void Timeouts_and_Npgsql_s_transient_errors_are_transient_at_any_depth_other_failures_are_not()
    {
        Assert.True(TransientFailures.Is(new TimeoutException("Timeout during reading attempt")));
        Assert.True(TransientFailures.Is(new NpgsqlException("Exception while reading from stream", new TimeoutException())));
        Assert.True(TransientFailures.Is(new NpgsqlException("Failed to connect", new System.Net.Sockets.SocketException(111))));
        Assert.True(TransientFailures.Is(new AggregateException(new InvalidOperationException("wrapped", new TimeoutException()))));
        Assert.False(TransientFailures.Is(new InvalidOperationException("a bug")));
        Assert.False(TransientFailures.Is(new NpgsqlException("not transient")));
        Assert.False(TransientFailures.Is(new System.Text.Json.JsonException("a poison message")));
    }
}
