using Marketplace.Bidding.Domain;

namespace Marketplace.Bidding.Tests.Domain;

/// <summary>Which matches an offer's new terms (or its withdrawal) take back: only those not started that no longer fit.</summary>
public sealed class OfferChangesTests
{
    private static readonly DateTimeOffset Now = new(2026, 12, 1, 10, 0, 0, TimeSpan.Zero);

    private static OfferCandidate Terms(int capacity = 8, int windowHours = 24, bool interruptible = true) =>
        new(Guid.NewGuid(), "h100-sxm", "cn-east", "CN", capacity, Now.AddHours(-1), Now.AddHours(windowHours), 235, "CNY", 60,
            Now.AddHours(-2), []) { InterruptibleAllowed = interruptible };

    private static Booking Match(int startHours, int hours, int count, int matchedMinutesAgo, bool interruptible = false) =>
        new(Now.AddHours(startHours), Now.AddHours(startHours + hours), count)
        {
            MatchId = Guid.NewGuid(), MatchedAt = Now.AddMinutes(-matchedMinutesAgo), Interruptible = interruptible,
        };

    [Fact]
    public void A_withdrawal_revokes_every_match_not_started_and_keeps_the_running_ones()
    {
        var running = Match(-1, 3, 4, 90);
        var later = Match(2, 1, 2, 30);
        var revoked = OfferChanges.Revoked(null, [running, later], Now);
        Assert.Equal([new Revocation(later.MatchId, RevokeCause.Withdrawn)], revoked);
    }

    [Fact]
    public void Less_capacity_revokes_the_latest_made_matches_that_no_longer_fit_and_keeps_the_earlier_ones()
    {
        var running = Match(-1, 4, 4, 120);      // started: always kept, and it fills the new capacity until +3 h
        var first = Match(1, 2, 2, 60);          // overlaps the running one: 6 > 4
        var second = Match(5, 2, 4, 50);         // after the running one ends: fits
        var third = Match(5, 2, 2, 40);          // next to the second: 6 > 4
        var revoked = OfferChanges.Revoked(Terms(capacity: 4), [third, running, second, first], Now);
        Assert.Equal([new Revocation(first.MatchId, RevokeCause.Capacity), new Revocation(third.MatchId, RevokeCause.Capacity)], revoked);
    }

    [Fact]
    public void A_shorter_window_or_no_more_interruptible_use_revokes_what_it_no_longer_holds()
    {
        var outside = Match(10, 2, 1, 30);
        var spot = Match(2, 1, 1, 20, interruptible: true);
        var inside = Match(2, 1, 1, 10);
        var revoked = OfferChanges.Revoked(Terms(windowHours: 8, interruptible: false), [outside, spot, inside], Now);
        Assert.Equal([new Revocation(outside.MatchId, RevokeCause.Window), new Revocation(spot.MatchId, RevokeCause.Interruptible)], revoked);
    }

    [Fact]
    public void Unchanged_terms_revoke_nothing()
    {
        Assert.Empty(OfferChanges.Revoked(Terms(capacity: 8), [Match(-1, 2, 4, 60), Match(1, 2, 4, 30), Match(3, 2, 8, 20)], Now));
    }
}
