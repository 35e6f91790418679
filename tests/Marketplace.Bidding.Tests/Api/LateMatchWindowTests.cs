using Marketplace.Contracts;
using Marketplace.Testing;
using Xunit;
using static Marketplace.Bidding.Tests.Api.BiddingFixture;

namespace Marketplace.Bidding.Tests.Api;

/// <summary>
/// A late on-demand match runs in a window Scheduling re-anchored at placement (known issue 9): the match then holds the
/// offer's capacity over the lease's window, as LeaseScheduled states it, so Bidding does not sell that time twice.
/// </summary>
public sealed class LateMatchWindowTests(BiddingFixture fx) : IClassFixture<BiddingFixture>
{
    private sealed record Window(DateTime StartAt, DateTime EndAt);

    private Task<Window> WindowAsync(Guid matchId) => Eventually.Get(async () =>
    {
        await using var c = fx.Database.OpenAdmin();
        return await Dapper.SqlMapper.QuerySingleAsync<Window>(c,
            "SELECT start_at AS StartAt, end_at AS EndAt FROM bidding.matches WHERE id = @matchId", new { matchId });
    }, _ => true, what: "the match");

    [Fact]
    public async Task A_late_match_moves_its_capacity_to_the_lease_s_window()
    {
        var model = NewModel();
        var offer = await fx.PublishOfferAsync(model, count: 1);
        var renterOrg = Guid.NewGuid();
        var renter = fx.Renter(renterOrg);
        var order = await ReadAsync(await PostOrderAsync(renter, OrderBody(model, duration: 600)));
        var id = Guid.Parse(order.GetProperty("id").GetString()!);
        var matchId = await fx.ScalarAsync<Guid>("SELECT id FROM bidding.matches WHERE order_id = @id", new { id });
        var matched = await WindowAsync(matchId);

        // Scheduling placed it 25 s after the match's start: it runs the ordered 600 s from then.
        var start = new DateTimeOffset(DateTime.SpecifyKind(matched.StartAt, DateTimeKind.Utc)).AddSeconds(25);
        await fx.Bus.Publish(new LeaseScheduled(Guid.NewGuid(), id, matchId, renterOrg, offer.ProviderOrgId, model, 1, start,
            start.AddSeconds(600), new Money(235, "CNY"), [Guid.NewGuid()], DateTimeOffset.UtcNow));
        await Eventually.Get(() => GetOrderAsync(renter, id.ToString()), o => o.GetProperty("status").GetString() == "filled", what: "filled");

        var moved = await WindowAsync(matchId);
        Assert.Equal((start.UtcDateTime, start.AddSeconds(600).UtcDateTime), (moved.StartAt, moved.EndAt));
    }
}
