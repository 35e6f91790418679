using Dapper;
using Marketplace.ServiceDefaults.Data;
using Microsoft.Extensions.DependencyInjection;
using Npgsql;
using Xunit;

namespace Marketplace.ServiceDefaults.Tests;

/// <summary><see cref="Db.RunAsync"/>: a transaction PostgreSQL aborts as a deadlock victim runs again, in a new transaction.</summary>
public sealed class DbRunTests : ServersPerTest
{
    [Fact]
    public async Task Two_transactions_that_deadlock_both_commit_their_effect_once()
    {
        await using var app = ProbeHost.Build(_db, _vhost);
        var db = app.Services.GetRequiredService<Db>();
        var bothHoldTheirFirstLock = new Barrier(2);
        var attempts = new int[2];

        // Each takes one advisory lock, waits (on its first attempt) until the other holds its own, then takes the other's.
        Task<int> Run(int me) => db.RunAsync(async tx =>
        {
            var attempt = Interlocked.Increment(ref attempts[me]);
            await tx.Connection.ExecuteAsync("SELECT pg_advisory_xact_lock(@k)", new { k = 1 + me });
            if (attempt == 1) await Task.Run(() => bothHoldTheirFirstLock.SignalAndWait(TimeSpan.FromSeconds(30)));
            await tx.Connection.ExecuteAsync("SELECT pg_advisory_xact_lock(@k)", new { k = 2 - me });
            await tx.Connection.ExecuteAsync("INSERT INTO probe_effects (key) VALUES (@key)", new { key = $"run-{me}" });
            await tx.CommitAsync(CancellationToken.None);
            return attempt;
        }, CancellationToken.None);

        var runs = await Task.WhenAll(Run(0), Run(1));

        Assert.Equal([1, 2], runs.Order()); // PostgreSQL aborted one of them once
        await using var admin = _db.OpenAdmin();
        Assert.Equal(["run-0", "run-1"], await admin.QueryAsync<string>("SELECT key FROM listings.probe_effects ORDER BY key"));
    }

    [Fact]
    public async Task A_transaction_that_keeps_deadlocking_fails_after_three_attempts_and_writes_nothing()
    {
        await using var app = ProbeHost.Build(_db, _vhost);
        var db = app.Services.GetRequiredService<Db>();
        var attempts = 0;

        var e = await Assert.ThrowsAsync<PostgresException>(() => db.RunAsync<int>(async tx =>
        {
            attempts++;
            await tx.Connection.ExecuteAsync("INSERT INTO probe_effects (key) VALUES ('victim')");
            await tx.Connection.ExecuteAsync("DO $$ BEGIN RAISE EXCEPTION 'deadlock detected' USING ERRCODE = 'deadlock_detected'; END $$");
            return attempts;
        }, CancellationToken.None));

        Assert.Equal((PostgresErrorCodes.DeadlockDetected, Db.TransactionAttempts), (e.SqlState, attempts));
        await using var admin = _db.OpenAdmin();
        Assert.Equal(0, await admin.ExecuteScalarAsync<long>("SELECT count(*) FROM listings.probe_effects"));
    }

    [Fact]
    public async Task Any_other_failure_is_not_run_again()
    {
        await using var app = ProbeHost.Build(_db, _vhost);
        var db = app.Services.GetRequiredService<Db>();
        var attempts = 0;

        await Assert.ThrowsAsync<PostgresException>(() => db.RunAsync<int>(async tx =>
        {
            attempts++;
            return await tx.Connection.ExecuteAsync("INSERT INTO probe_effects (key) VALUES (NULL)");
        }, CancellationToken.None));

        Assert.Equal(1, attempts);
    }
}
