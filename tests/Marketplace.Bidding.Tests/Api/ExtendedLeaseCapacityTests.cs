using Marketplace.Contracts;
using Marketplace.Testing;
using Xunit;
using static Marketplace.Bidding.Tests.Api.BiddingFixture;

namespace Marketplace.Bidding.Tests.Api;

/// <summary>
/// A lease extended in Scheduling keeps its accelerators to the new end. Bidding did not hear of it (nothing consumed
/// LeaseExtended), so it sold those accelerators again after the old end: every such match was refused by Scheduling
/// ("only 0 of 1 … slots are free") and retried on the same offer until the extension ended, while the renter's order
/// could have been filled elsewhere.
/// </summary>
public sealed class ExtendedLeaseCapacityTests(BiddingFixture fx) : IClassFixture<BiddingFixture>
{
    [Fact]
    public async Task An_extended_lease_keeps_its_accelerators_out_of_the_book_until_its_new_end_and_a_rejected_extension_gives_them_back()
    {
        var model = NewModel();
        var offer = await fx.PublishOfferAsync(model, count: 1);
        var renterOrg = Guid.NewGuid();
        var renter = fx.Renter(renterOrg);
        var first = await ReadAsync(await PostOrderAsync(renter, OrderBody(model, count: 1, duration: 3600)));
        var orderId = Guid.Parse(first.GetProperty("id").GetString()!);
        Assert.Equal("matched", first.GetProperty("status").GetString());
        var matchId = await fx.ScalarAsync<Guid>("SELECT id FROM bidding.matches WHERE order_id = @orderId", new { orderId });
        var start = new DateTimeOffset(await fx.ScalarAsync<DateTime>("SELECT start_at FROM bidding.matches WHERE id = @matchId", new { matchId }), TimeSpan.Zero);
        var end = new DateTimeOffset(await fx.ScalarAsync<DateTime>("SELECT end_at FROM bidding.matches WHERE id = @matchId", new { matchId }), TimeSpan.Zero);
        var leaseId = Guid.NewGuid();
        await fx.Bus.Publish(new LeaseScheduled(leaseId, orderId, matchId, renterOrg, offer.ProviderOrgId, model, 1, start, end,
            new Money(235, "CNY"), [Guid.NewGuid()], DateTimeOffset.UtcNow));
        await Eventually.Get(() => GetOrderAsync(renter, orderId.ToString()), o => o.GetProperty("status").GetString() == "filled",
            what: "the first order filled");

        var newEnd = end.AddHours(2);
        await fx.Bus.Publish(new LeaseExtended(leaseId, orderId, end, newEnd, DateTimeOffset.UtcNow));
        await Eventually.True(async () => await fx.ScalarAsync<DateTime>(
            "SELECT end_at FROM bidding.matches WHERE id = @matchId", new { matchId }) == newEnd.UtcDateTime,
            what: "the match to hold its accelerators to the lease's new end");

        // The only accelerator is the extended lease's until newEnd: a reservation inside the extension is not sold it.
        var (reservedId, reserved) = await ReservedAsync(fx.Renter(Guid.NewGuid()), model, end.AddMinutes(30), end.AddMinutes(90));
        Assert.Equal("open", reserved.GetProperty("status").GetString());
        Assert.Equal(0, await fx.ScalarAsync<long>("SELECT count(*) FROM bidding.matches WHERE order_id = @reservedId", new { reservedId }));

        // Billing could not cover the extension: the lease ends at its old end again, and the accelerator is for sale from there.
        await fx.Bus.Publish(new ExtensionRejected(leaseId, orderId, end, "insufficient funds", DateTimeOffset.UtcNow));
        await Eventually.True(async () => await fx.ScalarAsync<long>(
            "SELECT count(*) FROM bidding.matches WHERE order_id = @reservedId AND state = 'active'", new { reservedId }) == 1,
            what: "the reservation filled once the extension was rejected");
        Assert.Equal(end.UtcDateTime, await fx.ScalarAsync<DateTime>("SELECT end_at FROM bidding.matches WHERE id = @matchId", new { matchId }));
    }
}
