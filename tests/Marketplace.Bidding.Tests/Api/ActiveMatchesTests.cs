using Dapper;
using Marketplace.Bidding.Orders;
using Marketplace.ServiceDefaults.Data;
using Microsoft.Extensions.DependencyInjection;
using Npgsql;
using Xunit;
using Xunit.Abstractions;
using static Marketplace.Bidding.Tests.Api.BiddingFixture;

namespace Marketplace.Bidding.Tests.Api;

/// <summary>
/// A clearing reads only the matches written since the copy Bidding keeps (ActiveMatches): it must see exactly the
/// bookings a full read of the active matches sees at that moment, whatever the writers did and however their
/// transactions overlapped the reads.
/// </summary>
public sealed class ActiveMatchesTests(BiddingFixture fx, ITestOutputHelper output) : IClassFixture<BiddingFixture>
{
    private readonly record struct Seen(Guid MatchId, Guid OfferId, DateTimeOffset Start, DateTimeOffset End, int Count, string Slots);

    [Fact]
    public async Task A_write_committed_after_a_later_one_is_still_seen_by_the_next_clearing()
    {
        // The case a copy kept by "the newest change seen" gets wrong: transaction A writes first (its id is older) but
        // commits after B, whose change a clearing already saw.
        var model = NewModel();
        var offer = (await fx.PublishOfferAsync(model, count: 16)).OfferId;
        var a = await InsertMatchAsync(model, offer, count: 2);
        var b = await InsertMatchAsync(model, offer, count: 3);
        Assert.Equal(await FullReadAsync(model), await ClearingReadAsync(model));

        await using var slow = fx.Database.OpenAdmin();
        await using var slowTx = await slow.BeginTransactionAsync();
        await slow.ExecuteAsync("UPDATE bidding.matches SET accelerator_count = 5 WHERE id = @a", new { a }, slowTx);
        Assert.Equal(await FullReadAsync(model), await ClearingReadAsync(model));
        await ExecAsync("UPDATE bidding.matches SET accelerator_count = 4 WHERE id = @b", new { b });
        Assert.Equal(await FullReadAsync(model), await ClearingReadAsync(model));
        await slowTx.CommitAsync();

        var seen = await ClearingReadAsync(model);
        Assert.Equal(await FullReadAsync(model), seen);
        Assert.Equal(5, seen.Single(s => s.MatchId == a).Count);
        Assert.Equal(4, seen.Single(s => s.MatchId == b).Count);
    }

    [Fact]
    public async Task A_clearing_sees_its_own_transactions_writes_and_they_are_forgotten_when_it_rolls_back()
    {
        var model = NewModel();
        var offer = (await fx.PublishOfferAsync(model, count: 16)).OfferId;
        var kept = await InsertMatchAsync(model, offer, count: 2);
        Assert.Equal(await FullReadAsync(model), await ClearingReadAsync(model));

        await using (var tx = await fx.Factory.Services.GetRequiredService<Db>().BeginAsync(CancellationToken.None))
        {
            await tx.Connection.ExecuteAsync("UPDATE matches SET state = 'released', released_at = now() WHERE id = @kept",
                new { kept }, tx.Transaction);
            var inside = await SeenAsync(tx, model);
            Assert.DoesNotContain(inside, s => s.MatchId == kept);
            // Rolled back: the release never happened.
        }

        var after = await ClearingReadAsync(model);
        Assert.Contains(after, s => s.MatchId == kept);
        Assert.Equal(await FullReadAsync(model), after);
    }

    [Fact]
    public async Task Random_writes_from_overlapping_transactions_are_seen_exactly_as_a_full_read_sees_them()
    {
        var seed = Environment.TickCount;
        output.WriteLine($"seed {seed}");
        var random = new Random(seed);
        var model = NewModel();
        var offers = new List<Guid>();
        for (var i = 0; i < 3; i++)
            offers.Add((await fx.PublishOfferAsync(model, count: 64, region: i == 2 ? "eu-west" : "cn-east")).OfferId);
        var matches = new List<Guid>();
        for (var i = 0; i < 5; i++) matches.Add(await InsertMatchAsync(model, offers[random.Next(offers.Count)], random.Next(1, 5)));

        // Up to two transactions left open across reads (with the matches they locked), committed or rolled back later.
        var open = new List<(NpgsqlConnection Connection, NpgsqlTransaction Tx, HashSet<Guid> Locked)>();
        try
        {
            for (var step = 0; step < 80; step++)
            {
                if (open.Count < 2 && random.Next(3) == 0)
                {
                    var c = fx.Database.OpenAdmin();
                    open.Add((c, await c.BeginTransactionAsync(), []));
                }
                var into = open.Count > 0 && random.Next(2) == 0 ? open[random.Next(open.Count)] : default;
                // A match another open transaction holds would wait for it: write one that is free (or ours).
                var free = matches.Where(m => open.All(o => o.Tx == into.Tx || !o.Locked.Contains(m))).ToList();
                if (into.Connection is null)
                {
                    await using var c = fx.Database.OpenAdmin();
                    await WriteAsync(random, model, offers, matches, free, c, null);
                }
                else into.Locked.Add(await WriteAsync(random, model, offers, matches, free, into.Connection, into.Tx));

                if (open.Count > 0 && random.Next(3) == 0)
                {
                    var done = open[random.Next(open.Count)];
                    open.Remove(done);
                    if (random.Next(4) == 0) await done.Tx.RollbackAsync(); else await done.Tx.CommitAsync();
                    await done.Connection.DisposeAsync();
                }

                var group = random.Next(3) switch { 0 => null, 1 => "cn", _ => "eu" };
                Assert.Equal(await FullReadAsync(model, group), await ClearingReadAsync(model, group));
            }
        }
        finally
        {
            foreach (var (c, t, _) in open)
            {
                await t.CommitAsync();
                await c.DisposeAsync();
            }
        }
        Assert.Equal(await FullReadAsync(model), await ClearingReadAsync(model));
    }

    private async Task<(NpgsqlConnection, NpgsqlTransaction)> OpenAsync(List<(NpgsqlConnection, NpgsqlTransaction)> open)
    {
        var c = fx.Database.OpenAdmin();
        var t = await c.BeginTransactionAsync();
        open.Add((c, t));
        return (c, t);
    }

    /// <summary>
    /// One write as Bidding's writers make them: a new match, slots booked, a shortened end, a release, a later start.
    /// Returns the match written.
    /// </summary>
    private static async Task<Guid> WriteAsync(Random random, string model, List<Guid> offers, List<Guid> matches, List<Guid> free,
        NpgsqlConnection c, NpgsqlTransaction? t)
    {
        var kind = free.Count == 0 ? 0 : random.Next(5);
        var match = kind == 0 ? Guid.NewGuid() : free[random.Next(free.Count)];
        switch (kind)
        {
            case 0:
                await c.ExecuteAsync(InsertSql, new { id = match, order = Guid.NewGuid(), offer = offers[random.Next(offers.Count)], model,
                    count = random.Next(1, 5), minutes = random.Next(-30, 120) }, t);
                matches.Add(match);
                break;
            case 1:
                await c.ExecuteAsync("UPDATE bidding.matches SET slot_ids = @slots WHERE id = @match",
                    new { match, slots = new[] { Guid.NewGuid(), Guid.NewGuid() } }, t);
                break;
            case 2:
                // Ended a moment ago (then left out), or shortened.
                await c.ExecuteAsync("""
                    UPDATE bidding.matches SET end_at = greatest(start_at + interval '1 minute', now() + @minutes * interval '1 minute')
                    WHERE id = @match
                    """, new { match, minutes = random.Next(-60, 30) }, t);
                break;
            case 3:
                await c.ExecuteAsync("UPDATE bidding.matches SET state = 'released', released_at = now() WHERE id = @match", new { match }, t);
                break;
            default:
                await c.ExecuteAsync("""
                    UPDATE bidding.matches SET start_at = start_at + interval '1 minute', end_at = end_at + interval '1 hour'
                    WHERE id = @match
                    """, new { match }, t);
                break;
        }
        return match;
    }

    private const string InsertSql = """
        INSERT INTO bidding.orders (id, renter_org_id, idempotency_key, request_hash, type, time_in_force, status,
                                    accelerator_model, accelerator_count, duration_seconds, max_price_amount,
                                    max_price_currency, created_at, updated_at, priority_at)
        VALUES (@order, gen_random_uuid(), @order::text, 'h', 'on_demand', 'gtc', 'matched', @model, @count, 3600, 300, 'CNY', now(), now(), now());
        INSERT INTO bidding.matches (id, order_id, offer_id, accelerator_count, start_at, end_at, price_amount, price_currency, state,
                                     created_at, order_type, market)
        VALUES (@id, @order, @offer, @count, now() - interval '30 minutes', now() + @minutes * interval '1 minute' + interval '31 minutes',
                235, 'CNY', 'active', now(), 'on_demand', @model || '/cn');
        """;

    private async Task<Guid> InsertMatchAsync(string model, Guid offer, int count)
    {
        var id = Guid.NewGuid();
        await ExecAsync(InsertSql, new { id, order = Guid.NewGuid(), offer, model, count, minutes = 60 });
        return id;
    }

    private async Task ExecAsync(string sql, object args)
    {
        await using var c = fx.Database.OpenAdmin();
        await c.ExecuteAsync(sql, args);
    }

    /// <summary>What a clearing sees: the bookings of the supply, read through Bidding's own code in a transaction of its own.</summary>
    private async Task<List<Seen>> ClearingReadAsync(string model, string? group = null)
    {
        await using var tx = await fx.Factory.Services.GetRequiredService<Db>().BeginAsync(CancellationToken.None);
        var seen = await SeenAsync(tx, model, group);
        await tx.CommitAsync(CancellationToken.None);
        return seen;
    }

    private static async Task<List<Seen>> SeenAsync(Tx tx, string model, string? group = null)
    {
        var supply = await OrderBook.LoadSupplyAsync(tx, model, group, CancellationToken.None);
        var now = tx.Now;
        return supply.Candidates.SelectMany(o => o.Bookings.Select(b => new Seen(b.MatchId, o.OfferId, b.Start, b.End, b.Count,
                string.Join(",", b.SlotIds ?? []))))
            .OrderBy(s => s.MatchId).ToList();
    }

    /// <summary>The oracle: every active, not yet ended match of the model's active offers (of the group), read afresh.</summary>
    private async Task<List<Seen>> FullReadAsync(string model, string? group = null)
    {
        await using var c = fx.Database.OpenAdmin();
        var rows = await c.QueryAsync<(Guid Id, Guid OfferId, DateTime Start, DateTime End, int Count, Guid[]? Slots)>("""
            SELECT m.id, m.offer_id, m.start_at, m.end_at, m.accelerator_count, m.slot_ids
            FROM bidding.matches m JOIN bidding.offers o USING (offer_id)
            WHERE o.accelerator_model = @model AND o.status = 'active' AND (@group::text IS NULL OR o.region_group = @group)
              AND m.state = 'active' AND m.end_at > now()
            """, new { model, group });
        return rows.Select(r => new Seen(r.Id, r.OfferId, new DateTimeOffset(r.Start, TimeSpan.Zero), new DateTimeOffset(r.End, TimeSpan.Zero),
                r.Count, string.Join(",", r.Slots ?? [])))
            .OrderBy(s => s.MatchId).ToList();
    }
}
