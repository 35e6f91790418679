using System.Net;
using Xunit;
using static Marketplace.Bidding.Tests.Api.BiddingFixture;

namespace Marketplace.Bidding.Tests.Api;

/// <summary>
/// A retry with the same Idempotency-Key and the same body must get the order it placed, however late it comes. A reserved
/// order's earliest_start (or a gtt order's expires_at) was checked against the time of the retry, so a retry sent after
/// it got 400 "must not be in the past": the renter was told its order failed while it stood in the book (and may have
/// been filled), and a second order with a new key could book the capacity twice.
/// </summary>
public sealed class IdempotentRetryAfterTimeTests(BiddingFixture fx) : IClassFixture<BiddingFixture>
{
    [Fact]
    public async Task A_retry_of_a_reserved_order_after_its_earliest_start_returns_the_order_it_placed()
    {
        var model = NewModel();
        var renter = fx.Renter(Guid.NewGuid());
        var start = DateTimeOffset.UtcNow.AddSeconds(2);
        var body = OrderBody(model, type: "reserved", duration: 3600, earliestStart: start, latestEnd: start.AddHours(1));
        var key = Guid.NewGuid().ToString();
        var placed = await PostOrderAsync(renter, body, key);
        Assert.Equal(HttpStatusCode.Created, placed.StatusCode);
        var id = (await ReadAsync(placed)).GetProperty("id").GetString();
        while (DateTimeOffset.UtcNow <= start) await Task.Delay(100);

        var retry = await PostOrderAsync(renter, body, key);

        Assert.Equal(HttpStatusCode.OK, retry.StatusCode);
        Assert.Equal(id, (await ReadAsync(retry)).GetProperty("id").GetString());
        Assert.Equal(1, await fx.ScalarAsync<long>("SELECT count(*) FROM bidding.orders WHERE accelerator_model = @model", new { model }));
    }

    [Fact]
    public async Task A_retry_of_a_gtt_order_after_its_expiry_returns_the_order_it_placed_and_a_different_body_is_still_a_reused_key()
    {
        var model = NewModel();
        var renter = fx.Renter(Guid.NewGuid());
        var expires = DateTimeOffset.UtcNow.AddSeconds(2);
        var key = Guid.NewGuid().ToString();
        var placed = await PostOrderAsync(renter, OrderBody(model, timeInForce: "gtt", expiresAt: expires), key);
        Assert.Equal(HttpStatusCode.Created, placed.StatusCode);
        var id = (await ReadAsync(placed)).GetProperty("id").GetString();
        while (DateTimeOffset.UtcNow <= expires) await Task.Delay(100);

        var retry = await PostOrderAsync(renter, OrderBody(model, timeInForce: "gtt", expiresAt: expires), key);
        Assert.Equal(HttpStatusCode.OK, retry.StatusCode);
        Assert.Equal(id, (await ReadAsync(retry)).GetProperty("id").GetString());

        var changed = await PostOrderAsync(renter, OrderBody(model, count: 2, timeInForce: "gtt", expiresAt: expires), key);
        Assert.Equal(HttpStatusCode.UnprocessableEntity, changed.StatusCode);
        Assert.EndsWith("/idempotency-key-reused", (await ReadAsync(changed)).GetProperty("type").GetString(), StringComparison.Ordinal);
    }
}
