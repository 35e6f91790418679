using Dapper;
using Marketplace.Testing;
using Xunit;

namespace Marketplace.ServiceDefaults.Tests;

/// <summary>A service's start migrates its schema on the real PostgreSQL.</summary>
public sealed class MigrationTests : ServersPerTest
{
    [Fact]
    public async Task Migrating_a_fresh_database_runs_no_statement_that_fails()
    {
        // Every failed statement is an ERROR in PostgreSQL's log and a rolled-back transaction of its database: an
        // operator reading the log after each start of each service would chase errors that are not there.
        await using (var app = ProbeHost.Build(_db, _vhost)) { } // migrates; its connection is closed for good

        await using var admin = _db.OpenAdmin();
        // A backend adds its transactions to the database's counters when it exits: wait until the migration's has.
        await Eventually.True(async () => await admin.ExecuteScalarAsync<long>(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()") == 0,
            what: "the migration's connection to close");
        await admin.ExecuteAsync("SELECT pg_stat_clear_snapshot()");
        var (commits, rollbacks) = await admin.QuerySingleAsync<(long, long)>(
            "SELECT xact_commit, xact_rollback FROM pg_stat_database WHERE datname = current_database()");

        Assert.True(commits > 0, "the migration's transactions are counted");
        Assert.Equal(0, rollbacks);
        Assert.True(await admin.ExecuteScalarAsync<bool>("SELECT to_regclass('listings.probe_effects') IS NOT NULL"), "the probe's migration ran");
    }
}
