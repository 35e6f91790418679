using System.Net;
using System.Text.Json;
using Marketplace.Testing;
using static Marketplace.Bidding.Tests.Api.BiddingFixture;

namespace Marketplace.Bidding.Tests.Api;

public sealed class MarketDataAndInstancesTests(BiddingFixture fx) : IClassFixture<BiddingFixture>
{
    [Fact]
    public async Task Prices_depth_and_history_show_the_market_by_region_group()
    {
        var model = NewModel();
        await fx.PublishOfferAsync(model, ask: 200, count: 4, region: "cn-east");
        await fx.PublishOfferAsync(model, ask: 260, count: 6, region: "cn-north");
        await fx.PublishOfferAsync(model, ask: 150, count: 4, region: "eu-west", jurisdiction: "EU");
        var renter = fx.Renter(Guid.NewGuid());
        // 2 × 1 h at 2.00 and 2 × 3 h at 2.00, then 4 × 1 h at 2.60: VWAP = (200·2 + 200·6 + 260·4) / 12 = 220.
        Assert.Equal("matched", (await ReadAsync(await PostOrderAsync(renter, OrderBody(model, count: 2, region: "cn-east")))).GetProperty("status").GetString());
        Assert.Equal("matched", (await ReadAsync(await PostOrderAsync(renter, OrderBody(model, count: 2, region: "cn-east", duration: 10800)))).GetProperty("status").GetString());
        Assert.Equal("matched", (await ReadAsync(await PostOrderAsync(renter, OrderBody(model, count: 4, region: "cn-north")))).GetProperty("status").GetString());
        var resting = await ReadAsync(await PostOrderAsync(renter, OrderBody(model, count: 3, max: 180, region: "cn-east")));
        Assert.Equal("open", resting.GetProperty("status").GetString());

        var prices = await ReadAsync(await renter.GetAsync($"/v1/market/{model}/prices?region=cn"));
        Assert.Equal($"{model}/cn", prices.GetProperty("market").GetString());
        Assert.Equal(260, prices.GetProperty("last_trade").GetProperty("price_per_hour").GetProperty("amount").GetInt64());
        Assert.Equal(180, prices.GetProperty("best_bid").GetProperty("amount").GetInt64());
        Assert.Equal(260, prices.GetProperty("best_ask").GetProperty("amount").GetInt64());   // cn-east is sold out now, cn-north has 2 left
        Assert.Equal(220, prices.GetProperty("vwap_1h").GetProperty("amount").GetInt64());
        var eu = await ReadAsync(await renter.GetAsync($"/v1/market/{model}/prices?region=eu-west"));
        Assert.Equal(150, eu.GetProperty("best_ask").GetProperty("amount").GetInt64());
        Assert.Equal(JsonValueKind.Null, eu.GetProperty("last_trade").ValueKind);

        var depth = await ReadAsync(await renter.GetAsync($"/v1/market/{model}/depth?region=cn"));
        var asks = depth.GetProperty("asks");
        Assert.Equal(1, asks.GetArrayLength());   // cn-east is sold out for the next hour
        Assert.Equal(260, asks[0].GetProperty("price_per_hour").GetProperty("amount").GetInt64());
        Assert.Equal(2, asks[0].GetProperty("accelerators").GetInt32());
        Assert.Equal(180, depth.GetProperty("bids")[0].GetProperty("price_per_hour").GetProperty("amount").GetInt64());
        Assert.Equal(3, depth.GetProperty("bids")[0].GetProperty("accelerators").GetInt32());
        var later = await ReadAsync(await renter.GetAsync(
            $"/v1/market/{model}/depth?region=cn&window_start={Uri.EscapeDataString(DateTimeOffset.UtcNow.AddHours(4).ToString("O"))}"));
        Assert.Equal(10, later.GetProperty("asks").EnumerateArray().Sum(a => a.GetProperty("accelerators").GetInt32()));

        var history = await ReadAsync(await renter.GetAsync($"/v1/market/{model}/history?region=cn&limit=2"));
        Assert.Equal(2, history.GetProperty("data").GetArrayLength());
        Assert.Equal(260, history.GetProperty("data")[0].GetProperty("price_per_hour").GetProperty("amount").GetInt64());
        var next = history.GetProperty("next_cursor").GetString();
        var page2 = await ReadAsync(await renter.GetAsync($"/v1/market/{model}/history?region=cn&limit=2&cursor={next}"));
        Assert.Equal(1, page2.GetProperty("data").GetArrayLength());
        Assert.Equal(JsonValueKind.Null, page2.GetProperty("next_cursor").ValueKind);
        Assert.Equal(12m, history.GetProperty("hourly").EnumerateArray().Sum(h => h.GetProperty("accelerator_hours").GetDecimal()));

        await Eventually.True(() => Task.FromResult(fx.Ticks.Any(t => t.Market == $"{model}/cn" && t.LastTrade?.Amount == 260)),
            what: "PriceTicked for the trade");
        Assert.Equal(HttpStatusCode.BadRequest, (await renter.GetAsync($"/v1/market/{model}/history?limit=0")).StatusCode);
    }

    [Fact]
    public async Task Two_instances_clearing_one_market_at_once_never_sell_capacity_twice()
    {
        var model = NewModel();
        await using var second = new ServiceFactory<Program>("bidding", fx.Database, fx.VirtualHost,
            settings: new Dictionary<string, string?> { ["Market:MinLeaseSeconds"] = "60" });
        var health = second.CreateClient();
        await Eventually.True(async () => (await health.GetAsync("/health/ready")).IsSuccessStatusCode, what: "second instance ready");
        var clients = new[] { fx.Factory, second };

        // Standing orders first (some without a region, some pinned), then offers arrive while more orders are placed
        // through both instances: standing-book clearings and placements race on the same market.
        var standing = await Task.WhenAll(Enumerable.Range(0, 10).Select(i =>
            PostOrderAsync(clients[i % 2].ClientFor(Guid.NewGuid(), "renter"), OrderBody(model, count: 2, region: i % 3 == 0 ? null : "cn-east"))));
        Assert.All(standing, r => Assert.Equal(HttpStatusCode.Created, r.StatusCode));
        var offers = Task.WhenAll(Enumerable.Range(0, 3).Select(_ => fx.PublishOfferAsync(model, count: 4)));
        var placed = await Task.WhenAll(Enumerable.Range(0, 20).Select(i =>
            PostOrderAsync(clients[i % 2].ClientFor(Guid.NewGuid(), "renter"), OrderBody(model, count: 1 + i % 2, region: i % 4 == 0 ? null : "cn-east"))));
        await offers;
        Assert.All(placed, r => Assert.Equal(HttpStatusCode.Created, r.StatusCode));

        Assert.Equal(0L, await fx.ScalarAsync<long>("""
            SELECT count(*) FROM bidding.offers o
            WHERE o.accelerator_model = @model
              AND (SELECT coalesce(sum(accelerator_count), 0) FROM bidding.matches m WHERE m.offer_id = o.offer_id AND m.state = 'active')
                  > o.accelerator_count
            """, new { model }));
        // Each offer's clearing commits with its copy, so everything has cleared by now; demand (50) far exceeds supply (12).
        Assert.InRange(await fx.ScalarAsync<long>("""
            SELECT coalesce(sum(m.accelerator_count), 0) FROM bidding.matches m JOIN bidding.orders o ON o.id = m.order_id
            WHERE o.accelerator_model = @model AND m.state = 'active'
            """, new { model }), 10L, 12L);
        Assert.Equal(0L, await fx.ScalarAsync<long>("""
            SELECT count(*) FROM (SELECT order_id FROM bidding.matches m JOIN bidding.orders o ON o.id = m.order_id
                                  WHERE o.accelerator_model = @model GROUP BY order_id HAVING count(*) > 1) twice
            """, new { model }));
    }
}
