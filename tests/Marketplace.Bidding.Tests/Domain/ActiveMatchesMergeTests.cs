using Marketplace.Bidding.Domain;
using Marketplace.Bidding.Orders;
using Xunit;

namespace Marketplace.Bidding.Tests.Domain;

/// <summary>Laying the matches written since a copy over it (ActiveMatches.Merge).</summary>
public sealed class ActiveMatchesMergeTests
{
    private static readonly DateTimeOffset Now = new(2026, 11, 30, 12, 0, 0, TimeSpan.Zero);
    private static readonly Guid Offer = Guid.NewGuid();

    private static Booking B(Guid id, int endsInMinutes, int count = 1) =>
        new(Now.AddMinutes(-10), Now.AddMinutes(endsInMinutes), count) { MatchId = id };

    [Fact]
    public void Written_matches_replace_theirs_released_and_ended_ones_leave_and_the_rest_is_kept()
    {
        Guid kept = Guid.NewGuid(), changed = Guid.NewGuid(), released = Guid.NewGuid(), ended = Guid.NewGuid(), added = Guid.NewGuid(),
            addedEnded = Guid.NewGuid();
        var known = new ActiveMatches.Copy(100, new()
        {
            [kept] = new(Offer, B(kept, 30)),
            [changed] = new(Offer, B(changed, 30, count: 2)),
            [released] = new(Offer, B(released, 30)),
            [ended] = new(Offer, B(ended, 0)),
        });
        var copy = ActiveMatches.Merge(known, 140,
        [
            new(Offer, B(changed, 45, count: 4), Active: true, Own: false),
            new(Offer, B(released, 30), Active: false, Own: false),
            new(Offer, B(added, 5), Active: true, Own: false),
            new(Offer, B(addedEnded, -1), Active: true, Own: false),
        ], Now);

        Assert.Equal(140, copy.Since);
        Assert.Equal(new[] { kept, changed, added }.Order(), copy.Matches.Keys.Order());
        Assert.Equal((4, Now.AddMinutes(45)), (copy.Matches[changed].Booking.Count, copy.Matches[changed].Booking.End));
        Assert.Equal(2, known.Matches[changed].Booking.Count); // the copy read before is left as it was
    }

    [Fact]
    public void Without_a_copy_the_matches_read_are_the_copy()
    {
        var id = Guid.NewGuid();
        var copy = ActiveMatches.Merge(null, 7, [new(Offer, B(id, 10), Active: true, Own: false)], Now);
        Assert.Equal(7, copy.Since);
        Assert.Equal([id], copy.Matches.Keys);
    }
}
