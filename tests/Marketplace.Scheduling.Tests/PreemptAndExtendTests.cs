using System.Net;
using System.Net.Http.Json;
using System.Text.Json;
using Marketplace.Contracts;

namespace Marketplace.Scheduling.Tests;

/// <summary>Preemption with notice, extension on the same slots, and Billing's rejection of an extension.</summary>
public sealed class PreemptAndExtendTests(SchedulingFixture f) : IClassFixture<SchedulingFixture>
{
    private async Task<(LeaseScheduled Lease, OrderMatched Match, NodeRegistered Node)> ActiveLeaseAsync(
        bool interruptible = false, int noticeSeconds = 0, int slots = 2)
    {
        var provider = Guid.NewGuid();
        var node = await f.RegisterNodeAsync(provider, slots);
        var start = f.Clock.GetUtcNow();
        var match = f.Match(Guid.NewGuid(), provider, [node.NodeId], slots, start, start.AddHours(1)) with
        {
            Interruptible = interruptible,
            PreemptionNoticeSeconds = noticeSeconds,
            SlaLevel = "gold",
        };
        var lease = await f.ScheduleAsync(match);
        await f.AdvanceAndRunAsync(TimeSpan.Zero, async () => await f.StatusAsync(lease.LeaseId) == "active");
        return (lease, match, node);
    }

    private static async Task<JsonElement> AssertProblemAsync(HttpResponseMessage response, HttpStatusCode status, string typeSuffix)
    {
        Assert.Equal(status, response.StatusCode);
        Assert.Equal("application/problem+json", response.Content.Headers.ContentType?.MediaType);
        var problem = await response.Content.ReadFromJsonAsync<JsonElement>();
        Assert.EndsWith("/problems/" + typeSuffix, problem.GetProperty("type").GetString(), StringComparison.Ordinal);
        return problem;
    }

    [Fact]
    public async Task An_interruptible_lease_gets_notice_then_ends_as_preempted_by_the_market_when_it_runs_out()
    {
        var (lease, match, _) = await ActiveLeaseAsync(interruptible: true, noticeSeconds: 120);
        Assert.True(lease.Interruptible);
        Assert.Equal("gold", lease.SlaLevel);
        f.Clock.Advance(TimeSpan.FromMinutes(10));
        var noticeAt = f.Clock.GetUtcNow();

        // Bidding asks for 30 s; the offer promised 120 s, which wins.
        await f.PublishAndWaitAsync(new PreemptionRequested(match.MatchId, match.OrderId, "outbid by an on-demand order", 30, noticeAt));

        var notice = await f.EventAsync<PreemptionNoticeGiven>(e => e.LeaseId == lease.LeaseId);
        Assert.Equal((noticeAt.AddSeconds(120), noticeAt, "outbid by an on-demand order"), (notice.PreemptAt, notice.At, notice.Reason));
        var json = await f.Factory.ClientFor(match.RenterOrgId, "renter").GetFromJsonAsync<JsonElement>($"/v1/leases/{lease.LeaseId}");
        Assert.Equal(noticeAt.AddSeconds(120), json.GetProperty("preempt_at").GetDateTimeOffset());
        Assert.Equal("active", json.GetProperty("status").GetString());

        f.Clock.Advance(TimeSpan.FromSeconds(119));
        await f.DueWork.RunDueAsync(CancellationToken.None);
        Assert.Equal("active", await f.StatusAsync(lease.LeaseId));

        await f.AdvanceAndRunAsync(TimeSpan.FromSeconds(1), async () => await f.StatusAsync(lease.LeaseId) == "preempted");
        var ended = await f.EventAsync<LeaseEnded>(e => e.LeaseId == lease.LeaseId);
        Assert.Equal(("preempted", "market", notice.PreemptAt), (ended.Status, ended.Cause, ended.At));
        Assert.False(ended.NeverRan); // it ran: Billing settles it at the run
        Assert.Contains("outbid by an on-demand order", ended.Reason, StringComparison.Ordinal);

        // A second request for the ended lease changes nothing.
        await f.PublishAndWaitAsync(new PreemptionRequested(match.MatchId, match.OrderId, "again", 0, f.Clock.GetUtcNow()));
        Assert.Single(f.EventsOf<PreemptionNoticeGiven>(), e => e.LeaseId == lease.LeaseId);
    }

    [Fact]
    public async Task A_displacing_match_that_overtakes_its_preemption_is_placed_on_the_interruptible_lease_s_slots_from_the_end_of_the_notice()
    {
        var (victim, victimMatch, node) = await ActiveLeaseAsync(interruptible: true, noticeSeconds: 30);
        f.Clock.Advance(TimeSpan.FromMinutes(5));
        var decidedAt = f.Clock.GetUtcNow();
        // Bidding sold the victim's capacity again from its clearing time + the notice; its PreemptionRequested is stamped
        // a few milliseconds later in the same transaction. The OrderMatched reaches Scheduling first.
        var soldFrom = decidedAt.AddSeconds(30).AddMilliseconds(-3);
        var displacing = f.Match(Guid.NewGuid(), victimMatch.ProviderOrgId, [node.NodeId], 2, soldFrom, decidedAt.AddHours(1));

        await f.Bus.PublishAsync(displacing);
        await Task.Delay(500); // lets the match be tried first and wait for the preemption; the outcome must not depend on it
        f.Clock.Advance(TimeSpan.FromSeconds(2)); // Scheduling hears of the preemption 2 s after the market decided
        await f.Bus.PublishAsync(new PreemptionRequested(victimMatch.MatchId, victimMatch.OrderId, "displaced by a higher-priority on_demand order", 30, decidedAt));

        var placed = Assert.IsType<LeaseScheduled>(await f.OutcomeAsync(displacing.MatchId));
        Assert.Equal(victim.SlotIds.Order(), placed.SlotIds.Order());
        var notice = await f.EventAsync<PreemptionNoticeGiven>(e => e.LeaseId == victim.LeaseId);
        Assert.Equal(decidedAt.AddSeconds(30), notice.PreemptAt); // counted from the market's decision, not from its arrival
        Assert.Equal(0, await f.OverlappingBookingsAsync());

        await f.AdvanceAndRunAsync(TimeSpan.FromSeconds(28), async () => await f.StatusAsync(placed.LeaseId) == "active");
        var ended = await f.EventAsync<LeaseEnded>(e => e.LeaseId == victim.LeaseId);
        Assert.Equal(("preempted", "market", soldFrom), (ended.Status, ended.Cause, ended.At)); // it yielded the 3 ms to the new lease
    }

    [Fact]
    public async Task A_match_blocked_by_an_interruptible_lease_that_gets_no_preemption_fails_after_a_few_seconds_with_a_reason()
    {
        var (_, victimMatch, node) = await ActiveLeaseAsync(interruptible: true, noticeSeconds: 30);
        var start = f.Clock.GetUtcNow().AddMinutes(1);

        var failed = Assert.IsType<PlacementFailed>(await f.PlaceAsync(
            f.Match(Guid.NewGuid(), victimMatch.ProviderOrgId, [node.NodeId], 1, start, start.AddHours(1))));

        Assert.Contains("only 0 of 1 h100-sxm slots are free on the offered nodes", failed.Reason, StringComparison.Ordinal);
    }

    [Fact]
    public async Task The_renter_extends_a_lease_when_the_same_slots_are_free_and_it_completes_at_the_new_end()
    {
        var (lease, match, _) = await ActiveLeaseAsync();
        var newEnd = match.End.AddMinutes(30);

        var response = await f.Factory.ClientFor(match.RenterOrgId, "renter").PostAsJsonAsync($"/v1/leases/{lease.LeaseId}/extend", new { end = newEnd });

        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        var json = await response.Content.ReadFromJsonAsync<JsonElement>();
        Assert.Equal(newEnd, json.GetProperty("end").GetDateTimeOffset());
        var extended = await f.EventAsync<LeaseExtended>(e => e.LeaseId == lease.LeaseId);
        Assert.Equal((match.End, newEnd), (extended.PreviousEnd, extended.NewEnd));
        Assert.Equal(2, await f.ScalarAsync<long>(
            "SELECT count(*) FROM scheduling.bookings WHERE lease_id = @LeaseId AND upper(during) = @newEnd", new { lease.LeaseId, newEnd }));

        await f.AdvanceAndRunAsync(TimeSpan.FromHours(1), () => Task.FromResult(true));
        Assert.Equal("active", await f.StatusAsync(lease.LeaseId));
        await f.AdvanceAndRunAsync(TimeSpan.FromMinutes(30), async () => await f.StatusAsync(lease.LeaseId) == "completed");
        Assert.Equal(newEnd, (await f.EventAsync<LeaseEnded>(e => e.LeaseId == lease.LeaseId)).At);
    }

    [Fact]
    public async Task An_extension_into_a_booked_window_is_refused_with_the_latest_possible_end_and_changes_nothing()
    {
        var (lease, match, node) = await ActiveLeaseAsync();
        var next = await f.ScheduleAsync(f.Match(Guid.NewGuid(), match.ProviderOrgId, [node.NodeId], 1, match.End.AddMinutes(20), match.End.AddHours(1)));

        var response = await f.Factory.ClientFor(match.RenterOrgId, "renter").PostAsJsonAsync($"/v1/leases/{lease.LeaseId}/extend",
            new { end = match.End.AddHours(2) });

        var problem = await AssertProblemAsync(response, HttpStatusCode.Conflict, "extension-unavailable");
        var alternative = Assert.Single(problem.GetProperty("alternatives").EnumerateArray());
        Assert.Equal(match.End.AddMinutes(20), alternative.GetProperty("end").GetDateTimeOffset());
        Assert.Equal(match.End, await f.ScalarAsync<DateTime>("SELECT end_at FROM scheduling.leases WHERE id = @LeaseId", lease));
        Assert.DoesNotContain(f.EventsOf<LeaseExtended>(), e => e.LeaseId == lease.LeaseId);

        // The alternative works.
        var ok = await f.Factory.ClientFor(match.RenterOrgId, "renter").PostAsJsonAsync($"/v1/leases/{lease.LeaseId}/extend",
            new { end = match.End.AddMinutes(20) });
        Assert.Equal(HttpStatusCode.OK, ok.StatusCode);
        Assert.Equal(0, await f.OverlappingBookingsAsync());
        Assert.Equal("scheduled", await f.StatusAsync(next.LeaseId));
    }

    [Fact]
    public async Task Billing_rejecting_an_extension_puts_the_end_and_the_bookings_back()
    {
        var (lease, match, _) = await ActiveLeaseAsync();
        var newEnd = match.End.AddHours(1);
        Assert.Equal(HttpStatusCode.OK, (await f.Factory.ClientFor(match.RenterOrgId, "renter")
            .PostAsJsonAsync($"/v1/leases/{lease.LeaseId}/extend", new { end = newEnd })).StatusCode);

        await f.PublishAndWaitAsync(new ExtensionRejected(lease.LeaseId, match.OrderId, match.End, "insufficient funds", f.Clock.GetUtcNow()));

        Assert.Equal(match.End, await f.ScalarAsync<DateTime>("SELECT end_at FROM scheduling.leases WHERE id = @LeaseId", lease));
        Assert.Equal(2, await f.ScalarAsync<long>(
            "SELECT count(*) FROM scheduling.bookings WHERE lease_id = @LeaseId AND upper(during) = @End", new { lease.LeaseId, match.End }));
        await f.AdvanceAndRunAsync(TimeSpan.FromHours(1), async () => await f.StatusAsync(lease.LeaseId) == "completed");
    }

    [Fact]
    public async Task Bad_or_foreign_extensions_get_a_problem_and_write_nothing()
    {
        var (lease, match, _) = await ActiveLeaseAsync(interruptible: true);
        var renter = f.Factory.ClientFor(match.RenterOrgId, "renter");
        var path = $"/v1/leases/{lease.LeaseId}/extend";

        await AssertProblemAsync(await renter.PostAsJsonAsync(path, new { end = match.End.AddMinutes(-1) }), HttpStatusCode.BadRequest, "validation");
        await AssertProblemAsync(await renter.PostAsJsonAsync(path, new { }), HttpStatusCode.BadRequest, "validation");
        await AssertProblemAsync(await renter.PostAsJsonAsync("/v1/leases/nope/extend", new { end = match.End.AddHours(1) }), HttpStatusCode.BadRequest, "validation");
        await AssertProblemAsync(await f.Factory.ClientFor(match.ProviderOrgId, "provider").PostAsJsonAsync(path, new { end = match.End.AddHours(1) }),
            HttpStatusCode.Forbidden, "forbidden");
        await AssertProblemAsync(await f.Factory.ClientFor(Guid.NewGuid(), "renter").PostAsJsonAsync(path, new { end = match.End.AddHours(1) }),
            HttpStatusCode.NotFound, "not-found");

        // Under notice, no extension.
        await f.PublishAndWaitAsync(new PreemptionRequested(match.MatchId, match.OrderId, "outbid", 60, f.Clock.GetUtcNow()));
        await AssertProblemAsync(await renter.PostAsJsonAsync(path, new { end = match.End.AddHours(1) }), HttpStatusCode.Conflict, "lease-preempted");

        Assert.Equal(match.End, await f.ScalarAsync<DateTime>("SELECT end_at FROM scheduling.leases WHERE id = @LeaseId", lease));
        Assert.DoesNotContain(f.EventsOf<LeaseExtended>(), e => e.LeaseId == lease.LeaseId);
    }

    [Fact]
    public async Task The_renter_sets_an_ssh_key_before_the_start_but_not_after()
    {
        var provider = Guid.NewGuid();
        var node = await f.RegisterNodeAsync(provider, 1);
        var start = f.Clock.GetUtcNow().AddMinutes(10);
        var match = f.Match(Guid.NewGuid(), provider, [node.NodeId], 1, start, start.AddHours(1));
        var lease = await f.ScheduleAsync(match);
        var renter = f.Factory.ClientFor(match.RenterOrgId, "renter");

        await AssertProblemAsync(await renter.PatchAsJsonAsync($"/v1/leases/{lease.LeaseId}", new { ssh_public_key = "hunter2" }),
            HttpStatusCode.BadRequest, "validation");
        var ok = await renter.PatchAsJsonAsync($"/v1/leases/{lease.LeaseId}", new { ssh_public_key = "ssh-ed25519 AAAAC3Nza me@laptop" });
        Assert.Equal(HttpStatusCode.OK, ok.StatusCode);
        Assert.Equal("ssh-ed25519 AAAAC3Nza me@laptop", (await ok.Content.ReadFromJsonAsync<JsonElement>()).GetProperty("ssh_public_key").GetString());

        await f.AdvanceAndRunAsync(TimeSpan.FromMinutes(10), async () => await f.StatusAsync(lease.LeaseId) == "active");
        await AssertProblemAsync(await renter.PatchAsJsonAsync($"/v1/leases/{lease.LeaseId}", new { container_image = "pytorch:latest" }),
            HttpStatusCode.Conflict, "lease-started");
    }
}
