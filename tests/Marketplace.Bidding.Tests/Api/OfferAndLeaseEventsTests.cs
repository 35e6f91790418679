using Marketplace.Contracts;
using Marketplace.Testing;
using static Marketplace.Bidding.Tests.Api.BiddingFixture;

namespace Marketplace.Bidding.Tests.Api;

public sealed class OfferAndLeaseEventsTests(BiddingFixture fx) : IClassFixture<BiddingFixture>
{
    [Fact]
    public async Task A_withdrawn_offer_takes_no_new_orders()
    {
        var model = NewModel();
        var offer = await fx.PublishOfferAsync(model);
        await fx.Bus.Publish(new OfferWithdrawn(offer.OfferId, offer.ProviderOrgId, DateTimeOffset.UtcNow));
        await Eventually.True(async () => await fx.ScalarAsync<string>(
            "SELECT status FROM bidding.offers WHERE offer_id = @id", new { id = offer.OfferId }) == "withdrawn", what: "offer withdrawn");

        var order = await ReadAsync(await PostOrderAsync(fx.Renter(Guid.NewGuid()), OrderBody(model)));

        Assert.Equal("open", order.GetProperty("status").GetString());
        Assert.Equal($"no {model} offer is listed at the moment", order.GetProperty("status_reason").GetString());
    }

    [Fact]
    public async Task A_withdrawal_that_overtakes_its_publication_still_wins()
    {
        var model = NewModel();
        var offerId = Guid.NewGuid();
        await fx.Bus.Publish(new OfferWithdrawn(offerId, Guid.NewGuid(), DateTimeOffset.UtcNow));
        await Eventually.True(async () => await fx.ScalarAsync<long>(
            "SELECT count(*) FROM bidding.offer_withdrawals WHERE offer_id = @offerId", new { offerId }) == 1, what: "withdrawal noted");
        var now = DateTimeOffset.UtcNow;
        await fx.Bus.Publish(new OfferPublished(offerId, Guid.NewGuid(), Guid.NewGuid(), [Guid.NewGuid()], model, "cn-east", "CN", 8,
            now.AddHours(-1), now.AddDays(1), new Money(100, "CNY"), 60, false, now));

        var status = await Eventually.Get<string>(async () => await fx.ScalarAsync<string>(
            "SELECT coalesce((SELECT status FROM bidding.offers WHERE offer_id = @offerId), '')", new { offerId }), s => s != "", what: "offer copied");
        Assert.Equal("withdrawn", status);
    }

    [Fact]
    public async Task A_lease_cancelled_early_gives_its_capacity_back()
    {
        var model = NewModel();
        await fx.PublishOfferAsync(model, count: 1);
        var renter = fx.Renter(Guid.NewGuid());
        var first = await ReadAsync(await PostOrderAsync(renter, OrderBody(model)));
        var id = Guid.Parse(first.GetProperty("id").GetString()!);
        var blocked = await ReadAsync(await PostOrderAsync(renter, OrderBody(model, timeInForce: "ioc")));
        Assert.Equal("cancelled", blocked.GetProperty("status").GetString());
        Assert.Contains("the most free in one offer is 0", blocked.GetProperty("status_reason").GetString());

        await fx.Bus.Publish(new LeaseEnded(Guid.NewGuid(), id, "cancelled", "cancelled by the renter", "renter", DateTimeOffset.UtcNow));
        await Eventually.True(async () => await fx.ScalarAsync<bool>(
            "SELECT end_at <= now() FROM bidding.matches WHERE order_id = @id", new { id }), what: "match shortened");

        var next = await ReadAsync(await PostOrderAsync(renter, OrderBody(model, timeInForce: "ioc")));
        Assert.Equal("matched", next.GetProperty("status").GetString());
    }
}
