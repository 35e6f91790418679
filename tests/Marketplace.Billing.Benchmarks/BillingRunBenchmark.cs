using BenchmarkDotNet.Attributes;
using BenchmarkDotNet.Engines;
using BenchmarkDotNet.Toolchains.InProcess.Emit;
using BenchmarkDotNet.Configs;
using BenchmarkDotNet.Jobs;
using Dapper;
using Marketplace.Billing;
using Marketplace.Billing.Runs;
using Marketplace.ServiceDefaults.Data;
using Marketplace.ServiceDefaults.Messaging;
using Marketplace.StripeFake;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using Microsoft.Extensions.Options;
using Npgsql;
using NpgsqlTypes;
using Stripe;

namespace Marketplace.Billing.Benchmarks;

/// <summary>
/// A full billing run (the service's own <see cref="BillingRunner"/>: metering with downtime, SLA credits, invoice lines,
/// ledger postings, statements, Stripe transfers to the local stand-in) over 100 000 leases with 1 000 000 usage rows
/// (100 000 usage spans + 900 000 downtime intervals), against one set-based SQL aggregation of the same rows. A throwaway
/// database on the real PostgreSQL, loaded once with binary COPY; each iteration resets what the run wrote.
/// </summary>
[Config(typeof(Config))]
public class BillingRunBenchmark
{
    private sealed class Config : ManualConfig
    {
        public Config() => AddJob(Job.Default.WithStrategy(RunStrategy.Monitoring).WithLaunchCount(1).WithWarmupCount(1)
            .WithIterationCount(3).WithInvocationCount(1).WithUnrollFactor(1).WithToolchain(new InProcessEmitToolchain(TimeSpan.FromMinutes(30), logOutput: false)));
    }

    /// <summary>100 000 by default; <c>--leases N</c> on the command line for a quicker run while iterating.</summary>
    public static int Leases { get; set; } = 100_000;
    public const int DowntimePerLease = 9;
    private static int Renters => Math.Max(1, Leases / 10);
    private static int Providers => Math.Max(1, Leases / 100);
    private static readonly DateTime Day = new(2026, 11, 20, 0, 0, 0, DateTimeKind.Utc);
    private static readonly BillingPeriod Period = new("2026-11-20", Day, Day.AddDays(1));

    private readonly string _database = "bench_billing_" + Guid.NewGuid().ToString("N")[..8];
    public string Database => _database;
    private NpgsqlDataSource _dataSource = null!;
    private WebApplication _stripe = null!;
    private BillingRunner _runner = null!;

    [Params(10_000)] public int BatchSize { get; set; } = 10_000;

    internal static string Admin(string database) =>
        $"Host=127.0.0.1;Port=55432;Username=mp_admin;Password=mp_admin;Database={database};Command Timeout=600;Include Error Detail=true";

    [GlobalSetup]
    public async Task SetupAsync()
    {
        await using (var c = new NpgsqlConnection(Admin("postgres")))
            await c.ExecuteAsync($"CREATE DATABASE {_database}");
        await using (var c = new NpgsqlConnection(Admin(_database)))
            await c.ExecuteAsync("CREATE SCHEMA billing");
        Dapper.DefaultTypeMap.MatchNamesWithUnderscores = true;
        _dataSource = NpgsqlDataSource.Create(Admin(_database) + ";Search Path=billing,public;Maximum Pool Size=20");

        var services = new ServiceCollection().AddLogging().AddSingleton(new ServiceSchema("billing")).AddSingleton(_dataSource).BuildServiceProvider();
        services.MigrateDatabase(typeof(BillingRunner).Assembly);
        await LoadAsync();

        _stripe = StripeFakeApp.Build([], b =>
        {
            b.WebHost.UseUrls("http://127.0.0.1:0");
            b.Logging.SetMinimumLevel(LogLevel.Warning);
        });
        await _stripe.StartAsync();
        var stripe = new StripeClient(new StripeClientOptions { ApiKey = "sk_test_bench", ApiBase = _stripe.Urls.Single() });
        // "Now" is after the period, so every lease of the day is billable.
        var time = new FixedTime(Day.AddDays(2));
        var db = new Db(_dataSource, new OutboxSignal(), time);
        _runner = new BillingRunner(db, stripe, Options.Create(new BillingOptions { RunBatchSize = BatchSize }), new BillingRunHooks(),
            NullLogger<BillingRunner>.Instance);
    }

    private async Task LoadAsync()
    {
        var random = new Random(42);
        var renters = Enumerable.Range(0, Renters).Select(_ => Guid.NewGuid()).ToArray();
        var providers = Enumerable.Range(0, Providers).Select(_ => Guid.NewGuid()).ToArray();
        await using var c = await _dataSource.OpenConnectionAsync();

        var leases = Enumerable.Range(0, Leases).Select(i =>
        {
            var start = Day.AddSeconds(random.Next(0, 20 * 3600));
            var hours = random.Next(1, 4);
            var price = random.Next(100, 5000);
            var count = random.Next(1, 9);
            var used = random.Next(hours * 1800, hours * 3600 + 1);
            return (Id: Guid.NewGuid(), Renter: renters[i % Renters], Provider: providers[random.Next(Providers)], Start: start,
                End: start.AddHours(hours), Price: (long)price, Count: count, Used: used,
                Hold: Domain.Rating.MaxCost(price, count, hours * 3600L), Sla: (i % 3) switch { 0 => "none", 1 => "standard", _ => "premium" });
        }).ToList();

        await using (var w = await c.BeginBinaryImportAsync("""
            COPY leases (lease_id, order_id, renter_org_id, provider_org_id, accelerator_model, accelerator_count, start_at, end_at,
                         price_per_hour, currency, scheduled_at, interruptible, sla_level) FROM STDIN (FORMAT BINARY)
            """))
        {
            foreach (var l in leases)
            {
                await w.StartRowAsync();
                await w.WriteAsync(l.Id, NpgsqlDbType.Uuid); await w.WriteAsync(Guid.NewGuid(), NpgsqlDbType.Uuid);
                await w.WriteAsync(l.Renter, NpgsqlDbType.Uuid); await w.WriteAsync(l.Provider, NpgsqlDbType.Uuid);
                await w.WriteAsync("h100-sxm", NpgsqlDbType.Text); await w.WriteAsync(l.Count, NpgsqlDbType.Integer);
                await w.WriteAsync(l.Start, NpgsqlDbType.TimestampTz); await w.WriteAsync(l.End, NpgsqlDbType.TimestampTz);
                await w.WriteAsync(l.Price, NpgsqlDbType.Bigint); await w.WriteAsync("CNY", NpgsqlDbType.Char);
                await w.WriteAsync(l.Start.AddHours(-1), NpgsqlDbType.TimestampTz); await w.WriteAsync(false, NpgsqlDbType.Boolean);
                await w.WriteAsync(l.Sla, NpgsqlDbType.Text);
            }
            await w.CompleteAsync();
        }
        await using (var w = await c.BeginBinaryImportAsync(
            "COPY holds (id, lease_id, renter_org_id, amount, currency, status, created_at) FROM STDIN (FORMAT BINARY)"))
        {
            foreach (var l in leases)
            {
                await w.StartRowAsync();
                await w.WriteAsync(Guid.NewGuid(), NpgsqlDbType.Uuid); await w.WriteAsync(l.Id, NpgsqlDbType.Uuid);
                await w.WriteAsync(l.Renter, NpgsqlDbType.Uuid); await w.WriteAsync(l.Hold, NpgsqlDbType.Bigint);
                await w.WriteAsync("CNY", NpgsqlDbType.Char); await w.WriteAsync("pending", NpgsqlDbType.Text);
                await w.WriteAsync(l.Start.AddHours(-1), NpgsqlDbType.TimestampTz);
            }
            await w.CompleteAsync();
        }
        await using (var w = await c.BeginBinaryImportAsync(
            "COPY usage (lease_id, started_at, ended_at, end_status, end_reason, end_cause, interruptions, resumes) FROM STDIN (FORMAT BINARY)"))
        {
            foreach (var l in leases)
            {
                await w.StartRowAsync();
                await w.WriteAsync(l.Id, NpgsqlDbType.Uuid); await w.WriteAsync(l.Start, NpgsqlDbType.TimestampTz);
                await w.WriteAsync(l.Start.AddSeconds(l.Used), NpgsqlDbType.TimestampTz);
                var early = l.Used < (l.End - l.Start).TotalSeconds;
                await w.WriteAsync(early ? "cancelled" : "completed", NpgsqlDbType.Text); await w.WriteAsync("bench", NpgsqlDbType.Text);
                await w.WriteAsync(early ? "renter" : "platform", NpgsqlDbType.Text);
                // Scheduling's counts, as its LeaseEnded says them: the run checks that Billing holds them all.
                await w.WriteAsync(DowntimePerLease, NpgsqlDbType.Integer); await w.WriteAsync(DowntimePerLease, NpgsqlDbType.Integer);
            }
            await w.CompleteAsync();
        }
        // Nine short, disjoint interruptions per lease, inside its first half hour (so inside what ran).
        await using (var w = await c.BeginBinaryImportAsync("COPY downtime (lease_id, started_at, ended_at, cause, reason) FROM STDIN (FORMAT BINARY)"))
        {
            foreach (var l in leases)
                for (var k = 0; k < DowntimePerLease; k++)
                {
                    var from = l.Start.AddSeconds(k * 200 + random.Next(0, 100));
                    await w.StartRowAsync();
                    await w.WriteAsync(l.Id, NpgsqlDbType.Uuid); await w.WriteAsync(from, NpgsqlDbType.TimestampTz);
                    await w.WriteAsync(from.AddSeconds(random.Next(1, 6)), NpgsqlDbType.TimestampTz);
                    await w.WriteAsync(k % 3 == 0 ? "platform" : "provider", NpgsqlDbType.Text); await w.WriteAsync("bench", NpgsqlDbType.Text);
                }
            await w.CompleteAsync();
        }
        // Every provider onboarded at Stripe, so the run sends its 1 000 transfers (as before payout accounts existed).
        await c.ExecuteAsync("""
            INSERT INTO payout_accounts (id, provider_org_id, stripe_account_id, idempotency_key, country, payouts_enabled, charges_enabled,
                                         details_submitted, created_at, updated_at)
            SELECT gen_random_uuid(), p, 'acct_' || replace(p::text, '-', ''), 'bench', 'SG', true, true, true, now(), now()
            FROM unnest(@providers) AS p
            """, new { providers });
        await c.ExecuteAsync("VACUUM ANALYZE", commandTimeout: 600);
    }

    /// <summary>Undoes what a run wrote (triggers off for the append-only ledger and final invoices: this is a throwaway database).</summary>
    [IterationSetup]
    public void Reset()
    {
        using var c = _dataSource.OpenConnection();
        c.Execute("""
            SET session_replication_role = replica;
            TRUNCATE payouts, credit_notes, invoice_lines, invoices, statements, ledger_entries, ledger_transactions, wallet_balances, billing_runs;
            UPDATE holds SET status = 'pending', charged = 0, settled_at = NULL;
            SET session_replication_role = origin;
            """, commandTimeout: 600);
        c.Execute("VACUUM ANALYZE", commandTimeout: 600);
    }

    [Benchmark(Baseline = true, Description = "set-based SQL aggregation of the same rows")]
    public async Task<int> SqlAggregation()
    {
        await using var c = await _dataSource.OpenConnectionAsync();
        var rows = await c.QueryAsync<(Guid Org, string Currency, decimal Amount)>("""
            WITH per_lease AS (
                SELECT l.renter_org_id, l.provider_org_id, l.currency, l.price_per_hour, l.accelerator_count,
                       floor(extract(epoch FROM LEAST(u.ended_at, u.started_at + (l.end_at - l.start_at)) - u.started_at)
                             - COALESCE(d.down, 0))::bigint AS seconds
                FROM holds h JOIN usage u USING (lease_id) JOIN leases l USING (lease_id)
                LEFT JOIN (SELECT lease_id, SUM(extract(epoch FROM ended_at - started_at)) AS down FROM downtime GROUP BY lease_id) d USING (lease_id)
                WHERE h.status = 'pending' AND u.ended_at >= @From AND u.ended_at < @To),
            priced AS (SELECT *, round(price_per_hour::numeric * accelerator_count * seconds / 3600) AS amount FROM per_lease)
            SELECT renter_org_id, currency, SUM(amount) FROM priced GROUP BY renter_org_id, currency
            UNION ALL
            SELECT provider_org_id, currency, SUM(amount) FROM priced GROUP BY provider_org_id, currency
            """, new { Period.From, Period.To }, commandTimeout: 600);
        return rows.Count();
    }

    [Benchmark(Description = "billing run (BillingRunner, batched)")]
    public async Task<int> BillingRun()
    {
        var outcome = await _runner.RunAsync(Period, CancellationToken.None);
        LastProfile = outcome.Profile;
        Console.WriteLine($"// billing run phases: {outcome.Profile}");
        return outcome.LeasesClosed;
    }

    public RunProfile? LastProfile { get; private set; }

    [GlobalCleanup]
    public async Task CleanupAsync()
    {
        await _stripe.DisposeAsync();
        await _dataSource.DisposeAsync();
        NpgsqlConnection.ClearAllPools();
        await using var c = new NpgsqlConnection(Admin("postgres"));
        await c.ExecuteAsync($"DROP DATABASE IF EXISTS {_database} WITH (FORCE)");
    }

    private sealed class FixedTime(DateTime now) : TimeProvider
    {
        public override DateTimeOffset GetUtcNow() => new(now, TimeSpan.Zero);
    }
}
