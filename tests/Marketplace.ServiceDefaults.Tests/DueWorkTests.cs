using Xunit;
using Dapper;
using Marketplace.ServiceDefaults.Data;
using Marketplace.ServiceDefaults.Messaging;
using Marketplace.Testing;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging.Abstractions;
using Microsoft.Extensions.Options;
using Microsoft.Extensions.Time.Testing;

namespace Marketplace.ServiceDefaults.Tests;

/// <summary>Work due at a time, on the real PostgreSQL, under a controlled clock.</summary>
public sealed class DueWorkTests : IAsyncLifetime
{
    private static readonly DateTimeOffset T0 = new(2026, 11, 29, 10, 0, 0, TimeSpan.Zero);
    private TestDatabase _db = null!;
    private TestVirtualHost _vhost = null!;
    private readonly FakeTimeProvider _time = new(T0);

    public async Task InitializeAsync()
    {
        _db = await TestDatabase.CreateAsync();
        _vhost = await TestVirtualHost.CreateAsync();
    }

    public async Task DisposeAsync()
    {
        await _vhost.DisposeAsync();
        await _db.DisposeAsync();
    }

    private static async Task ScheduleAsync(IServiceProvider services, int count, DateTimeOffset at)
    {
        var db = services.GetRequiredService<Db>();
        await using var tx = await db.BeginAsync(CancellationToken.None);
        for (var i = 0; i < count; i++) await tx.ScheduleAsync("probe", $"lease-{i}", at, CancellationToken.None);
        await tx.CommitAsync(CancellationToken.None);
    }

    private async Task<long> EffectsAsync()
    {
        await using var c = _db.OpenAdmin();
        return await c.ExecuteScalarAsync<long>("SELECT count(*) FROM listings.probe_effects");
    }

    [Fact]
    public async Task Work_runs_at_its_time_and_not_before()
    {
        await using var app = ProbeHost.Build(_db, _vhost, _time);
        var runner = app.Services.GetRequiredService<DueWorkRunner>();
        await ScheduleAsync(app.Services, 3, T0.AddMinutes(10));

        Assert.Equal(0, await runner.RunDueAsync(CancellationToken.None));
        _time.Advance(TimeSpan.FromMinutes(9));
        Assert.Equal(0, await runner.RunDueAsync(CancellationToken.None));
        _time.Advance(TimeSpan.FromMinutes(1));
        Assert.Equal(3, await runner.RunDueAsync(CancellationToken.None));
        Assert.Equal(3, await EffectsAsync());
        Assert.Equal(0, await runner.RunDueAsync(CancellationToken.None));
    }

    [Fact]
    public async Task Two_instances_polling_at_once_run_each_item_exactly_once()
    {
        await using var one = ProbeHost.Build(_db, _vhost, _time);
        await using var two = ProbeHost.Build(_db, _vhost, _time);
        await ScheduleAsync(one.Services, 100, T0);

        var runs = await Task.WhenAll(
            one.Services.GetRequiredService<DueWorkRunner>().RunDueAsync(CancellationToken.None),
            two.Services.GetRequiredService<DueWorkRunner>().RunDueAsync(CancellationToken.None));

        Assert.Equal(100, runs.Sum());
        Assert.Equal(100, await EffectsAsync());
        await using var c = _db.OpenAdmin();
        Assert.Equal(100, await c.ExecuteScalarAsync<long>("SELECT count(DISTINCT key) FROM listings.probe_effects"));
    }

    [Fact]
    public async Task One_instance_runs_several_due_items_at_once_and_each_once()
    {
        await using var app = ProbeHost.Build(_db, _vhost, _time);
        var workers = app.Services.GetRequiredService<IOptions<DueWorkOptions>>().Value.Workers;
        Assert.True(workers > 1, "one worker: a backlog of due work runs one item at a time");
        var handler = app.Services.GetRequiredService<ProbeDueHandler>();
        handler.WaitForInFlight = workers;
        await ScheduleAsync(app.Services, workers * 2, T0);

        await app.StartAsync();
        // One item at a time, each would wait 20 s for the others: this would take minutes.
        await Eventually.True(async () => await EffectsAsync() == workers * 2, TimeSpan.FromSeconds(60), "every due item to run");
        await app.StopAsync();

        Assert.Equal(workers, handler.MaxInFlight);
        await using var c = _db.OpenAdmin();
        Assert.Equal(workers * 2, await c.ExecuteScalarAsync<long>("SELECT count(DISTINCT key) FROM listings.probe_effects"));
    }

    [Fact]
    public async Task An_idle_instance_rests_all_workers_but_one_and_overdue_work_committed_wakes_them_all_without_waiting_for_a_poll()
    {
        // Ten minutes between looks at the table: only the wake-ups can run this work within the test's minute.
        var quiet = new Dictionary<string, string?> { ["DueWork:PollInterval"] = "00:10:00", ["DueWork:RestInterval"] = "00:10:00" };
        await using var app = ProbeHost.Build(_db, _vhost, _time, settings: quiet);
        var runner = app.Services.GetRequiredService<DueWorkRunner>();
        var workers = app.Services.GetRequiredService<IOptions<DueWorkOptions>>().Value.Workers;
        var handler = app.Services.GetRequiredService<ProbeDueHandler>();
        handler.WaitForInFlight = workers;

        await app.StartAsync();
        await Eventually.True(() => Task.FromResult(runner.RestingWorkers == workers - 1), TimeSpan.FromSeconds(30),
            "every worker but the watching one to rest");
        // Work an hour overdue, as after an outage: the commit wakes the watch, and a worker that claims an item a poll
        // interval or more late wakes a resting one, which does the same.
        await ScheduleAsync(app.Services, workers * 2, T0.AddHours(-1));
        await Eventually.True(async () => await EffectsAsync() == workers * 2, TimeSpan.FromSeconds(60), "every due item to run");
        await app.StopAsync();

        Assert.Equal(workers, handler.MaxInFlight);
    }

    [Theory]
    [InlineData("DueWork:PollInterval", "00:00:00")]
    [InlineData("DueWork:RestInterval", "-00:00:01")]
    public async Task A_service_with_a_due_work_interval_of_nothing_or_less_refuses_to_start_and_says_which_setting(string key, string value)
    {
        await using var app = ProbeHost.Build(_db, _vhost, _time, settings: new Dictionary<string, string?> { [key] = value });

        var refused = await Assert.ThrowsAsync<Microsoft.Extensions.Options.OptionsValidationException>(() => app.StartAsync());
        Assert.Contains(key.Split(':')[1], refused.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Failed_work_is_retried_later_with_its_error_visible()
    {
        await using var app = ProbeHost.Build(_db, _vhost, _time);
        app.Services.GetRequiredService<ProbeDueHandler>().FailuresLeft = 2;
        var runner = app.Services.GetRequiredService<DueWorkRunner>();
        await ScheduleAsync(app.Services, 1, T0);

        // Each failure counts one attempt and waits twice as long as the one before: 2 s, then 4 s.
        var retryAt = T0;
        foreach (var (attempts, backoff) in new[] { (1, 2), (2, 4) })
        {
            _time.SetUtcNow(retryAt);
            Assert.Equal(1, await runner.RunDueAsync(CancellationToken.None));
            Assert.Equal(0, await EffectsAsync());
            await using var c = _db.OpenAdmin();
            var row = await c.QuerySingleAsync<(string? LastError, DateTime DueAt, DateTime? DoneAt, int Attempts)>(
                "SELECT last_error, due_at, done_at, attempts FROM listings.due_work");
            Assert.Equal("the provider's agent did not answer", row.LastError);
            Assert.Null(row.DoneAt);
            Assert.Equal(attempts, row.Attempts);
            retryAt += TimeSpan.FromSeconds(backoff);
            Assert.Equal(retryAt.UtcDateTime, row.DueAt);
        }

        _time.SetUtcNow(retryAt - TimeSpan.FromMilliseconds(1));
        Assert.Equal(0, await runner.RunDueAsync(CancellationToken.None)); // not due before its time
        _time.SetUtcNow(retryAt);
        Assert.Equal(1, await runner.RunDueAsync(CancellationToken.None));
        Assert.Equal(1, await EffectsAsync());
        await using (var c = _db.OpenAdmin())
            Assert.Equal(3, await c.ExecuteScalarAsync<int>("SELECT attempts FROM listings.due_work WHERE done_at IS NOT NULL"));
    }

    [Fact]
    public async Task Rescheduling_moves_the_work_and_cancelling_removes_it()
    {
        await using var app = ProbeHost.Build(_db, _vhost, _time);
        var db = app.Services.GetRequiredService<Db>();
        var runner = app.Services.GetRequiredService<DueWorkRunner>();
        await ScheduleAsync(app.Services, 2, T0.AddMinutes(1));
        await using (var tx = await db.BeginAsync(CancellationToken.None))
        {
            await tx.ScheduleAsync("probe", "lease-0", T0.AddHours(1), CancellationToken.None); // extended
            await tx.CancelScheduledAsync("probe", "lease-1", CancellationToken.None);           // cancelled
            await tx.CommitAsync(CancellationToken.None);
        }

        _time.Advance(TimeSpan.FromMinutes(30));
        Assert.Equal(0, await runner.RunDueAsync(CancellationToken.None));
        _time.Advance(TimeSpan.FromMinutes(31));
        Assert.Equal(1, await runner.RunDueAsync(CancellationToken.None));
        Assert.Equal(1, await EffectsAsync());
    }

    [Fact]
    public async Task Cancelling_several_kinds_at_once_cancels_only_those_kinds_of_that_key()
    {
        await using var app = ProbeHost.Build(_db, _vhost, _time);
        var db = app.Services.GetRequiredService<Db>();
        await using (var tx = await db.BeginAsync(CancellationToken.None))
        {
            foreach (var (kind, key) in new[] { ("probe", "lease-0"), ("other", "lease-0"), ("third", "lease-0"), ("probe", "lease-1") })
                await tx.ScheduleAsync(kind, key, T0.AddMinutes(1), CancellationToken.None);
            await tx.CancelScheduledAsync(["probe", "other"], "lease-0", CancellationToken.None);
            await tx.CommitAsync(CancellationToken.None);
        }

        await using var c = _db.OpenAdmin();
        var pending = (await c.QueryAsync<string>("SELECT kind || '/' || key FROM listings.due_work WHERE done_at IS NULL ORDER BY 1")).ToList();
        var cancelled = (await c.QueryAsync<string>("SELECT kind || '/' || key FROM listings.due_work WHERE last_error = 'cancelled' ORDER BY 1")).ToList();
        Assert.Equal(["probe/lease-1", "third/lease-0"], pending);
        Assert.Equal(["other/lease-0", "probe/lease-0"], cancelled);
    }
}
