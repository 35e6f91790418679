using System.Collections.Concurrent;
using System.Net;
using System.Net.Http.Json;
using System.Text.Json;
using Dapper;
using Marketplace.Contracts;
using Marketplace.Testing;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using Npgsql;
using Xunit;

namespace Marketplace.Scheduling.Tests;

/// <summary>Scheduling with its background due-work runner off (the tests run each item at the moment they choose), logging into a list.</summary>
public sealed class ManualDueWorkFixture : SchedulingFixture
{
    public LoggedExceptions Logged { get; } = new();

    protected override IDictionary<string, string?>? Settings => new Dictionary<string, string?> { ["DueWork:Workers"] = "0" };

    protected override void ConfigureServices(IServiceCollection services) => services.AddSingleton<ILoggerProvider>(Logged);
}

/// <summary>
/// A renter's request on a lease racing the due work of the same lease (docs/reliability.md, known issue 15). The request
/// locks the lease and then changes the lease's due_work rows; the runner claims a due_work row and then locks the lease.
/// Each test makes them meet in the worst order: the request first in line for the lease, the runner holding its item.
/// Before the fix PostgreSQL broke the circle after a second by failing one of them with 40P01 (the request answered 503).
/// </summary>
public sealed class DueWorkLockOrderTests(ManualDueWorkFixture f) : IClassFixture<ManualDueWorkFixture>
{
    [Fact]
    public async Task A_cancel_racing_the_lease_s_activation_cancels_it_without_a_deadlock()
    {
        var (lease, match) = await LeaseAsync();
        var renter = f.Factory.ClientFor(match.RenterOrgId, "renter");

        // At the start lease.activate is due.
        var cancel = await RaceAsync(lease.LeaseId, () => renter.PostAsync($"/v1/leases/{lease.LeaseId}/cancel", null), TimeSpan.FromMinutes(1));

        Assert.Equal(HttpStatusCode.OK, cancel.StatusCode);
        var json = await cancel.Content.ReadFromJsonAsync<JsonElement>();
        Assert.Equal("cancelled", json.GetProperty("status").GetString());
        Assert.Equal("cancelled by the renter before it started", json.GetProperty("status_reason").GetString());
        AssertNoDeadlock();
        var activate = await DueItemAsync("lease.activate", lease.LeaseId);
        Assert.Equal(("cancelled", 0, true), (activate.LastError, activate.Attempts, activate.DoneAt is not null));

        // Later due work changes nothing: the lease ended once, never started.
        f.Clock.Advance(TimeSpan.FromMinutes(5));
        await f.DueWork.RunDueAsync(CancellationToken.None);
        Assert.Equal("cancelled", await f.StatusAsync(lease.LeaseId));
        var ended = Assert.Single(await EndedAsync(lease.LeaseId));
        Assert.Equal(("cancelled", "renter"), (ended.Status, ended.Cause));
        Assert.DoesNotContain(f.EventsOf<LeaseStarted>(), e => e.LeaseId == lease.LeaseId);
    }

    [Fact]
    public async Task An_extension_racing_the_lease_s_completion_moves_its_end_without_a_deadlock()
    {
        var (lease, match) = await LeaseAsync();
        var renter = f.Factory.ClientFor(match.RenterOrgId, "renter");
        await f.AdvanceAndRunAsync(TimeSpan.FromMinutes(1), async () => await f.StatusAsync(lease.LeaseId) == "active");
        var newEnd = match.End.AddHours(1);

        // At the end lease.complete is due.
        var extend = await RaceAsync(lease.LeaseId,
            () => renter.PostAsJsonAsync($"/v1/leases/{lease.LeaseId}/extend", new { end = newEnd }), TimeSpan.FromMinutes(1));

        Assert.Equal(HttpStatusCode.OK, extend.StatusCode);
        var json = await extend.Content.ReadFromJsonAsync<JsonElement>();
        Assert.Equal(("active", newEnd), (json.GetProperty("status").GetString(), json.GetProperty("end").GetDateTimeOffset()));
        AssertNoDeadlock();
        var complete = await DueItemAsync("lease.complete", lease.LeaseId);
        Assert.Equal((newEnd.UtcDateTime, (DateTime?)null, 0), (complete.DueAt, complete.DoneAt, complete.Attempts));

        // The lease runs to its new end and completes there, once.
        f.Clock.Advance(TimeSpan.FromMinutes(30));
        await f.DueWork.RunDueAsync(CancellationToken.None);
        Assert.Equal("active", await f.StatusAsync(lease.LeaseId));
        await f.AdvanceAndRunAsync(TimeSpan.FromMinutes(30), async () => await f.StatusAsync(lease.LeaseId) == "completed");
        Assert.Equal(newEnd.UtcDateTime, await f.ScalarAsync<DateTime>("SELECT ended_at FROM scheduling.leases WHERE id = @LeaseId", lease));
        var ended = Assert.Single(await EndedAsync(lease.LeaseId));
        Assert.Equal(("completed", newEnd), (ended.Status, ended.At));
    }

    [Fact]
    public async Task An_activation_that_found_its_lease_locked_runs_once_the_lock_is_gone()
    {
        var (lease, match) = await LeaseAsync();
        var renter = f.Factory.ClientFor(match.RenterOrgId, "renter");
        const string key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOlockorder renter@example";

        // A change of the SSH key holds the lease while lease.activate comes due; it touches no due work.
        var patch = await RaceAsync(lease.LeaseId,
            () => renter.PatchAsJsonAsync($"/v1/leases/{lease.LeaseId}", new { ssh_public_key = key }), TimeSpan.FromMinutes(1));

        Assert.Equal(HttpStatusCode.OK, patch.StatusCode);
        await f.AdvanceAndRunAsync(TimeSpan.Zero, async () => await f.StatusAsync(lease.LeaseId) == "active");
        Assert.Equal(match.Start.UtcDateTime, await f.ScalarAsync<DateTime>("SELECT started_at FROM scheduling.leases WHERE id = @LeaseId", lease));
        var activate = await DueItemAsync("lease.activate", lease.LeaseId);
        Assert.Equal((1, (string?)null), (activate.Attempts, activate.LastError));
        Assert.Single(await StartedAsync(lease.LeaseId));
        AssertNoDeadlock();
    }

    private async Task<(LeaseScheduled Lease, OrderMatched Match)> LeaseAsync()
    {
        var provider = Guid.NewGuid();
        var node = await f.RegisterNodeAsync(provider, slots: 1);
        var start = f.Clock.GetUtcNow().AddMinutes(1);
        var match = f.Match(Guid.NewGuid(), provider, [node.NodeId], 1, start, start.AddMinutes(1));
        return (await f.ScheduleAsync(match), match);
    }

    /// <summary>
    /// Holds the lease's row lock while <paramref name="request"/> queues behind it and the clock makes an item of the lease
    /// due and the runner claims it; then lets go. Returns the request's answer once the runner's attempt has ended too.
    /// </summary>
    private async Task<HttpResponseMessage> RaceAsync(Guid leaseId, Func<Task<HttpResponseMessage>> request, TimeSpan dueIn)
    {
        Assert.Equal(0, await LockWaitsAsync());
        f.Logged.Clear();
        await using var holder = await f.OpenServiceConnectionAsync();
        await using var hold = await holder.BeginTransactionAsync();
        await holder.ExecuteAsync("SELECT 1 FROM leases WHERE id = @leaseId FOR UPDATE", new { leaseId }, hold);

        var answer = request();
        await Eventually.True(async () => await LockWaitsAsync() == 1, what: "the request to wait for the lease");
        f.Clock.Advance(dueIn);
        var run = f.DueWork.RunOneAsync(CancellationToken.None);
        // Without the fix the runner waits for the lease too, holding its item; with it, it leaves the locked lease alone.
        await Eventually.True(async () => run.IsCompleted || await LockWaitsAsync() == 2, what: "the runner to claim the due item");
        await hold.CommitAsync();

        var response = await answer;
        Assert.True(await run, "the runner claimed the due item");
        return response;
    }

    private void AssertNoDeadlock() =>
        Assert.DoesNotContain(f.Logged.All, e => IsDeadlock(e.Exception));

    private static bool IsDeadlock(Exception e) =>
        e is PostgresException { SqlState: PostgresErrorCodes.DeadlockDetected } || e.InnerException is { } inner && IsDeadlock(inner);

    private Task<long> LockWaitsAsync() => f.ScalarAsync<long>(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'");

    private async Task<DueRow> DueItemAsync(string kind, Guid leaseId)
    {
        await using var c = f.Database.OpenAdmin();
        return await c.QuerySingleAsync<DueRow>(
            "SELECT due_at, done_at, attempts, last_error FROM scheduling.due_work WHERE kind = @kind AND key = @key",
            new { kind, key = leaseId.ToString() });
    }

    private Task<List<LeaseEnded>> EndedAsync(Guid leaseId) => EventsOfAsync<LeaseEnded>(e => e.LeaseId == leaseId);

    private Task<List<LeaseStarted>> StartedAsync(Guid leaseId) => EventsOfAsync<LeaseStarted>(e => e.LeaseId == leaseId);

    /// <summary>The matching events, once one arrived and the outbox has nothing left to send.</summary>
    private async Task<List<T>> EventsOfAsync<T>(Func<T, bool> match)
    {
        await f.EventAsync(match);
        await Eventually.True(async () => await f.ScalarAsync<long>("SELECT count(*) FROM scheduling.outbox") == 0, what: "the outbox to drain");
        return f.EventsOf<T>().Where(match).ToList();
    }

    private sealed record DueRow(DateTime DueAt, DateTime? DoneAt, int Attempts, string? LastError);
}

/// <summary>Every exception the service logged at warning or above, with the logger's category.</summary>
public sealed class LoggedExceptions : ILoggerProvider
{
    private readonly ConcurrentQueue<(string Category, Exception Exception)> _logged = new();

    public IReadOnlyCollection<(string Category, Exception Exception)> All => _logged;

    public void Clear() => _logged.Clear();

    public ILogger CreateLogger(string categoryName) => new Logger(categoryName, _logged);

    public void Dispose() { }

    private sealed class Logger(string category, ConcurrentQueue<(string, Exception)> logged) : ILogger
    {
        public IDisposable? BeginScope<TState>(TState state) where TState : notnull => null;

        public bool IsEnabled(LogLevel logLevel) => logLevel >= LogLevel.Warning;

        public void Log<TState>(LogLevel logLevel, EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter)
        {
            if (IsEnabled(logLevel) && exception is not null) logged.Enqueue((category, exception));
        }
    }
}
