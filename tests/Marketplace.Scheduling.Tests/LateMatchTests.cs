using System.Net.Http.Json;
using System.Text.Json;
using Marketplace.Contracts;

namespace Marketplace.Scheduling.Tests;

/// <summary>
/// A match or a lease start that reaches Scheduling only after the lease's window (the broker or Scheduling was down
/// meanwhile; found by the RabbitMQ and kill -9 fault scenarios): before, such a lease was booked in the past, its
/// activation failed for ever on an empty time range and its completion waited for the activation, so it stayed
/// "scheduled" for good with the renter's money held.
/// </summary>
public sealed class LateMatchTests(SchedulingFixture f) : IClassFixture<SchedulingFixture>
{
    [Fact]
    public async Task A_match_whose_window_ended_before_it_arrived_is_not_booked_and_fails_with_a_reason()
    {
        var provider = Guid.NewGuid();
        var node = await f.RegisterNodeAsync(provider, slots: 2);
        var end = f.Clock.GetUtcNow().AddSeconds(-1);
        var match = f.Match(Guid.NewGuid(), provider, [node.NodeId], 1, end.AddMinutes(-1), end);

        var failed = Assert.IsType<PlacementFailed>(await f.PlaceAsync(match));

        Assert.Contains("window ended", failed.Reason);
        Assert.Equal(0, await f.ScalarAsync<long>("SELECT count(*) FROM scheduling.leases WHERE order_id = @OrderId", match));
    }

    [Fact]
    public async Task A_lease_whose_start_is_handled_only_after_its_end_fails_without_running_instead_of_staying_scheduled()
    {
        var provider = Guid.NewGuid();
        var node = await f.RegisterNodeAsync(provider, slots: 1);
        var start = f.Clock.GetUtcNow().AddMinutes(1);
        var lease = await f.ScheduleAsync(f.Match(Guid.NewGuid(), provider, [node.NodeId], 1, start, start.AddMinutes(1)));

        // Scheduling "was down" for the whole window: the start and the end are both due when it runs again.
        await f.AdvanceAndRunAsync(TimeSpan.FromMinutes(3), async () => await f.StatusAsync(lease.LeaseId) != "scheduled");

        Assert.Equal("failed", await f.StatusAsync(lease.LeaseId));
        var ended = await f.EventAsync<LeaseEnded>(e => e.LeaseId == lease.LeaseId);
        Assert.Equal(("failed", "platform"), (ended.Status, ended.Cause));
        Assert.Contains("never ran", ended.Reason);
        Assert.True(ended.NeverRan); // Billing releases the renter's hold at once on this
        Assert.DoesNotContain(f.EventsOf<LeaseStarted>(), e => e.LeaseId == lease.LeaseId);
        Assert.Equal(0, await f.ScalarAsync<long>(
            "SELECT count(*) FROM scheduling.due_work WHERE key = @key AND done_at IS NULL", new { key = lease.LeaseId.ToString() }));
    }
}

/// <summary>
/// An on-demand match that reaches Scheduling after its window's start (but before its end) still runs the ordered
/// duration, from when it is placed, as far as the offer's window and the slots allow (known issue 9).
/// </summary>
public sealed class LateOnDemandMatchTests(SchedulingFixture f) : IClassFixture<SchedulingFixture>
{
    private async Task<OfferPublished> OfferAsync(Guid provider, NodeRegistered node, DateTimeOffset from, DateTimeOffset to)
    {
        var offer = new OfferPublished(Guid.NewGuid(), provider, Guid.NewGuid(), [node.NodeId], SchedulingFixture.Model, "cn-east", "CN",
            node.Slots.Count, from, to, new Money(235, "CNY"), 60, false, f.Clock.GetUtcNow());
        await f.PublishAndWaitAsync(offer);
        return offer;
    }

    private OrderMatched LateMatch(OfferPublished offer, DateTimeOffset start, TimeSpan ordered) =>
        f.Match(Guid.NewGuid(), offer.ProviderOrgId, offer.NodeIds, 1, start, start + ordered) with { OfferId = offer.OfferId };

    private async Task<string?> ReasonAsync(Guid renter, Guid leaseId) =>
        (await f.Factory.ClientFor(renter, "renter").GetFromJsonAsync<JsonElement>($"/v1/leases/{leaseId}"))
        .GetProperty("status_reason").GetString();

    [Fact]
    public async Task A_match_placed_20_s_after_its_start_runs_the_ordered_duration_from_then()
    {
        var provider = Guid.NewGuid();
        var node = await f.RegisterNodeAsync(provider, slots: 1);
        var now = f.Clock.GetUtcNow();
        var offer = await OfferAsync(provider, node, now.AddHours(-1), now.AddHours(5));
        var match = LateMatch(offer, now.AddSeconds(-20), TimeSpan.FromMinutes(10));

        var lease = await f.ScheduleAsync(match);

        Assert.Equal((now, now.AddMinutes(10)), (lease.Start, lease.End)); // Billing holds for these 600 s
        Assert.Equal(now.AddMinutes(10).UtcDateTime, await f.ScalarAsync<DateTime>(
            "SELECT max(upper(during)) FROM scheduling.bookings WHERE lease_id = @LeaseId", new { lease.LeaseId }));
        var reason = await ReasonAsync(match.RenterOrgId, lease.LeaseId);
        Assert.Contains("reached the scheduler 20 s after its start", reason, StringComparison.Ordinal);
        Assert.Contains("runs the 600 s ordered", reason, StringComparison.Ordinal);
    }

    [Fact]
    public async Task A_late_match_never_runs_past_the_offer_s_window_and_says_so()
    {
        var provider = Guid.NewGuid();
        var node = await f.RegisterNodeAsync(provider, slots: 1);
        var now = f.Clock.GetUtcNow();
        var offer = await OfferAsync(provider, node, now.AddHours(-1), now.AddSeconds(290));
        var match = LateMatch(offer, now.AddSeconds(-20), TimeSpan.FromSeconds(300));

        var lease = await f.ScheduleAsync(match);

        Assert.Equal((now, now.AddSeconds(290)), (lease.Start, lease.End));
        Assert.Contains("ends at the end of the offer's window", await ReasonAsync(match.RenterOrgId, lease.LeaseId), StringComparison.Ordinal);
        Assert.Contains("290 of the 300 s ordered", await ReasonAsync(match.RenterOrgId, lease.LeaseId), StringComparison.Ordinal);
    }

    [Fact]
    public async Task A_late_match_whose_slots_are_booked_after_its_window_keeps_the_matched_window()
    {
        var provider = Guid.NewGuid();
        var node = await f.RegisterNodeAsync(provider, slots: 1);
        var now = f.Clock.GetUtcNow();
        var offer = await OfferAsync(provider, node, now.AddHours(-1), now.AddHours(5));
        var next = await f.ScheduleAsync(f.Match(Guid.NewGuid(), provider, [node.NodeId], 1, now.AddSeconds(290), now.AddHours(1))
            with { OfferId = offer.OfferId });
        var match = LateMatch(offer, now.AddSeconds(-20), TimeSpan.FromSeconds(300));

        var lease = await f.ScheduleAsync(match);

        Assert.Equal((match.Start, match.End), (lease.Start, lease.End));
        Assert.Equal(0, await f.OverlappingBookingsAsync());
        Assert.Equal("scheduled", await f.StatusAsync(next.LeaseId));
    }
}
