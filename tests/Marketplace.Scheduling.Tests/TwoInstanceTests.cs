using System.Diagnostics;
using Marketplace.Contracts;
using Xunit.Abstractions;

namespace Marketplace.Scheduling.Tests;

/// <summary>Two instances of the service on one database and virtual host, competing for matches and due work.</summary>
public sealed class TwoInstanceFixture : SchedulingFixture
{
    protected override bool TwoInstances => true;
}

public sealed class TwoInstanceTests(TwoInstanceFixture f, ITestOutputHelper output) : IClassFixture<TwoInstanceFixture>
{
    [Fact]
    public async Task Many_matches_on_one_offer_placed_at_once_by_two_instances_all_get_slots_and_none_overlap()
    {
        var provider = Guid.NewGuid();
        var cluster = Guid.NewGuid();
        var nodes = new List<NodeRegistered>();
        for (var i = 0; i < 6; i++) nodes.Add(await f.RegisterNodeAsync(provider, 8, cluster: cluster, fabric: "ib"));
        var t0 = f.Clock.GetUtcNow().AddDays(3);
        // 48 GPUs in one offer and 24 orders of 1, 2, 3 and 2 GPUs for the same hour: exactly the offer's capacity, so
        // every one of them fits only if no two placements book the same slot and none gives up under contention.
        var sizes = new[] { 1, 2, 3, 2 };
        var offer = Guid.NewGuid();
        var matches = Enumerable.Range(0, 24)
            .Select(i => f.Match(Guid.NewGuid(), provider, nodes.Select(n => n.NodeId), sizes[i % 4], t0, t0.AddHours(1)) with { OfferId = offer })
            .ToList();

        var clock = Stopwatch.StartNew();
        await Task.WhenAll(matches.Select(m => f.Bus.PublishAsync(m)));
        var outcomes = await Task.WhenAll(matches.Select(m => f.OutcomeAsync(m.MatchId)));
        output.WriteLine($"{matches.Count} placements on one offer by two instances: {clock.ElapsedMilliseconds} ms");

        Assert.All(outcomes, o => Assert.IsType<LeaseScheduled>(o));
        Assert.All(outcomes.Cast<LeaseScheduled>(), s => Assert.Equal(matches.Single(m => m.MatchId == s.MatchId).AcceleratorCount, s.SlotIds.Count));
        var every = nodes.SelectMany(n => n.Slots).Select(s => s.SlotId).Order();
        Assert.Equal(every, outcomes.Cast<LeaseScheduled>().SelectMany(s => s.SlotIds).Order());
        Assert.Equal(0, await f.OverlappingBookingsAsync());
    }

    [Fact]
    public async Task Two_instances_placing_racing_gangs_on_one_nvlink_domain_never_double_book_a_gpu()
    {
        var provider = Guid.NewGuid();
        var cluster = Guid.NewGuid();
        var nodes = new List<NodeRegistered>();
        for (var i = 0; i < 3; i++) nodes.Add(await f.RegisterNodeAsync(provider, 8, cluster: cluster, nvlinkDomain: "rack", fabric: "ib"));
        var t0 = f.Clock.GetUtcNow().AddDays(1);
        // 24 GPUs; 30 overlapping orders of 4 to 12: at most a few fit at once, and each must be whole or refused.
        var matches = Enumerable.Range(0, 30)
            .Select(i => f.Match(Guid.NewGuid(), provider, nodes.Select(n => n.NodeId), 4 + i % 3 * 4, t0.AddMinutes(i), t0.AddMinutes(i + 90)))
            .ToList();

        await Task.WhenAll(matches.Select(m => f.Bus.PublishAsync(m)));
        var outcomes = await Task.WhenAll(matches.Select(m => f.OutcomeAsync(m.MatchId)));

        Assert.Equal(0, await f.OverlappingBookingsAsync());
        var scheduled = outcomes.OfType<LeaseScheduled>().ToList();
        Assert.NotEmpty(scheduled);
        Assert.NotEmpty(outcomes.OfType<PlacementFailed>());
        Assert.All(scheduled, s => Assert.Equal(matches.Single(m => m.MatchId == s.MatchId).AcceleratorCount, s.SlotIds.Count));
        Assert.Equal(scheduled.Sum(s => s.SlotIds.Count), await f.ScalarAsync<long>(
            "SELECT count(*) FROM scheduling.bookings b JOIN scheduling.leases l ON l.id = b.lease_id WHERE l.provider_org_id = @provider",
            new { provider }));

        // Both instances' runners claim due work; every lease starts and ends exactly once. The starts first (none of the
        // ends is due yet), so no end is ever claimed before its start.
        f.Clock.Advance(TimeSpan.FromDays(1) + TimeSpan.FromMinutes(30));
        await Eventually.True(async () => await f.ScalarAsync<long>(
            "SELECT count(*) FROM scheduling.leases WHERE provider_org_id = @provider AND status = 'active'", new { provider }) == scheduled.Count,
            what: "every lease to start");
        f.Clock.Advance(TimeSpan.FromHours(2));
        await Eventually.True(async () => await f.ScalarAsync<long>(
            "SELECT count(*) FROM scheduling.leases WHERE provider_org_id = @provider AND status = 'completed'", new { provider }) == scheduled.Count,
            what: "every lease to complete");
        var ids = scheduled.Select(s => s.LeaseId).ToHashSet();
        await Eventually.True(() => Task.FromResult(f.EventsOf<LeaseEnded>().Count(e => ids.Contains(e.LeaseId)) >= scheduled.Count));
        Assert.Equal(scheduled.Count, f.EventsOf<LeaseStarted>().Count(e => ids.Contains(e.LeaseId)));
        Assert.Equal(scheduled.Count, f.EventsOf<LeaseEnded>().Count(e => ids.Contains(e.LeaseId)));
    }
}
