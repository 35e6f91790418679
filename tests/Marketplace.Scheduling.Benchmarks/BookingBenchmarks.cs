using BenchmarkDotNet.Attributes;
using Dapper;
using Marketplace.Scheduling.Leases;
using Marketplace.ServiceDefaults.Data;
using Marketplace.Testing;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using Npgsql;

namespace Marketplace.Scheduling.Benchmarks;

/// <summary>
/// Booking commits per second on the real PostgreSQL (127.0.0.1:55432, fsync on): one transaction = a lease row and its
/// 8 bookings, committed. <see cref="WithExclusionConstraint"/> runs Scheduling's own SQL (<see cref="Booking.InsertAsync"/>)
/// against the real schema; <see cref="PlainInserts"/> runs the very same SQL against copies of the tables without the
/// exclusion constraint (same columns, indexes and foreign keys otherwise). Each transaction books the same 8 GPUs for
/// the next hour, so the constraint checks every commit against a growing history of that node.
/// </summary>
[Config(typeof(ShortInProcess))]
public class BookingBenchmarks
{
    private TestDatabase? _db;
    private NpgsqlDataSource? _real;
    private NpgsqlDataSource? _plain;
    private Guid[] _slots = [];
    private long _hour;
    private static readonly DateTimeOffset T0 = new(2031, 1, 1, 0, 0, 0, TimeSpan.Zero);

    [GlobalSetup]
    public void Setup() => SetupAsync().GetAwaiter().GetResult();

    private async Task SetupAsync()
    {
        _db = await TestDatabase.CreateAsync();
        var connectionString = _db.ConnectionString("scheduling");
        var services = new ServiceCollection()
            .AddLogging(l => l.SetMinimumLevel(LogLevel.Warning))
            .AddSingleton(new ServiceSchema("scheduling"))
            .AddSingleton(_ => NpgsqlDataSource.Create(new NpgsqlConnectionStringBuilder(connectionString) { SearchPath = "scheduling,public" }.ConnectionString))
            .BuildServiceProvider();
        services.MigrateDatabase(typeof(Booking).Assembly);
        DefaultTypeMap.MatchNamesWithUnderscores = true;

        await using (var admin = _db.OpenAdmin())
        {
            var node = Guid.NewGuid();
            _slots = Enumerable.Range(0, 8).Select(_ => Guid.NewGuid()).ToArray();
            await admin.ExecuteAsync("""
                INSERT INTO scheduling.nodes (id, cluster_id, provider_org_id, region, jurisdiction, accelerator_model, registered_at)
                VALUES (@node, gen_random_uuid(), gen_random_uuid(), 'cn-east', 'CN', 'h100-sxm', now());
                INSERT INTO scheduling.gpu_slots (id, node_id, index) SELECT id, @node, i - 1 FROM unnest(@slots) WITH ORDINALITY AS s(id, i);
                CREATE SCHEMA plain AUTHORIZATION scheduling;
                CREATE TABLE plain.leases (LIKE scheduling.leases INCLUDING ALL);
                CREATE TABLE plain.bookings (LIKE scheduling.bookings INCLUDING ALL);
                ALTER TABLE plain.bookings ADD FOREIGN KEY (lease_id) REFERENCES plain.leases (id),
                                           ADD FOREIGN KEY (slot_id) REFERENCES scheduling.gpu_slots (id);
                ALTER TABLE plain.leases OWNER TO scheduling;
                ALTER TABLE plain.bookings OWNER TO scheduling;
                """, new { node, slots = _slots });
            var exclusion = await admin.ExecuteScalarAsync<string>(
                "SELECT conname FROM pg_constraint WHERE conrelid = 'plain.bookings'::regclass AND contype = 'x'");
            await admin.ExecuteAsync($"ALTER TABLE plain.bookings DROP CONSTRAINT {exclusion}");
        }
        _real = NpgsqlDataSource.Create(new NpgsqlConnectionStringBuilder(connectionString) { SearchPath = "scheduling,public" }.ConnectionString);
        _plain = NpgsqlDataSource.Create(new NpgsqlConnectionStringBuilder(connectionString) { SearchPath = "plain,scheduling,public" }.ConnectionString);
    }

    [GlobalCleanup]
    public void Cleanup()
    {
        _real?.Dispose();
        _plain?.Dispose();
        _db?.DisposeAsync().AsTask().GetAwaiter().GetResult();
    }

    [Benchmark(Baseline = true)]
    public Task PlainInserts() => CommitAsync(_plain!);

    [Benchmark]
    public Task WithExclusionConstraint() => CommitAsync(_real!);

    private async Task CommitAsync(NpgsqlDataSource dataSource)
    {
        var start = T0.AddHours(Interlocked.Increment(ref _hour));
        var lease = new NewLease(Guid.NewGuid(), Guid.NewGuid(), Guid.NewGuid(), Guid.NewGuid(), Guid.NewGuid(), "h100-sxm", 8,
            start, start.AddHours(1), 235, "CNY", start);
        await using var connection = await dataSource.OpenConnectionAsync();
        await using var transaction = await connection.BeginTransactionAsync();
        await Booking.InsertAsync(connection, transaction, lease, _slots, CancellationToken.None);
        await transaction.CommitAsync();
    }
}
