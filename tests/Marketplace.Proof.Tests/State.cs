using Dapper;
using Marketplace.Testing;

namespace Marketplace.Proof.Tests;

/// <summary>What "nothing written" is checked against: every business row of every service.</summary>
internal static class State
{
    public static readonly string[] Schemas = ["gateway", "listings", "bidding", "scheduling", "billing"];

    /// <summary>Waits until every outbox is empty twice in a row, so the effects of earlier requests have landed.</summary>
    public static async Task QuiesceAsync(TestDatabase database, int settleMs = 300)
    {
        using var db = database.OpenAdmin();
        var empty = 0;
        var deadline = DateTime.UtcNow.AddSeconds(60);
        while (empty < 2 && DateTime.UtcNow < deadline)
        {
            var pending = await db.ExecuteScalarAsync<long>(string.Join(" + ", Schemas.Select(s => $"(SELECT count(*) FROM {s}.outbox)")).Insert(0, "SELECT "));
            empty = pending == 0 ? empty + 1 : 0;
            await Task.Delay(pending == 0 ? settleMs : 100);
        }
    }

    /// <summary>
    /// Waits until the business rows stop changing (two snapshots <paramref name="intervalMs"/> apart are equal), at most a
    /// minute. Accepted writes have effects outside every outbox: the Stripe stand-in delivers the webhook of each accepted
    /// top-up one by one, for up to a minute after the batch. Checked batches must not see those as writes by their 4xx.
    /// </summary>
    public static async Task<Dictionary<string, string>> SettleAsync(TestDatabase database, int intervalMs = 500)
    {
        var deadline = DateTime.UtcNow.AddSeconds(60);
        var last = await SnapshotAsync(database);
        while (DateTime.UtcNow < deadline)
        {
            await Task.Delay(intervalMs);
            await QuiesceAsync(database, 0);
            var now = await SnapshotAsync(database);
            if (Diff(last, now).Length == 0) return now;
            last = now;
        }
        return last;
    }

    /// <summary>
    /// One line per business table: its row count and a hash of its content, so an insert, update or delete shows.
    /// The messaging bookkeeping (outbox, inbox, due work, migrations) is left out.
    /// </summary>
    public static async Task<Dictionary<string, string>> SnapshotAsync(TestDatabase database)
    {
        using var db = database.OpenAdmin();
        var tables = await db.QueryAsync<(string Schema, string Table)>("""
            SELECT table_schema, table_name FROM information_schema.tables
            WHERE table_schema = ANY(@schemas) AND table_type = 'BASE TABLE'
              AND table_name NOT IN ('outbox','inbox','due_work','schema_history','changelog')
            ORDER BY 1, 2
            """, new { schemas = Schemas });
        var sql = string.Join("\nUNION ALL\n", tables.Select(t =>
            $"SELECT '{t.Schema}.{t.Table}' AS name, count(*)::text || ':' || coalesce(md5(string_agg(x::text, '|' ORDER BY x::text)), '') AS state FROM {t.Schema}.\"{t.Table}\" x"));
        return (await db.QueryAsync<(string Name, string State)>(sql)).ToDictionary(r => r.Name, r => r.State);
    }

    public static string Diff(Dictionary<string, string> before, Dictionary<string, string> after) =>
        string.Join(", ", after.Where(kv => !before.TryGetValue(kv.Key, out var b) || b != kv.Value).Select(kv => kv.Key)
            .Concat(before.Keys.Except(after.Keys)));
}
