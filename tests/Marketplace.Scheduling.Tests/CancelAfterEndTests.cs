using System.Net;
using System.Net.Http.Json;
using System.Text.Json;
using Marketplace.Contracts;
using Xunit;

namespace Marketplace.Scheduling.Tests;

/// <summary>
/// A lease whose end (or preemption notice) has passed but whose due work has not run yet (the runner is behind, or this
/// service was down) has ended there. Its completion ended it when the runner got to it, and a cancel ended it as
/// "cancelled by the renter" at the moment of the cancel: either way Billing metered the renter past the lease's end
/// (past preempt_at: seconds the displacing lease already had).
/// </summary>
public sealed class CancelAfterEndTests(SchedulingFixture f) : IClassFixture<SchedulingFixture>
{
    private async Task<(LeaseScheduled Lease, OrderMatched Match)> ActiveLeaseAsync(bool interruptible = false)
    {
        var provider = Guid.NewGuid();
        var node = await f.RegisterNodeAsync(provider, slots: 1);
        var start = f.Clock.GetUtcNow();
        var match = f.Match(Guid.NewGuid(), provider, [node.NodeId], 1, start, start.AddHours(1)) with { Interruptible = interruptible };
        var lease = await f.ScheduleAsync(match);
        await f.AdvanceAndRunAsync(TimeSpan.Zero, async () => await f.StatusAsync(lease.LeaseId) == "active");
        return (lease, match);
    }

    /// <summary>The runner is behind: the lease's transition is not claimed until the test lets it go.</summary>
    private Task<long> HoldBackAsync(string kind, Guid leaseId) => f.ScalarAsync<long>("""
        WITH u AS (UPDATE scheduling.due_work SET due_at = due_at + interval '1 day' WHERE kind = @kind AND key = @key AND done_at IS NULL RETURNING 1)
        SELECT count(*) FROM u
        """, new { kind, key = leaseId.ToString() });

    private Task<long> LetGoAsync(string kind, Guid leaseId) => f.ScalarAsync<long>("""
        WITH u AS (UPDATE scheduling.due_work SET due_at = due_at - interval '1 day' WHERE kind = @kind AND key = @key AND done_at IS NULL RETURNING 1)
        SELECT count(*) FROM u
        """, new { kind, key = leaseId.ToString() });

    private static async Task AssertLeaseEndedAsync(HttpResponseMessage response)
    {
        Assert.Equal(HttpStatusCode.Conflict, response.StatusCode);
        Assert.Equal("application/problem+json", response.Content.Headers.ContentType?.MediaType);
        var problem = await response.Content.ReadFromJsonAsync<JsonElement>();
        Assert.EndsWith("/problems/lease-ended", problem.GetProperty("type").GetString(), StringComparison.Ordinal);
    }

    [Fact]
    public async Task A_lease_whose_completion_runs_late_ends_at_its_end_not_when_the_runner_got_to_it()
    {
        var (lease, match) = await ActiveLeaseAsync();
        Assert.Equal(1, await HoldBackAsync("lease.complete", lease.LeaseId));
        f.Clock.Advance(TimeSpan.FromHours(1) + TimeSpan.FromMinutes(3));
        Assert.Equal(1, await LetGoAsync("lease.complete", lease.LeaseId));

        await f.AdvanceAndRunAsync(TimeSpan.Zero, async () => await f.StatusAsync(lease.LeaseId) == "completed");

        var ended = await f.EventAsync<LeaseEnded>(e => e.LeaseId == lease.LeaseId);
        Assert.Equal(("completed", match.End), (ended.Status, ended.At)); // Billing meters to here
        Assert.Equal(match.End.UtcDateTime, await f.ScalarAsync<DateTime>("SELECT ended_at FROM scheduling.leases WHERE id = @LeaseId", lease));
    }

    [Fact]
    public async Task Cancelling_a_lease_after_its_end_is_refused_and_it_completes_at_its_end()
    {
        var (lease, match) = await ActiveLeaseAsync();
        Assert.Equal(1, await HoldBackAsync("lease.complete", lease.LeaseId));
        f.Clock.Advance(TimeSpan.FromHours(1) + TimeSpan.FromMinutes(5));

        await AssertLeaseEndedAsync(await f.Factory.ClientFor(match.RenterOrgId, "renter").PostAsync($"/v1/leases/{lease.LeaseId}/cancel", null));

        Assert.Equal("active", await f.StatusAsync(lease.LeaseId)); // nothing written
        Assert.DoesNotContain(f.EventsOf<LeaseEnded>(), e => e.LeaseId == lease.LeaseId);
        Assert.Equal(1, await LetGoAsync("lease.complete", lease.LeaseId));
        await f.AdvanceAndRunAsync(TimeSpan.Zero, async () => await f.StatusAsync(lease.LeaseId) == "completed");
        var ended = await f.EventAsync<LeaseEnded>(e => e.LeaseId == lease.LeaseId);
        Assert.Equal(("completed", match.End), (ended.Status, ended.At));
    }

    [Fact]
    public async Task Cancelling_an_interruptible_lease_after_its_notice_ran_out_is_refused_and_it_ends_preempted_at_the_notice_s_end()
    {
        var (lease, match) = await ActiveLeaseAsync(interruptible: true);
        f.Clock.Advance(TimeSpan.FromMinutes(10));
        await f.PublishAndWaitAsync(new PreemptionRequested(match.MatchId, match.OrderId, "outbid", 30, f.Clock.GetUtcNow()));
        var notice = await f.EventAsync<PreemptionNoticeGiven>(e => e.LeaseId == lease.LeaseId);
        Assert.Equal(1, await HoldBackAsync("lease.preempt", lease.LeaseId));
        f.Clock.Advance(TimeSpan.FromMinutes(2));

        await AssertLeaseEndedAsync(await f.Factory.ClientFor(match.RenterOrgId, "renter").PostAsync($"/v1/leases/{lease.LeaseId}/cancel", null));

        Assert.Equal("active", await f.StatusAsync(lease.LeaseId));
        Assert.Equal(1, await LetGoAsync("lease.preempt", lease.LeaseId));
        await f.AdvanceAndRunAsync(TimeSpan.Zero, async () => await f.StatusAsync(lease.LeaseId) == "preempted");
        var ended = await f.EventAsync<LeaseEnded>(e => e.LeaseId == lease.LeaseId);
        Assert.Equal(("preempted", notice.PreemptAt), (ended.Status, ended.At));
    }

    [Fact]
    public async Task Extending_a_lease_after_its_end_is_refused_and_it_completes_at_its_end()
    {
        var (lease, match) = await ActiveLeaseAsync();
        Assert.Equal(1, await HoldBackAsync("lease.complete", lease.LeaseId));
        f.Clock.Advance(TimeSpan.FromHours(1) + TimeSpan.FromMinutes(5));

        await AssertLeaseEndedAsync(await f.Factory.ClientFor(match.RenterOrgId, "renter")
            .PostAsJsonAsync($"/v1/leases/{lease.LeaseId}/extend", new { end = match.End.AddHours(1) }));

        Assert.Equal(match.End.UtcDateTime, await f.ScalarAsync<DateTime>("SELECT end_at FROM scheduling.leases WHERE id = @LeaseId", lease)); // nothing written
        Assert.DoesNotContain(f.EventsOf<LeaseExtended>(), e => e.LeaseId == lease.LeaseId);
        Assert.Equal(1, await LetGoAsync("lease.complete", lease.LeaseId));
        await f.AdvanceAndRunAsync(TimeSpan.Zero, async () => await f.StatusAsync(lease.LeaseId) == "completed");
        var ended = await f.EventAsync<LeaseEnded>(e => e.LeaseId == lease.LeaseId);
        Assert.Equal(("completed", match.End), (ended.Status, ended.At));
    }

    [Fact]
    public async Task The_provider_of_a_lease_cannot_cancel_it_even_when_its_org_also_rents()
    {
        var (lease, match) = await ActiveLeaseAsync();
        var response = await f.Factory.ClientFor(match.ProviderOrgId, "renter", "provider").PostAsync($"/v1/leases/{lease.LeaseId}/cancel", null);

        Assert.Equal(HttpStatusCode.Forbidden, response.StatusCode);
        Assert.Equal("application/problem+json", response.Content.Headers.ContentType?.MediaType);
        Assert.Equal("active", await f.StatusAsync(lease.LeaseId));
        // Another org that rents as well still learns nothing of the lease.
        Assert.Equal(HttpStatusCode.NotFound, (await f.Factory.ClientFor(Guid.NewGuid(), "renter", "provider")
            .PostAsync($"/v1/leases/{lease.LeaseId}/cancel", null)).StatusCode);
    }
}
