using Dapper;
using Marketplace.Bidding.Orders;
using Marketplace.ServiceDefaults.Data;
using Marketplace.Testing;
using Microsoft.Extensions.DependencyInjection;
using Xunit;
using static Marketplace.Bidding.Tests.Api.BiddingFixture;

namespace Marketplace.Bidding.Tests.Api;

/// <summary>A clearing of many orders writes its fills, events, explanations and safety nets in a few statements.</summary>
public sealed class BatchWritesTests(BiddingFixture fx) : IClassFixture<BiddingFixture>
{
    [Fact]
    public async Task One_batch_of_many_orders_writes_every_match_event_and_explanation_exactly_once_for_the_right_order()
    {
        var model = NewModel();
        var onDemandOffer = await fx.PublishOfferAsync(model, ask: 235, count: 30);
        var spotOffer = await fx.PublishOfferAsync(model, ask: 900, count: 5, interruptible: true, floor: 100);
        // 40 on-demand orders for the 30 on-demand accelerators (max 300..339: the 30 highest win), 4 interruptible bids
        // of 150 for 5 accelerators, one ioc that cannot fit (8 accelerators).
        var orders = Enumerable.Range(0, 40).Select(i => (Id: Guid.NewGuid(), Type: "on_demand", Tif: "gtc", Count: 1, Max: 300L + i))
            .Concat(Enumerable.Range(0, 4).Select(_ => (Id: Guid.NewGuid(), Type: "interruptible", Tif: "gtc", Count: 1, Max: 150L)))
            .Append((Id: Guid.NewGuid(), Type: "on_demand", Tif: "ioc", Count: 8, Max: 250L))
            .ToList();
        await using (var db = fx.Database.OpenAdmin())
            foreach (var o in orders)
                await db.ExecuteAsync("""
                    INSERT INTO bidding.orders (id, renter_org_id, idempotency_key, request_hash, type, time_in_force, status,
                                                accelerator_model, accelerator_count, duration_seconds, max_price_amount,
                                                max_price_currency, created_at, updated_at, priority_at)
                    VALUES (@Id, gen_random_uuid(), @Id::text, 'h', @Type, @Tif, 'open', @model, @Count, 3600, @Max, 'CNY', now(), now(), now());
                    INSERT INTO bidding.due_work (kind, key, due_at) VALUES ('order.place', @Id::text, now() + interval '1 hour');
                    """, new { o.Id, o.Type, o.Tif, o.Count, o.Max, model });

        var ids = orders.Select(o => o.Id).ToArray();
        await using (var tx = await fx.Factory.Services.GetRequiredService<Db>().BeginAsync(CancellationToken.None))
        {
            Assert.Equal(orders.Count, await OrderBook.ClearPlacedAsync(tx, model, null, ids, CancellationToken.None));
            await tx.CommitAsync(CancellationToken.None);
        }

        var matches = (await QueryAsync<(Guid Id, Guid OrderId, Guid OfferId, int AcceleratorCount, long PriceAmount, string OrderType, string Market, long? BidAmount)>(
            """
            SELECT id, order_id, offer_id, accelerator_count, price_amount, order_type, market, bid_amount FROM bidding.matches
            WHERE order_id = ANY(@ids)
            """, new { ids })).ToList();
        var winners = orders.Where(o => o.Type == "on_demand" && o.Max >= 310).Select(o => o.Id).ToHashSet();
        var spot = orders.Where(o => o.Type == "interruptible").Select(o => o.Id).ToHashSet();
        Assert.Equal(34, matches.Count);
        Assert.Equal(34, matches.Select(m => m.OrderId).Distinct().Count());
        Assert.All(matches.Where(m => winners.Contains(m.OrderId)), m =>
            Assert.Equal((onDemandOffer.OfferId, 1, 235L, "on_demand", model + "/cn", (long?)null),
                (m.OfferId, m.AcceleratorCount, m.PriceAmount, m.OrderType, m.Market, m.BidAmount)));
        Assert.All(matches.Where(m => spot.Contains(m.OrderId)), m =>
            Assert.Equal((spotOffer.OfferId, "interruptible", (long?)150), (m.OfferId, m.OrderType, m.BidAmount)));
        Assert.Equal(winners.Concat(spot).OrderBy(x => x), matches.Select(m => m.OrderId).OrderBy(x => x));

        var states = (await QueryAsync<(Guid Id, string Status, string? StatusReason, string[] Alternatives)>(
            "SELECT id, status, status_reason, alternatives FROM bidding.orders WHERE id = ANY(@ids)", new { ids })).ToDictionary(s => s.Id);
        foreach (var o in orders)
        {
            var s = states[o.Id];
            if (winners.Contains(o.Id) || spot.Contains(o.Id))
                Assert.Equal(("matched", (string?)null, 0), (s.Status, s.StatusReason, s.Alternatives.Length));
            else
            {
                Assert.Equal(o.Tif == "ioc" ? "cancelled" : "open", s.Status);
                Assert.False(string.IsNullOrEmpty(s.StatusReason));
            }
        }
        // A resting order's alternatives, in Explanations' order: the spot offer's last accelerator at its ask, or later
        // on the on-demand offer when its first leases end.
        Assert.All(orders.Where(o => o.Type == "on_demand" && o.Tif == "gtc" && !winners.Contains(o.Id)), o =>
        {
            var alternatives = states[o.Id].Alternatives;
            Assert.Equal(2, alternatives.Length);
            Assert.StartsWith("raise max_price_per_hour to ", alternatives[0]);
            Assert.StartsWith("start later: 1 accelerators are free at your price from ", alternatives[1]);
        });

        // One OrderMatched per match, carrying that match's id and order (the outbox keeps rows until the relay publishes them).
        var events = await Eventually.Get(() => Task.FromResult<List<Marketplace.Contracts.OrderMatched>?>(fx.Relayed.Where(e => ids.Contains(e.OrderId)).ToList()),
            e => e.Count >= 34, what: "the batch's OrderMatched relayed");
        Assert.Equal(matches.Select(m => (m.Id, m.OrderId)).OrderBy(x => x.Id), events.Select(e => (e.MatchId, e.OrderId)).OrderBy(x => x.MatchId));

        // The market's tick after the batch: the best ask counts the batch's own fills (the on-demand offer is full, the
        // spot offer has one accelerator left at 9.00), the best bid is the highest resting on-demand order.
        var tick = await Eventually.Get(() => Task.FromResult(fx.Ticks.FirstOrDefault(t => t.Market == model + "/cn" && t.LastTrade is not null)),
            t => t is not null, what: "PriceTicked of the batch");
        Assert.Equal((900L, 309L), (tick!.BestAsk?.Amount, tick.BestBid?.Amount));

        // Every order's safety net is done: this clearing saw each of them.
        Assert.Equal(0L, await fx.ScalarAsync<long>(
            "SELECT count(*) FROM bidding.due_work WHERE kind = 'order.place' AND key = ANY(@keys) AND done_at IS NULL",
            new { keys = ids.Select(i => i.ToString()).ToArray() }));
    }

    private async Task<IEnumerable<T>> QueryAsync<T>(string sql, object args)
    {
        await using var db = fx.Database.OpenAdmin();
        return await db.QueryAsync<T>(sql, args);
    }
}
