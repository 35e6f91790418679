using System.Text.Json;
using Marketplace.Contracts;
using Marketplace.Testing;
using Xunit;
using static Marketplace.Bidding.Tests.Api.BiddingFixture;

namespace Marketplace.Bidding.Tests.Api;

/// <summary>
/// A standing order that found every accelerator booked is filled when a booking ends, with no other order or offer
/// coming to its market (due work "market.clear"); one that waits for a price is not cleared again for nothing.
/// </summary>
public sealed class WaitingOrdersTests(BiddingFixture fx) : IClassFixture<BiddingFixture>
{
    private const string DueClear = "SELECT due_at FROM bidding.due_work WHERE kind = 'market.clear' AND key = @key AND done_at IS NULL";

    private sealed record Waiting(string Model, HttpClient Renter, DateTimeOffset FreeAt, string Id, JsonElement Order)
    {
        public object Market => new { key = $"{Model}/cn" };
    }

    /// <summary>
    /// A one-accelerator offer (at <paramref name="ask"/>) booked by a first order whose match ends <paramref name="endsIn"/>
    /// from now (a short lease), and a second gtc order (at most <paramref name="max"/>) left open.
    /// </summary>
    private async Task<Waiting> WaitingOrderAsync(TimeSpan endsIn, long ask = 235, long max = 300)
    {
        var model = NewModel();
        await fx.PublishOfferAsync(model, ask: ask, count: 1);
        var renter = fx.Renter(Guid.NewGuid());
        var first = await ReadAsync(await PostOrderAsync(renter, OrderBody(model, max: Math.Max(ask, max))));
        Assert.Equal("matched", first.GetProperty("status").GetString());
        var freeAt = await fx.ScalarAsync<DateTimeOffset>("""
            UPDATE bidding.matches SET end_at = now() + @endsIn WHERE order_id = @id RETURNING end_at
            """, new { id = Guid.Parse(first.GetProperty("id").GetString()!), endsIn });
        var order = await ReadAsync(await PostOrderAsync(renter, OrderBody(model, max: max)));
        Assert.Equal("open", order.GetProperty("status").GetString());
        return new Waiting(model, renter, freeAt, order.GetProperty("id").GetString()!, order);
    }

    /// <summary>A gtc order matched on a one-accelerator offer, and its match (not yet placed by Scheduling).</summary>
    private async Task<(string Model, HttpClient Renter, Guid OrderId, Guid MatchId)> MatchedOrderAsync()
    {
        var model = NewModel();
        await fx.PublishOfferAsync(model, count: 1);
        var renter = fx.Renter(Guid.NewGuid());
        var order = await ReadAsync(await PostOrderAsync(renter, OrderBody(model)));
        Assert.Equal("matched", order.GetProperty("status").GetString());
        var id = Guid.Parse(order.GetProperty("id").GetString()!);
        return (model, renter, id, await fx.ScalarAsync<Guid>("SELECT id FROM bidding.matches WHERE order_id = @id", new { id }));
    }

    private Task<long> ClearsScheduledAsync(Waiting w) =>
        fx.ScalarAsync<long>("SELECT count(*) FROM bidding.due_work WHERE kind = 'market.clear' AND key = @key AND done_at IS NULL", w.Market);

    private Task<JsonElement> MatchedAsync(Waiting w, string what) =>
        Eventually.Get(() => GetOrderAsync(w.Renter, w.Id), o => o.GetProperty("status").GetString() == "matched", what: what);

    [Fact]
    public async Task An_order_waiting_for_capacity_is_filled_when_a_booking_ends_without_another_order()
    {
        var w = await WaitingOrderAsync(TimeSpan.FromSeconds(3));

        Assert.Contains("the most free in one offer is 0", w.Order.GetProperty("status_reason").GetString());
        // Its market is cleared again when the booking ends.
        Assert.Equal(w.FreeAt, await fx.ScalarAsync<DateTimeOffset>(DueClear, w.Market), TimeSpan.FromMilliseconds(1));

        var filled = await MatchedAsync(w, "the waiting order matched once the booking ended");
        Assert.True(filled.GetProperty("match").GetProperty("start").GetDateTimeOffset() >= w.FreeAt);
        await Eventually.True(() => Task.FromResult(fx.Relayed.Any(m => m.OrderId.ToString() == w.Id)), what: "OrderMatched relayed");
        // Nothing waits any more: no clearing is left scheduled.
        Assert.Equal(0L, await ClearsScheduledAsync(w));
    }

    [Fact]
    public async Task An_order_waiting_for_a_price_is_not_cleared_again_when_a_booking_ends()
    {
        var w = await WaitingOrderAsync(TimeSpan.FromSeconds(3), ask: 250, max: 200);

        // Its reason names the first obstacle, the booked accelerator; but free, it would still cost more than 2.00 CNY/h.
        Assert.Contains("1 accelerators", w.Order.GetProperty("status_reason").GetString());
        Assert.Equal(0L, await fx.ScalarAsync<long>("SELECT count(*) FROM bidding.due_work WHERE kind = 'market.clear' AND key = @key", w.Market));
    }

    [Fact]
    public async Task A_market_another_transaction_is_clearing_is_waited_for_briefly_then_tried_again()
    {
        var w = await WaitingOrderAsync(TimeSpan.FromSeconds(2));

        // Hold the market's lock, as a long clearing would, past the time the booking ends.
        await using (var admin = fx.Database.OpenAdmin())
        {
            await using var tx = await admin.BeginTransactionAsync();
            await using (var lockCommand = new Npgsql.NpgsqlCommand("SELECT pg_advisory_xact_lock(4202, hashtext(@market))", admin, tx))
            {
                lockCommand.Parameters.AddWithValue("market", $"{w.Model}/cn");
                await lockCommand.ExecuteNonQueryAsync();
            }
            await Task.Delay(w.FreeAt - DateTimeOffset.UtcNow + TimeSpan.FromSeconds(1));
            // The item keeps coming back but never sits on its row waiting for the market: the lock's holder, a clearing
            // that schedules this item, gets the row (here: a row lock without waiting, from a third connection).
            await Eventually.True(async () =>
            {
                await using var probe = fx.Database.OpenAdmin();
                await using var probeTx = await probe.BeginTransactionAsync();
                await using var nowait = new Npgsql.NpgsqlCommand(
                    "SELECT id FROM bidding.due_work WHERE kind = 'market.clear' AND key = @key AND done_at IS NULL FOR UPDATE NOWAIT", probe, probeTx);
                nowait.Parameters.AddWithValue("key", $"{w.Model}/cn");
                try { return await nowait.ExecuteScalarAsync() is long; }
                catch (Npgsql.PostgresException e) when (e.SqlState == Npgsql.PostgresErrorCodes.LockNotAvailable) { return false; }
            }, timeout: TimeSpan.FromSeconds(15), // less than a command's 30 s timeout, which would free a waiting item too
                what: "the pending item's row free while the market is locked");
            Assert.Equal("open", (await GetOrderAsync(w.Renter, w.Id)).GetProperty("status").GetString());
            await tx.RollbackAsync();
        }

        await MatchedAsync(w, "the waiting order matched once the market was free");
    }

    [Fact]
    public async Task An_order_whose_match_Scheduling_could_not_place_is_tried_again_a_moment_later()
    {
        var (_, renter, id, first) = await MatchedOrderAsync();

        await fx.Bus.Publish(new PlacementFailed(first, id, "only 0 of 1 slots are free on the offered nodes", DateTimeOffset.UtcNow)
        {
            SlotsBooked = true,
        });

        // Back in the book with Scheduling's reason, and about a second later matched again with no other order placed.
        await Eventually.True(async () => await fx.ScalarAsync<string>("SELECT state FROM bidding.matches WHERE id = @first", new { first }) == "released",
            what: "the refused match released");
        var again = await Eventually.Get(() => GetOrderAsync(renter, id.ToString()),
            o => o.GetProperty("status").GetString() == "matched", what: "the order matched again");
        Assert.Equal(JsonValueKind.Object, again.GetProperty("match").ValueKind);
        Assert.NotEqual(first, await fx.ScalarAsync<Guid>("SELECT id FROM bidding.matches WHERE order_id = @id AND state = 'active'", new { id }));
        await Eventually.True(() => Task.FromResult(fx.Relayed.Count(m => m.OrderId == id) == 2), what: "a second OrderMatched relayed");
        Assert.Equal(2L, await fx.ScalarAsync<long>("SELECT count(*) FROM bidding.matches WHERE order_id = @id", new { id }));
    }

    [Fact]
    public async Task An_order_refused_for_a_reason_Bidding_cannot_see_is_not_cleared_again_on_a_timer()
    {
        var (model, renter, id, first) = await MatchedOrderAsync();

        // An unverified node: every match on this offer would be refused the same way until the node is verified.
        await fx.Bus.Publish(new PlacementFailed(first, id,
            "only 0 of 1 slots are free on the offered nodes; of the offered nodes, 1 is unverified", DateTimeOffset.UtcNow));

        var reopened = await Eventually.Get(() => GetOrderAsync(renter, id.ToString()),
            o => o.GetProperty("status").GetString() == "open", what: "the order back in the book");
        Assert.Contains("1 is unverified; back in the book", reopened.GetProperty("status_reason").GetString());
        // Released and sent back in one transaction, with no clearing scheduled: it waits for the market's next order or offer.
        Assert.Equal(0L, await fx.ScalarAsync<long>("SELECT count(*) FROM bidding.due_work WHERE kind = 'market.clear' AND key = @key",
            new { key = $"{model}/cn" }));
        Assert.Equal(1L, await fx.ScalarAsync<long>("SELECT count(*) FROM bidding.matches WHERE order_id = @id", new { id }));
    }
}
