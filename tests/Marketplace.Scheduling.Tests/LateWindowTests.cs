using Marketplace.Scheduling.Domain;
using Xunit;

namespace Marketplace.Scheduling.Tests;

/// <summary>The rule for a late on-demand match's window, alone (no servers).</summary>
public sealed class LateWindowTests
{
    private static readonly DateTimeOffset T = new(2030, 1, 1, 10, 0, 0, TimeSpan.Zero);

    [Fact]
    public void A_match_not_yet_started_or_already_over_is_not_re_anchored()
    {
        Assert.Null(LateWindow.Reanchor(T, T.AddMinutes(10), T, T.AddHours(1)));
        Assert.Null(LateWindow.Reanchor(T, T.AddMinutes(10), T.AddMinutes(10), T.AddHours(1)));
    }

    [Fact]
    public void The_bus_hop_is_not_late_only_more_than_the_grace_is()
    {
        // Every match arrives a little after its window starts; re-anchoring those would rewrite every on-demand lease.
        Assert.Null(LateWindow.Reanchor(T, T.AddMinutes(10), T.AddMilliseconds(40), T.AddHours(1)));
        Assert.Null(LateWindow.Reanchor(T, T.AddMinutes(10), T + LateWindow.Grace, T.AddHours(1)));
        Assert.NotNull(LateWindow.Reanchor(T, T.AddMinutes(10), T + LateWindow.Grace + TimeSpan.FromSeconds(1), T.AddHours(1)));
    }

    [Fact]
    public void A_late_match_runs_the_ordered_duration_from_now_within_the_offer()
    {
        var w = LateWindow.Reanchor(T, T.AddMinutes(10), T.AddSeconds(30), T.AddHours(1))!;
        Assert.Equal((T.AddSeconds(30), T.AddSeconds(630), false), (w.Start, w.End, w.Capped));
    }

    [Fact]
    public void The_offer_s_end_caps_it_and_an_unknown_offer_keeps_the_matched_end()
    {
        var capped = LateWindow.Reanchor(T, T.AddMinutes(10), T.AddSeconds(30), T.AddSeconds(620))!;
        Assert.Equal((T.AddSeconds(620), true), (capped.End, capped.Capped));
        var unknown = LateWindow.Reanchor(T, T.AddMinutes(10), T.AddSeconds(30), null)!;
        Assert.Equal((T.AddSeconds(30), T.AddMinutes(10)), (unknown.Start, unknown.End));
    }
}
