using System.Text.Json;
using Marketplace.Contracts;
using Marketplace.Testing;
using Xunit;
using static Marketplace.Bidding.Tests.Api.BiddingFixture;

namespace Marketplace.Bidding.Tests.Api;

/// <summary>
/// Known issue 8 through Bidding's API and bus: once Scheduling said which accelerators a lease holds (LeaseScheduled),
/// Bidding sells only accelerators free for an order's whole window, so it no longer makes a match Scheduling must refuse
/// ("only 0 of 1 … slots are free"), and it still sells a window in which an accelerator is free.
/// </summary>
public sealed class WholeWindowCapacityApiTests(BiddingFixture fx) : IClassFixture<BiddingFixture>
{
    private static readonly Guid GpuA = Guid.NewGuid(), GpuB = Guid.NewGuid();

    /// <summary>Plays Scheduling: the match is booked on <paramref name="gpu"/>.</summary>
    private async Task PlaceAsync(HttpClient renter, Guid renterOrg, OfferPublished offer, string model, Guid orderId, Guid gpu)
    {
        var match = await fx.ScalarAsync<Guid>("SELECT id FROM bidding.matches WHERE order_id = @orderId", new { orderId });
        var (start, end) = await Eventually.Get(async () =>
        {
            await using var c = fx.Database.OpenAdmin();
            return await Dapper.SqlMapper.QuerySingleAsync<(DateTime, DateTime)>(c,
                "SELECT start_at, end_at FROM bidding.matches WHERE id = @match", new { match });
        }, _ => true, what: "the match");
        await fx.Bus.Publish(new LeaseScheduled(Guid.NewGuid(), orderId, match, renterOrg, offer.ProviderOrgId, model, 1,
            new DateTimeOffset(DateTime.SpecifyKind(start, DateTimeKind.Utc)), new DateTimeOffset(DateTime.SpecifyKind(end, DateTimeKind.Utc)),
            new Money(235, "CNY"), [gpu], DateTimeOffset.UtcNow));
        await Eventually.Get(() => GetOrderAsync(renter, orderId.ToString()), o => o.GetProperty("status").GetString() == "filled",
            what: $"order {orderId} filled");
    }

    [Fact]
    public async Task A_window_with_no_accelerator_free_throughout_is_not_matched_and_a_free_window_still_is()
    {
        var model = NewModel();
        var offer = await fx.PublishOfferAsync(model, count: 2);
        var renterOrg = Guid.NewGuid();
        var renter = fx.Renter(renterOrg);
        var s = new DateTimeOffset(DateTimeOffset.UtcNow.AddMinutes(10).Ticks / TimeSpan.TicksPerMinute * TimeSpan.TicksPerMinute, TimeSpan.Zero);

        // GPU B is booked from s to s+20 min, GPU A from s+30 to s+60 min.
        var (early, earlyOrder) = await ReservedAsync(renter, model, s, s.AddMinutes(20));
        var (late, lateOrder) = await ReservedAsync(renter, model, s.AddMinutes(30), s.AddMinutes(60));
        Assert.Equal("matched", earlyOrder.GetProperty("status").GetString());
        Assert.Equal("matched", lateOrder.GetProperty("status").GetString());
        await PlaceAsync(renter, renterOrg, offer, model, early, GpuB);
        await PlaceAsync(renter, renterOrg, offer, model, late, GpuA);
        Assert.Equal(1, await fx.ScalarAsync<long>(
            "SELECT count(*) FROM bidding.matches WHERE order_id = @late AND slot_ids = @slots", new { late, slots = new[] { GpuA } }));

        // s+10 to s+40 min: one GPU is free at every instant, but neither for all 30 minutes.
        var (straddling, straddlingOrder) = await ReservedAsync(renter, model, s.AddMinutes(10), s.AddMinutes(40));
        Assert.Equal("open", straddlingOrder.GetProperty("status").GetString());
        Assert.Contains("the most free in one offer is 0", straddlingOrder.GetProperty("status_reason").GetString());
        Assert.Equal(0, await fx.ScalarAsync<long>("SELECT count(*) FROM bidding.matches WHERE order_id = @straddling", new { straddling }));

        // s+20 to s+30 min both GPUs are free: a gang of two is sold.
        var gang = await ReadAsync(await PostOrderAsync(renter, OrderBody(model, count: 2, type: "reserved", duration: 600,
            earliestStart: s.AddMinutes(20), latestEnd: s.AddMinutes(30))));
        Assert.Equal("matched", gang.GetProperty("status").GetString());
        // Nothing was relayed for the straddling order.
        await Eventually.True(() => Task.FromResult(fx.Relayed.Any(m => m.OrderId.ToString() == gang.GetProperty("id").GetString())),
            what: "the gang's OrderMatched");
        Assert.DoesNotContain(fx.Relayed, m => m.OrderId == straddling);
    }
}
