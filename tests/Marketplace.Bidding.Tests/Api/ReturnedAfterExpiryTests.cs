using System.Text.Json;
using Marketplace.Contracts;
using Marketplace.Testing;
using Xunit;
using static Marketplace.Bidding.Tests.Api.BiddingFixture;

namespace Marketplace.Bidding.Tests.Api;

/// <summary>
/// A gtt order matched before its expires_at whose match Scheduling refuses after it: the order's expiry had already
/// come and gone while it was matched (order.expire leaves a matched order alone), so going back to the book made it a
/// gtc order that never left the book, and the next clearing could fill it after the renter's deadline.
/// </summary>
public sealed class ReturnedAfterExpiryTests(BiddingFixture fx) : IClassFixture<BiddingFixture>
{
    [Fact]
    public async Task A_gtt_order_whose_match_is_refused_after_its_expiry_is_cancelled_as_expired_not_returned_to_the_book()
    {
        var model = NewModel();
        await fx.PublishOfferAsync(model, count: 1);
        var renter = fx.Renter(Guid.NewGuid());
        var expiresAt = DateTimeOffset.UtcNow.AddSeconds(2);
        var order = await ReadAsync(await PostOrderAsync(renter, OrderBody(model, timeInForce: "gtt", expiresAt: expiresAt)));
        var id = Guid.Parse(order.GetProperty("id").GetString()!);
        Assert.Equal("matched", order.GetProperty("status").GetString());
        var ended = await RefusedAfterItsExpiryAsync(renter, id);
        Assert.Equal("cancelled", ended.GetProperty("status").GetString());
        Assert.StartsWith("expired: good-til-time ended at", ended.GetProperty("status_reason").GetString(), StringComparison.Ordinal);
        Assert.Contains("node n1 is unhealthy", ended.GetProperty("status_reason").GetString(), StringComparison.Ordinal);

        // The capacity the refusal freed goes to the next order, never to the expired one.
        await fx.PublishOfferAsync(model, count: 1);
        Assert.Equal("cancelled", (await GetOrderAsync(renter, id.ToString())).GetProperty("status").GetString());
        Assert.Equal(1, await fx.ScalarAsync<long>("SELECT count(*) FROM bidding.matches WHERE order_id = @id", new { id }));
    }

    [Fact]
    public async Task A_reserved_order_whose_match_is_refused_after_its_latest_start_is_cancelled_as_its_window_passed()
    {
        var model = NewModel();
        await fx.PublishOfferAsync(model, count: 1);
        var renter = fx.Renter(Guid.NewGuid());
        var start = DateTimeOffset.UtcNow.AddSeconds(2);
        var (id, order) = await ReservedAsync(renter, model, start, start.AddSeconds(60)); // a fixed window: its latest start is start
        Assert.Equal("matched", order.GetProperty("status").GetString());
        var ended = await RefusedAfterItsExpiryAsync(renter, id);
        Assert.Equal("cancelled", ended.GetProperty("status").GetString());
        Assert.StartsWith("the window has passed", ended.GetProperty("status_reason").GetString(), StringComparison.Ordinal);
    }

    /// <summary>
    /// Lets the order's expiry run while it is matched (its due work finds it matched and leaves it), then has Scheduling
    /// refuse the match; returns the order once the refusal is handled.
    /// </summary>
    private async Task<JsonElement> RefusedAfterItsExpiryAsync(HttpClient renter, Guid id)
    {
        var matchId = await fx.ScalarAsync<Guid>("SELECT id FROM bidding.matches WHERE order_id = @id", new { id });
        await Eventually.True(() => fx.ScalarAsync<bool>(
            "SELECT done_at IS NOT NULL FROM bidding.due_work WHERE kind = 'order.expire' AND key = @key", new { key = id.ToString() }),
            what: "the order's expiry to have run while it was matched");
        await fx.Bus.Publish(new PlacementFailed(matchId, id, "node n1 is unhealthy", DateTimeOffset.UtcNow));
        return await Eventually.Get(() => GetOrderAsync(renter, id.ToString()),
            o => o.GetProperty("status").GetString() != "matched", what: "the refusal to be handled");
    }
}
