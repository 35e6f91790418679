using System.Net;
using Dapper;
using Marketplace.Testing;
using static Marketplace.Bidding.Tests.Api.BiddingFixture;

namespace Marketplace.Bidding.Tests.Api;

/// <summary>POST /v1/orders accepts in a short transaction and clears in batches; due work clears what no batch did.</summary>
public sealed class PlacementIntakeTests(BiddingFixture fx) : IClassFixture<BiddingFixture>
{
    [Fact]
    public async Task An_accepted_order_that_no_batch_cleared_is_cleared_by_due_work()
    {
        // As if the instance that accepted it had stopped right after the commit: the order is in the book, unseen.
        var model = NewModel();
        var offer = await fx.PublishOfferAsync(model, count: 2);
        var org = Guid.NewGuid();
        var id = Guid.NewGuid();
        await using (var db = fx.Database.OpenAdmin())
        {
            await db.ExecuteAsync("""
                INSERT INTO bidding.orders (id, renter_org_id, idempotency_key, request_hash, type, time_in_force, status, accelerator_model,
                                            accelerator_count, duration_seconds, max_price_amount, max_price_currency, created_at,
                                            updated_at, priority_at)
                VALUES (@id, @org, 'k', 'h', 'on_demand', 'ioc', 'open', @model, 2, 3600, 300, 'CNY', now(), now(), now());
                INSERT INTO bidding.due_work (kind, key, due_at) VALUES ('order.place', @id::text, now());
                """, new { id, org, model });
        }

        var order = await Eventually.Get(() => GetOrderAsync(fx.Renter(org), id.ToString()),
            o => o.GetProperty("status").GetString() != "open", what: "due work to clear the order");

        Assert.Equal("matched", order.GetProperty("status").GetString());
        Assert.Equal(offer.OfferId.ToString(), order.GetProperty("match").GetProperty("offer_id").GetString());
    }

    [Fact]
    public async Task Many_orders_placed_at_once_each_answer_with_their_cleared_state_and_never_oversell()
    {
        var model = NewModel();
        var offer = await fx.PublishOfferAsync(model, count: 30);

        var responses = await Task.WhenAll(Enumerable.Range(0, 60).Select(i =>
            PostOrderAsync(fx.Renter(Guid.NewGuid()), OrderBody(model, count: 1, max: 300 + i, timeInForce: i % 2 == 0 ? "ioc" : "gtc"))));

        Assert.All(responses, r => Assert.Equal(HttpStatusCode.Created, r.StatusCode));
        var orders = await Task.WhenAll(responses.Select(ReadAsync));
        // Every answer is the order after its clearing: matched, resting with a reason, or an ioc cancelled with one.
        Assert.All(orders, o => Assert.True(o.GetProperty("status").GetString() == "matched"
                                            || o.GetProperty("status_reason").GetString() is { Length: > 0 }, o.ToString()));
        Assert.Equal(30, orders.Count(o => o.GetProperty("status").GetString() == "matched"));
        Assert.Equal(30L, await fx.ScalarAsync<long>(
            "SELECT coalesce(sum(accelerator_count), 0) FROM bidding.matches WHERE offer_id = @id AND state = 'active'", new { id = offer.OfferId }));
        Assert.All(orders.Where(o => o.GetProperty("status").GetString() != "matched" && o.GetProperty("time_in_force").GetString() == "ioc"),
            o => Assert.Equal("cancelled", o.GetProperty("status").GetString()));
    }
}
