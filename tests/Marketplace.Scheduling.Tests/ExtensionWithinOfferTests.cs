using System.Net;
using System.Net.Http.Json;
using System.Text.Json;
using Marketplace.Contracts;
using Xunit;

namespace Marketplace.Scheduling.Tests;

/// <summary>
/// An extension keeps the lease on the slots its offer sold, so it ends within what the offer sold: the end of the offer's
/// availability window. Before, only other bookings and maintenance bounded it, so a renter could keep a provider's
/// accelerators past the end of the offer (or after it was withdrawn), for as long as it liked.
/// </summary>
public sealed class ExtensionWithinOfferTests(SchedulingFixture f) : IClassFixture<SchedulingFixture>
{
    private async Task<(LeaseScheduled Lease, OrderMatched Match)> ActiveLeaseAsync(DateTimeOffset offerEnd, TimeSpan? nextBookedAfter = null)
    {
        var provider = Guid.NewGuid();
        var node = await f.RegisterNodeAsync(provider, slots: 1);
        var now = f.Clock.GetUtcNow();
        var offer = new OfferPublished(Guid.NewGuid(), provider, node.ClusterId, [node.NodeId], SchedulingFixture.Model, "cn-east", "CN",
            1, now.AddHours(-1), offerEnd, new Money(235, "CNY"), 60, false, now);
        await f.PublishAndWaitAsync(offer);
        var match = f.Match(Guid.NewGuid(), provider, [node.NodeId], 1, now, now.AddHours(1)) with { OfferId = offer.OfferId };
        var lease = await f.ScheduleAsync(match);
        if (nextBookedAfter is { } gap)
            await f.ScheduleAsync(f.Match(Guid.NewGuid(), provider, [node.NodeId], 1, match.End + gap, match.End.AddHours(3)) with { OfferId = offer.OfferId });
        await f.AdvanceAndRunAsync(TimeSpan.Zero, async () => await f.StatusAsync(lease.LeaseId) == "active");
        return (lease, match);
    }

    [Fact]
    public async Task An_extension_past_the_end_of_the_offer_s_window_is_refused_with_that_end_as_the_alternative()
    {
        var offerEnd = f.Clock.GetUtcNow().AddHours(2);
        var (lease, match) = await ActiveLeaseAsync(offerEnd);

        var response = await f.Factory.ClientFor(match.RenterOrgId, "renter").PostAsJsonAsync($"/v1/leases/{lease.LeaseId}/extend",
            new { end = offerEnd.AddHours(3) });

        Assert.Equal(HttpStatusCode.Conflict, response.StatusCode);
        Assert.Equal("application/problem+json", response.Content.Headers.ContentType?.MediaType);
        var problem = await response.Content.ReadFromJsonAsync<JsonElement>();
        Assert.EndsWith("/problems/extension-unavailable", problem.GetProperty("type").GetString(), StringComparison.Ordinal);
        Assert.Contains("offer", problem.GetProperty("detail").GetString(), StringComparison.Ordinal);
        var alternative = Assert.Single(problem.GetProperty("alternatives").EnumerateArray());
        Assert.Equal(offerEnd, alternative.GetProperty("end").GetDateTimeOffset());
        Assert.Equal(match.End, await f.ScalarAsync<DateTime>("SELECT end_at FROM scheduling.leases WHERE id = @LeaseId", lease));
        Assert.Equal(match.End.UtcDateTime, await f.ScalarAsync<DateTime>(
            "SELECT max(upper(during)) FROM scheduling.bookings WHERE lease_id = @LeaseId", new { lease.LeaseId }));
        Assert.DoesNotContain(f.EventsOf<LeaseExtended>(), e => e.LeaseId == lease.LeaseId);

        // Up to the offer's end is fine.
        var ok = await f.Factory.ClientFor(match.RenterOrgId, "renter").PostAsJsonAsync($"/v1/leases/{lease.LeaseId}/extend",
            new { end = offerEnd });
        Assert.Equal(HttpStatusCode.OK, ok.StatusCode);
    }

    [Fact]
    public async Task When_the_slots_are_booked_before_the_offer_ends_the_alternative_is_the_slots_latest_end()
    {
        var offerEnd = f.Clock.GetUtcNow().AddHours(2);
        var (lease, match) = await ActiveLeaseAsync(offerEnd, nextBookedAfter: TimeSpan.FromMinutes(20));

        var response = await f.Factory.ClientFor(match.RenterOrgId, "renter").PostAsJsonAsync($"/v1/leases/{lease.LeaseId}/extend",
            new { end = offerEnd.AddHours(1) });

        Assert.Equal(HttpStatusCode.Conflict, response.StatusCode);
        var problem = await response.Content.ReadFromJsonAsync<JsonElement>();
        var alternative = Assert.Single(problem.GetProperty("alternatives").EnumerateArray());
        Assert.Equal(match.End.AddMinutes(20), alternative.GetProperty("end").GetDateTimeOffset());
        Assert.Equal(match.End, await f.ScalarAsync<DateTime>("SELECT end_at FROM scheduling.leases WHERE id = @LeaseId", lease));
    }

    [Fact]
    public async Task A_lease_whose_offer_was_withdrawn_cannot_be_extended()
    {
        var (lease, match) = await ActiveLeaseAsync(f.Clock.GetUtcNow().AddHours(5));
        await f.PublishAndWaitAsync(new OfferWithdrawn(match.OfferId, match.ProviderOrgId, f.Clock.GetUtcNow()));

        var response = await f.Factory.ClientFor(match.RenterOrgId, "renter").PostAsJsonAsync($"/v1/leases/{lease.LeaseId}/extend",
            new { end = match.End.AddHours(1) });

        Assert.Equal(HttpStatusCode.Conflict, response.StatusCode);
        var problem = await response.Content.ReadFromJsonAsync<JsonElement>();
        Assert.EndsWith("/problems/extension-unavailable", problem.GetProperty("type").GetString(), StringComparison.Ordinal);
        Assert.Empty(problem.GetProperty("alternatives").EnumerateArray());
        Assert.Equal(match.End, await f.ScalarAsync<DateTime>("SELECT end_at FROM scheduling.leases WHERE id = @LeaseId", lease));
        Assert.DoesNotContain(f.EventsOf<LeaseExtended>(), e => e.LeaseId == lease.LeaseId);
    }
}
