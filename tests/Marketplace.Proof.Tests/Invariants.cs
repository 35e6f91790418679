using System.Text.Json;
using Dapper;
using Marketplace.Testing;
using Xunit;
using Xunit.Abstractions;

namespace Marketplace.Proof.Tests;

/// <summary>
/// What must be true after a fault, once the marketplace has recovered and the load's effects have landed (every lease
/// of the load ended, every message consumed): every order
/// placed exactly once and settled (filled, or open/cancelled with a reason), no GPU booked twice, one lease per filled
/// order and one hold per lease (nothing charged twice: the renter's held money is exactly its pending holds, and
/// held + available is exactly what it paid in), every ledger transaction balanced per currency, every outbox drained,
/// every offer of the load published exactly once and known to Bidding, nothing in an <c>_error</c> queue without an
/// explanation.
/// </summary>
internal static class Invariants
{
    /// <summary>What the load achieved, for the report (and the scale-out comparison).</summary>
    public sealed record Outcome(int Orders, int Filled, double FilledPerSecond, double P50Ms, double P95Ms, double MaxMs, int FailedAttempts);

    /// <summary>
    /// Why an order may rest open although capacity was offered for all: Scheduling could not place its match and said
    /// why, and it went back to the book until the next offer or freed capacity of its market clears it again. After a
    /// fault: a match that reached Scheduling only after the lease's whole window, or a window whose free slots are
    /// spread over several GPUs (Bidding counts capacity per instant, a booking needs one slot for the whole window).
    /// </summary>
    public static bool BackInTheBook(string reason) => reason.StartsWith("the match could not be placed: ", StringComparison.Ordinal);

    /// <param name="acceptUnfilled">which reasons explain an order that is not filled (capacity is offered for all)</param>
    /// <param name="explainError">explains a message in an <c>_error</c> queue, or null when nothing does</param>
    public static async Task<Outcome> AssertAsync(FaultMarket market, OrderStream stream, IReadOnlyList<OrderStream.Placement> placements,
        ITestOutputHelper output, Func<string, bool>? acceptUnfilled = null, Func<string, JsonElement, string?>? explainError = null)
    {
        var settle = TimeSpan.FromSeconds(LoadProfile.SettleSeconds);
        acceptUnfilled ??= BackInTheBook;
        var stack = market.Stack;
        var r = new { renter = market.RenterOrgId, provider = market.ProviderOrgId };

        // Settled: nothing in flight any more (or a deadline, after which the assertions below say what is missing).
        var pending = "";
        try
        {
            var quiet = 0;
            await Eventually.True(async () =>
            {
                pending = await PendingAsync(stack, r);
                quiet = pending.Length == 0 ? quiet + 1 : 0;
                return quiet >= 2;
            }, settle, "the marketplace to settle");
        }
        catch (TimeoutException) { output.WriteLine("did not settle: " + pending); }

        using var db = stack.Database.OpenAdmin();

        // Every order placed exactly once, whatever was killed while it was being sent.
        var failed = placements.Where(p => p.OrderId is null).ToList();
        Assert.True(failed.Count == 0, $"{failed.Count} orders were never accepted: " + string.Join("; ", failed.Take(3).Select(p => p.Error)));
        var orders = (await db.QueryAsync<(Guid Id, string Key, string Status, string? Reason)>(
            "SELECT id, idempotency_key, status, status_reason FROM bidding.orders WHERE renter_org_id = @renter", r)).ToList();
        Assert.Equal(placements.Count, orders.Count);
        Assert.Equal(placements.Select(p => (p.Key, p.OrderId!.Value)).Order(), orders.Select(o => (o.Key, o.Id)).Order());

        var byStatus = orders.GroupBy(o => o.Status).ToDictionary(g => g.Key, g => g.Count());
        output.WriteLine($"{market.Name}: {orders.Count} orders ({string.Join(", ", byStatus.Select(kv => $"{kv.Key} {kv.Value}"))}); "
                         + $"{stream.FailedAttempts} failed attempts resent; offers published during the load {stream.OffersPublished} "
                         + $"({stream.OffersResent} attempts resent), failed {stream.OffersFailed}");
        foreach (var reason in orders.Where(o => o.Status != "filled").GroupBy(o => $"{o.Status}: {o.Reason}"))
            output.WriteLine($"  {reason.Count()} × {reason.Key}");
        Assert.All(orders, o => Assert.True(o.Status is "filled" or "open" or "cancelled", $"order {o.Id} is {o.Status}: {o.Reason}"));
        Assert.All(orders.Where(o => o.Status != "filled"), o => Assert.False(string.IsNullOrEmpty(o.Reason), $"order {o.Id} is {o.Status} without a reason"));
        // Capacity was offered for every order: one that did not fill needs a reason that a fault explains.
        Assert.All(orders.Where(o => o.Status != "filled"), o => Assert.True(acceptUnfilled(o.Reason!), $"order {o.Id} is {o.Status}: {o.Reason}"));

        Assert.True(pending.Length == 0, "the marketplace did not settle: " + pending);

        // No GPU booked twice for overlapping time (anywhere in the marketplace).
        Assert.Equal(0, await db.ExecuteScalarAsync<long>("""
            SELECT count(*) FROM scheduling.bookings a JOIN scheduling.bookings b
              ON a.slot_id = b.slot_id AND a.lease_id < b.lease_id AND a.during && b.during
            """));

        // One lease per filled order, none for an order that did not fill; one hold per lease, known to Billing once.
        var filled = orders.Where(o => o.Status == "filled").Select(o => o.Id).ToArray();
        var leases = (await db.QueryAsync<(Guid Id, Guid OrderId, string Status)>(
            "SELECT id, order_id, status FROM scheduling.leases WHERE renter_org_id = @renter", r)).ToList();
        Assert.Equal(leases.Count, leases.Select(l => l.OrderId).Distinct().Count());
        var leased = leases.Select(l => l.OrderId).ToHashSet();
        Assert.All(filled, o => Assert.True(leased.Contains(o), $"filled order {o} has no lease"));
        Assert.All(leases.Where(l => !filled.Contains(l.OrderId)), l => Assert.True(l.Status is "cancelled" or "failed",
            $"lease {l.Id} is {l.Status} while its order {l.OrderId} is not filled"));
        var holds = (await db.QueryAsync<(Guid LeaseId, long Amount, string Status)>(
            "SELECT lease_id, amount, status FROM billing.holds WHERE renter_org_id = @renter", r)).ToList();
        Assert.Equal(leases.Select(l => l.Id).Order(), holds.Select(h => h.LeaseId).Order());
        Assert.Equal(leases.Count, await db.ExecuteScalarAsync<long>("SELECT count(*) FROM billing.leases WHERE renter_org_id = @renter", r));

        // No duplicate charge: the held balance is exactly the pending holds; held + available is exactly the top-up.
        var balances = (await db.QueryAsync<(string Account, long Balance)>("""
            SELECT account, SUM(amount)::bigint FROM billing.ledger_entries
            WHERE account IN (@available, @held) AND currency = @currency GROUP BY account
            """, new { available = $"renter:{market.RenterOrgId}:available", held = $"renter:{market.RenterOrgId}:held", currency = FaultMarket.Currency }))
            .ToDictionary(b => b.Account, b => b.Balance);
        var held = balances.GetValueOrDefault($"renter:{market.RenterOrgId}:held");
        var available = balances.GetValueOrDefault($"renter:{market.RenterOrgId}:available");
        Assert.Equal(holds.Where(h => h.Status == "pending").Sum(h => h.Amount), held);
        Assert.Equal(FaultMarket.TopUp, held + available);

        // Every ledger transaction sums to zero per currency, and so does the whole ledger (also as finance sees it).
        Assert.Equal(0, await db.ExecuteScalarAsync<long>("""
            SELECT count(*) FROM (SELECT 1 FROM billing.ledger_entries GROUP BY transaction_id, currency HAVING SUM(amount) <> 0) x
            """));
        Assert.Equal(0, await db.ExecuteScalarAsync<long>(
            "SELECT count(*) FROM (SELECT 1 FROM billing.ledger_entries GROUP BY currency HAVING SUM(amount) <> 0) x"));
        var trial = await Api.GetJsonAsync(market.Finance, "/v1/ledger/trial-balance");
        Assert.Equal(true, (bool?)trial!["balanced"]);

        // Every outbox drained (leases still starting and ending write new rows: each outbox must be seen empty), every
        // offer the provider has reached Bidding with the same status.
        foreach (var schema in State.Schemas)
            await Eventually.True(async () => await db.ExecuteScalarAsync<long>($"SELECT count(*) FROM {schema}.outbox") == 0,
                TimeSpan.FromSeconds(30), $"{schema}'s outbox to drain");
        Assert.Equal(0, await db.ExecuteScalarAsync<long>("""
            SELECT count(*) FROM listings.offers o LEFT JOIN bidding.offers b ON b.offer_id = o.id
            WHERE o.provider_org_id = @provider AND (b.offer_id IS NULL OR b.status <> o.status)
            """, r));

        // Every offer of the load published exactly once, though requests were cut and resent (same Idempotency-Key).
        var failedOffers = stream.Offers.Where(o => o.OfferId is null).ToList();
        Assert.True(failedOffers.Count == 0, $"{failedOffers.Count} offers were never accepted: " + string.Join("; ", failedOffers.Take(3).Select(o => o.Error)));
        Assert.Equal(market.InitialOffers.Concat(stream.Offers.Select(o => o.OfferId!.Value)).Order(),
            (await db.QueryAsync<Guid>("SELECT id FROM listings.offers WHERE provider_org_id = @provider", r)).Order());

        // Nothing in an _error queue without an explanation.
        var errors = (await stack.VirtualHost.QueueDepthsAsync()).Where(q => q.Key.EndsWith("_error", StringComparison.Ordinal) && q.Value > 0).ToList();
        var unexplained = new List<string>();
        foreach (var (queue, depth) in errors)
        {
            foreach (var message in await stack.VirtualHost.PeekAsync(queue, (int)Math.Min(depth, 20)))
            {
                var why = explainError?.Invoke(queue, message);
                output.WriteLine($"  {queue}: {(why ?? "UNEXPLAINED")}: {Describe(message)}");
                if (why is null) unexplained.Add($"{queue}: {Describe(message)}");
            }
        }
        Assert.True(unexplained.Count == 0, "messages in _error queues: " + string.Join(" | ", unexplained));

        return await OutcomeAsync(db, r.renter, stream);
    }

    /// <summary>
    /// Waits until no work of an earlier scenario is overdue anywhere in the marketplace (due work, outbox rows, queued
    /// messages), so that a scenario is not judged by the backlog another one left (the fault scenarios share one
    /// marketplace). Returns how long it waited; gives up after <paramref name="timeout"/> and says what was left.
    /// </summary>
    public static async Task<TimeSpan> WaitQuietAsync(MarketplaceStack stack, TimeSpan timeout, ITestOutputHelper output)
    {
        using var db = stack.Database.OpenAdmin();
        var schemas = (await db.QueryAsync<string>(
            "SELECT table_schema FROM information_schema.tables WHERE table_name = 'due_work' AND table_schema = ANY(@schemas)",
            new { schemas = State.Schemas })).ToList();
        var overdue = string.Join(" + ", schemas.Select(s => $"(SELECT count(*) FROM {s}.due_work WHERE done_at IS NULL AND due_at < now() - interval '5 seconds')")
            .Concat(State.Schemas.Select(s => $"(SELECT count(*) FROM {s}.outbox WHERE created_at < now() - interval '3 seconds')")));
        var clock = System.Diagnostics.Stopwatch.StartNew();
        var left = "";
        try
        {
            await Eventually.True(async () =>
            {
                var late = await db.ExecuteScalarAsync<long>("SELECT " + overdue);
                var queued = (await stack.VirtualHost.QueueDepthsAsync()).Where(q => !q.Key.EndsWith("_error", StringComparison.Ordinal)
                    && !q.Key.EndsWith("_skipped", StringComparison.Ordinal)).Sum(q => q.Value);
                left = $"{late} overdue due-work items or outbox rows, {queued} messages queued";
                return late == 0 && queued == 0;
            }, timeout, "the marketplace to be quiet");
        }
        catch (TimeoutException) { output.WriteLine($"not quiet after {timeout.TotalSeconds:0} s: {left}"); }
        return clock.Elapsed;
    }

    /// <summary>Throughput and order → lease scheduled latency of the load (from the services' own timestamps).</summary>
    private static async Task<Outcome> OutcomeAsync(Npgsql.NpgsqlConnection db, Guid renter, OrderStream stream)
    {
        var rows = (await db.QueryAsync<(DateTime Ordered, DateTime? Leased)>("""
            SELECT o.created_at, l.created_at FROM bidding.orders o LEFT JOIN scheduling.leases l ON l.order_id = o.id
            WHERE o.renter_org_id = @renter
            """, new { renter })).ToList();
        var latencies = rows.Where(x => x.Leased is not null).Select(x => (x.Leased!.Value - x.Ordered).TotalMilliseconds).Order().ToArray();
        if (latencies.Length == 0) return new Outcome(rows.Count, 0, 0, 0, 0, 0, stream.FailedAttempts);
        var span = (rows.Where(x => x.Leased is not null).Max(x => x.Leased!.Value) - rows.Min(x => x.Ordered)).TotalSeconds;
        return new Outcome(rows.Count, latencies.Length, latencies.Length / Math.Max(span, 0.001),
            Percentile(latencies, 0.50), Percentile(latencies, 0.95), latencies[^1], stream.FailedAttempts);
    }

    private static double Percentile(double[] sorted, double p) => sorted[Math.Clamp((int)Math.Ceiling(p * sorted.Length) - 1, 0, sorted.Length - 1)];

    /// <summary>What is still on its way; empty when the load's effects have all landed.</summary>
    private static async Task<string> PendingAsync(MarketplaceStack stack, object r)
    {
        using var db = stack.Database.OpenAdmin();
        var counts = await db.QuerySingleAsync<(long Matched, long Outbox, long Unleased, long Unheld, long Unmetered, long UnknownOffers, long Stuck)>("""
            SELECT
              (SELECT count(*) FROM bidding.orders WHERE renter_org_id = @renter AND status = 'matched'),
              (SELECT count(*) FROM gateway.outbox WHERE created_at < now() - interval '3 seconds')
                + (SELECT count(*) FROM listings.outbox WHERE created_at < now() - interval '3 seconds')
                + (SELECT count(*) FROM bidding.outbox WHERE created_at < now() - interval '3 seconds')
                + (SELECT count(*) FROM scheduling.outbox WHERE created_at < now() - interval '3 seconds')
                + (SELECT count(*) FROM billing.outbox WHERE created_at < now() - interval '3 seconds'),
              (SELECT count(*) FROM bidding.orders o WHERE o.renter_org_id = @renter AND o.status = 'filled'
                 AND NOT EXISTS (SELECT 1 FROM scheduling.leases l WHERE l.order_id = o.id)),
              (SELECT count(*) FROM scheduling.leases l WHERE l.renter_org_id = @renter
                 AND NOT EXISTS (SELECT 1 FROM billing.holds h WHERE h.lease_id = l.id)),
              (SELECT count(*) FROM scheduling.leases l LEFT JOIN billing.usage u ON u.lease_id = l.id WHERE l.renter_org_id = @renter
                 AND ((l.started_at < now() - interval '3 seconds' AND u.started_at IS NULL)
                   OR (l.ended_at < now() - interval '3 seconds' AND u.ended_at IS NULL))),
              (SELECT count(*) FROM listings.offers o LEFT JOIN bidding.offers b ON b.offer_id = o.id
                 WHERE o.provider_org_id = @provider AND (b.offer_id IS NULL OR b.status <> o.status)),
              (SELECT count(*) FROM scheduling.leases WHERE renter_org_id = @renter
                 AND ((status = 'scheduled' AND start_at < now() - interval '5 seconds')
                   OR (status NOT IN ('completed', 'cancelled', 'failed', 'preempted') AND end_at < now() - interval '5 seconds')))
            """, r);
        var busy = (await stack.VirtualHost.QueueDepthsAsync()).Where(q => !q.Key.EndsWith("_error", StringComparison.Ordinal)
            && !q.Key.EndsWith("_skipped", StringComparison.Ordinal) && q.Value > 0).Sum(q => q.Value);
        var parts = new List<string>();
        if (counts.Matched > 0) parts.Add($"{counts.Matched} orders matched but not filled");
        if (counts.Outbox > 0) parts.Add($"{counts.Outbox} outbox rows");
        if (counts.Unleased > 0) parts.Add($"{counts.Unleased} filled orders without a lease");
        if (counts.Unheld > 0) parts.Add($"{counts.Unheld} leases without a hold");
        if (counts.Unmetered > 0) parts.Add($"{counts.Unmetered} leases whose start or end Billing has not seen");
        if (counts.UnknownOffers > 0) parts.Add($"{counts.UnknownOffers} offers Bidding does not know as they are");
        if (counts.Stuck > 0) parts.Add($"{counts.Stuck} leases not started or ended when due");
        if (busy > 0) parts.Add($"{busy} messages queued");
        return string.Join(", ", parts);
    }

    private static string Describe(JsonElement message)
    {
        var headers = message.TryGetProperty("properties", out var props) && props.TryGetProperty("headers", out var h) ? h : default;
        string? Header(string name) => headers.ValueKind == JsonValueKind.Object && headers.TryGetProperty(name, out var v) ? v.ToString() : null;
        return $"{Header("MT-Fault-ExceptionType")}: {Header("MT-Fault-Message")}".Trim(':', ' ') is { Length: > 0 } fault
            ? fault : message.GetProperty("payload").GetString()?[..Math.Min(300, message.GetProperty("payload").GetString()!.Length)] ?? "";
    }
}
