using System.Diagnostics;
using System.Globalization;
using System.Text.RegularExpressions;
using Dapper;
using Npgsql;

namespace Marketplace.Load;

/// <summary>pgbench's simple-update on a throwaway database of the same PostgreSQL: the yardstick for bookings per second.</summary>
internal static partial class PgBench
{
    public static async Task<(double Tps, string Command)> RunAsync(string adminConnection, int seconds, TextWriter log, CancellationToken ct)
    {
        var cs = new NpgsqlConnectionStringBuilder(adminConnection);
        var name = "mp_pgbench_" + DateTime.UtcNow.ToString("HHmmssfff", CultureInfo.InvariantCulture);
        await using (var admin = new NpgsqlConnection(new NpgsqlConnectionStringBuilder(adminConnection) { Database = "postgres", Pooling = false }.ConnectionString))
            await admin.ExecuteAsync($"CREATE DATABASE {name}");
        try
        {
            var common = $"-h {cs.Host} -p {cs.Port} -U {cs.Username}";
            await PgBenchAsync($"{common} -i -q -s 1 {name}", cs.Password, ct);
            var run = $"pgbench {common} -c 4 -j 2 -T {seconds} -b simple-update {name}";
            log.WriteLine($"  {run}");
            var output = await PgBenchAsync(run["pgbench ".Length..], cs.Password, ct);
            var tps = Tps().Match(output);
            if (!tps.Success) throw new InvalidOperationException("pgbench printed no tps: " + output);
            return (double.Parse(tps.Groups[1].Value, CultureInfo.InvariantCulture), run);
        }
        finally
        {
            await using var admin = new NpgsqlConnection(new NpgsqlConnectionStringBuilder(adminConnection) { Database = "postgres", Pooling = false }.ConnectionString);
            await admin.ExecuteAsync($"DROP DATABASE IF EXISTS {name} WITH (FORCE)");
        }
    }

    private static async Task<string> PgBenchAsync(string arguments, string? password, CancellationToken ct)
    {
        var psi = new ProcessStartInfo("pgbench", arguments) { RedirectStandardOutput = true, RedirectStandardError = true };
        psi.Environment["PGPASSWORD"] = password ?? "";
        using var process = Process.Start(psi)!;
        var stdout = process.StandardOutput.ReadToEndAsync(ct);
        var stderr = process.StandardError.ReadToEndAsync(ct);
        await process.WaitForExitAsync(ct);
        if (process.ExitCode != 0) throw new InvalidOperationException($"pgbench {arguments} failed: {await stderr}");
        return await stdout + await stderr;
    }

    [GeneratedRegex(@"tps = ([0-9.]+) \(without initial connection time\)")]
    private static partial Regex Tps();
}
