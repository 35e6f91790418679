using System.Diagnostics;

namespace Marketplace.Billing.Runs;

/// <summary>
/// Wall time a billing run spent per phase, summed over its batches. Logged at the end of every run and reported by the
/// benchmark, so a slow run says where its time went.
/// </summary>
public sealed class RunProfile
{
    private readonly Dictionary<string, long> _ticks = [];
    private readonly List<string> _order = [];

    /// <summary>Adds the time since <paramref name="since"/> (a <see cref="Stopwatch.GetTimestamp"/>) to the phase; returns now.</summary>
    public long Lap(string phase, long since)
    {
        var now = Stopwatch.GetTimestamp();
        lock (_ticks)
        {
            if (!_ticks.ContainsKey(phase)) _order.Add(phase);
            _ticks[phase] = _ticks.GetValueOrDefault(phase) + (now - since);
        }
        return now;
    }

    public IReadOnlyList<(string Phase, TimeSpan Time)> Phases
    {
        get
        {
            lock (_ticks) return [.. _order.Select(p => (p, Stopwatch.GetElapsedTime(0, _ticks[p])))];
        }
    }

    public override string ToString() => string.Join(", ", Phases.Select(p => $"{p.Phase} {p.Time.TotalSeconds:0.00} s"));
}
