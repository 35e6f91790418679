using CsCheck;
using Marketplace.Billing.Domain;
using Xunit;

namespace Marketplace.Billing.Tests.Domain;

public sealed class DowntimeLogTests
{
    private static readonly DateTime T0 = new(2026, 11, 30, 12, 0, 0, DateTimeKind.Utc);

    private static DateTime Min(int minutes, int seconds = 0) => T0.AddMinutes(minutes).AddSeconds(seconds);

    /// <summary>An event as a consumer applies it: an interruption (with its cause) or a resume.</summary>
    private sealed record Event(DateTime At, string? Cause)
    {
        public List<DowntimeRow> ApplyTo(List<DowntimeRow> rows) =>
            Cause is null ? DowntimeLog.Resumed(rows, At) : DowntimeLog.Interrupted(rows, At, Cause, "node lost");
    }

    private static List<DowntimeRow> Apply(IEnumerable<Event> events) =>
        events.Aggregate(new List<DowntimeRow>(), (rows, e) => e.ApplyTo(rows));

    private static IEnumerable<Event> History(IEnumerable<(DateTime Start, DateTime? End, string Cause)> intervals) =>
        intervals.SelectMany(i => i.End is { } end ? new[] { new Event(i.Start, i.Cause), new Event(end, null) } : [new Event(i.Start, i.Cause)]);

    private static List<DowntimeRow> Closed(params (DateTime Start, DateTime? End, string Cause)[] intervals) =>
        intervals.Select(i => new DowntimeRow(i.Start, i.End, i.Cause, "node lost")).ToList();

    [Fact]
    public void A_resume_that_overtakes_the_resume_before_it_and_its_own_interruption_still_closes_its_own_interval()
    {
        // The order that once left the second interval open forever and the first one ten minutes too long.
        var rows = Apply([new Event(Min(10), "provider"), new Event(Min(20, 5), null), new Event(Min(10, 20), null), new Event(Min(20), "renter")]);

        Assert.Equal(Closed((Min(10), Min(10, 20), "provider"), (Min(20), Min(20, 5), "renter")), rows);
    }

    [Fact]
    public void Every_order_of_arrival_of_three_intervals_gives_the_same_three_intervals()
    {
        var intervals = new (DateTime, DateTime?, string)[]
            { (Min(10), Min(10, 20), "provider"), (Min(20), Min(25), "renter"), (Min(40), Min(40, 20), "platform") };
        var events = History(intervals).ToArray();
        var orders = 0;
        foreach (var order in Permutations(events.Length))
        {
            Assert.Equal(Closed(intervals), Apply(order.Select(i => events[i])));
            orders++;
        }
        Assert.Equal(720, orders);
    }

    [Fact]
    public void Any_history_in_any_order_of_arrival_is_paired_as_it_happened() =>
        Gen.Int[1, 8].SelectMany(n => Gen.Select(Gen.Int[1, 600].Array[2 * n], Gen.Int[0, 3].Array[n], Gen.Bool, Gen.Int[0, int.MaxValue].Array[2 * n]))
            .Sample((gaps, causes, lastOpen, keys) =>
            {
                // n intervals one after the other (gaps of 1-600 s), the last one perhaps still open.
                var n = causes.Length;
                var t = T0;
                var intervals = new List<(DateTime Start, DateTime? End, string Cause)>();
                for (var i = 0; i < n; i++)
                {
                    var start = t = t.AddSeconds(gaps[2 * i]);
                    var end = t = t.AddSeconds(gaps[2 * i + 1]);
                    intervals.Add((start, i == n - 1 && lastOpen ? null : end, new[] { "provider", "platform", "renter", "market" }[causes[i]]));
                }
                var events = History(intervals).ToArray();
                var arrival = events.Select((e, i) => (e, keys[i])).OrderBy(p => p.Item2).Select(p => p.e);
                return Apply(arrival).SequenceEqual(Closed(intervals.ToArray()));
            });

    [Fact]
    public void A_resume_before_any_interruption_waits_as_a_zero_length_stub_and_the_interruption_adopts_it()
    {
        var rows = DowntimeLog.Resumed([], Min(10, 20));
        Assert.Equal([new DowntimeRow(Min(10, 20), Min(10, 20), "", DowntimeLog.StubReason)], rows);

        Assert.Equal(Closed((Min(10), Min(10, 20), "provider")), DowntimeLog.Interrupted(rows, Min(10), "provider", "node lost"));
    }

    [Fact]
    public void A_second_resume_in_one_interval_is_kept_aside_and_a_second_interruption_at_the_same_start_changes_nothing()
    {
        var rows = Apply([new Event(Min(10), "provider"), new Event(Min(10, 20), null), new Event(Min(10, 40), null), new Event(Min(10), "renter")]);

        Assert.Equal([new DowntimeRow(Min(10), Min(10, 20), "provider", "node lost"),
            new DowntimeRow(Min(10, 40), Min(10, 40), "", DowntimeLog.StubReason)], rows);
        // The stub is the end of an interruption that arrives later, between the two resumes.
        Assert.Equal(Closed((Min(10), Min(10, 20), "provider"), (Min(10, 30), Min(10, 40), "market")),
            DowntimeLog.Interrupted(rows, Min(10, 30), "market", "node lost"));
    }

    [Fact]
    public void An_interruption_with_no_resume_yet_stays_open_until_the_lease_ends() =>
        Assert.Equal(Closed((Min(10), Min(10, 20), "provider"), (Min(20), null, "platform")),
            Apply([new Event(Min(20), "platform"), new Event(Min(10, 20), null), new Event(Min(10), "provider")]));

    [Fact]
    public void An_interruption_reported_with_a_start_before_the_previous_resume_leaves_neither_open()
    {
        // A gang lease: node A fails at 10:00 and its replacement runs at 20:00; node B's failure, dated 15:00 by its
        // health report, is handled after that resume and lasts until 30:00. Down from 10:00 to 30:00, in whatever order
        // the four events arrive; before, the first interruption stayed open and the lease was "down" until it ended.
        var events = new[] { new Event(Min(10), "provider"), new Event(Min(20), null), new Event(Min(15), "provider"), new Event(Min(30), null) };
        foreach (var order in Permutations(events.Length))
        {
            var rows = Apply(order.Select(i => events[i]));

            Assert.All(rows, r => Assert.NotNull(r.EndedAt));
            var metered = Metering.Meter(new LeaseUsage(T0, T0.AddHours(1), T0, T0.AddHours(1), "completed", "renter", false, Sla.Standard,
                rows.Where(r => r.Cause.Length > 0).Select(r => new DowntimeInterval(r.StartedAt, r.EndedAt, r.Cause)).ToList()));
            Assert.Equal(40 * 60, metered.BilledSeconds);
            Assert.Equal(20 * 60, metered.DowntimeSeconds);
        }
    }

    private static IEnumerable<int[]> Permutations(int n)
    {
        var a = Enumerable.Range(0, n).ToArray();
        while (true)
        {
            yield return (int[])a.Clone();
            var i = n - 2;
            while (i >= 0 && a[i] >= a[i + 1]) i--;
            if (i < 0) yield break;
            var j = n - 1;
            while (a[j] <= a[i]) j--;
            (a[i], a[j]) = (a[j], a[i]);
            Array.Reverse(a, i + 1, n - i - 1);
        }
    }
}
