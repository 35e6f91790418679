using Marketplace.Contracts;
using Marketplace.ServiceDefaults.Web;

namespace Marketplace.Listings.Offers;

public sealed record TimeWindowInput(DateTimeOffset? Start, DateTimeOffset? End);

/// <summary>The terms of an offer as a request gives them (POST whole, PATCH merged onto the current offer).</summary>
internal sealed record OfferTermsInput(
    DateTimeOffset? WindowStart,
    DateTimeOffset? WindowEnd,
    TimeWindowInput[]? Windows,
    MoneyInput? AskPerHour,
    int? MinLeaseSeconds,
    bool? InterruptibleAllowed,
    MoneyInput? InterruptibleFloorPerHour,
    int? PreemptionNoticeSeconds,
    string? SlaLevel);

/// <summary>Terms that passed every rule.</summary>
internal sealed record OfferTerms(
    IReadOnlyList<TimeWindow> Windows,
    Money Ask,
    int MinLeaseSeconds,
    bool InterruptibleAllowed,
    long? FloorAmount,
    int PreemptionNoticeSeconds,
    string SlaLevel);

internal static class OfferTermRules
{
    public const int MaxWindows = 50;
    public const int MaxPreemptionNoticeSeconds = 86_400;
    public const string DefaultSla = "standard";
    public static readonly string[] SlaLevels = ["none", "standard", "premium"];

    /// <summary>Adds every broken rule to <paramref name="v"/>; the terms when none is broken.</summary>
    public static OfferTerms? Check(OfferTermsInput t, Validation v, DateTimeOffset now, int marketMinLease)
    {
        var minLease = t.MinLeaseSeconds;
        v.Require(t.AskPerHour?.Amount is > 0, "ask_per_hour.amount", "is required and must be a positive amount in minor units.")
         .Require(Inputs.IsCurrency(t.AskPerHour?.Currency), "ask_per_hour.currency", $"is required: {Inputs.CurrencyRule}.")
         .Require(minLease >= marketMinLease, "min_lease_seconds", $"is required and must be at least {marketMinLease}.")
         .Require(t.SlaLevel is null || SlaLevels.Contains(t.SlaLevel), "sla_level", $"must be one of {string.Join(", ", SlaLevels)}.")
         .Require(t.PreemptionNoticeSeconds is null or (>= 0 and <= MaxPreemptionNoticeSeconds), "preemption_notice_seconds",
             $"must be between 0 and {MaxPreemptionNoticeSeconds} seconds.");
        if (t.InterruptibleFloorPerHour is { } floor)
            v.Require(t.InterruptibleAllowed == true, "interruptible_floor_per_hour", "needs interruptible_allowed: true (a floor for use that is not allowed means nothing).")
             .Require(floor.Amount is > 0, "interruptible_floor_per_hour.amount", "must be a positive amount in minor units.")
             .Require(floor.Currency == t.AskPerHour?.Currency, "interruptible_floor_per_hour.currency", "must be the ask's currency.")
             .Require(floor.Amount is not > 0 || t.AskPerHour?.Amount is not > 0 || floor.Amount <= t.AskPerHour.Amount,
                 "interruptible_floor_per_hour.amount", "must not exceed ask_per_hour (interruptible use is never dearer than guaranteed use).");

        var windows = Windows(t, v, now, minLease is >= 1 ? minLease.Value : null);
        return v.Failed || windows is null
            ? null
            : new OfferTerms(windows, new Money(t.AskPerHour!.Amount!.Value, t.AskPerHour.Currency!), minLease!.Value, t.InterruptibleAllowed ?? false,
                t.InterruptibleFloorPerHour?.Amount, t.PreemptionNoticeSeconds ?? 0, t.SlaLevel ?? DefaultSla);
    }

    private static List<TimeWindow>? Windows(OfferTermsInput t, Validation v, DateTimeOffset now, int? minLease)
    {
        var (start, end) = (t.WindowStart?.ToMicroseconds(), t.WindowEnd?.ToMicroseconds());
        if (t.Windows is null)
        {
            v.Require(start is not null, "window_start", "is required (ISO-8601 UTC), or give windows.")
             .Require(end is not null, "window_end", "is required (ISO-8601 UTC), or give windows.");
            if (start is null || end is null) return null;
            if (end <= start) v.Add("window_end", "must be after window_start.");
            else v.Require(end > now, "window_end", $"must be in the future (now is {OfferQueries.Iso(now)}).");
            if (end > start && minLease is { } m)
                v.Require((end.Value - start.Value).TotalSeconds >= m, "window_end",
                    $"leaves a window shorter than min_lease_seconds ({m}); no lease would fit.");
            return [new TimeWindow(start.Value, end.Value)];
        }

        var given = t.Windows;
        v.Require(given.Length is >= 1 and <= MaxWindows, "windows", $"must list 1 to {MaxWindows} windows.");
        if (given.Length <= MaxWindows)
        {
            for (var i = 0; i < given.Length; i++)
            {
                var (s, e) = (given[i].Start, given[i].End);
                v.Require(s is not null, $"windows[{i}].start", "is required (ISO-8601 UTC).")
                 .Require(e is not null, $"windows[{i}].end", "is required (ISO-8601 UTC).");
                if (s is null || e is null) continue;
                if (e <= s) v.Add($"windows[{i}].end", "must be after its start.");
                else if (minLease is { } m)
                    v.Require((e.Value - s.Value).TotalSeconds >= m, $"windows[{i}]", $"is shorter than min_lease_seconds ({m}); no lease would fit.");
            }
        }
        if (given.Any(w => w.Start is null || w.End is null || w.End <= w.Start) || given.Length is 0 or > MaxWindows) return null;

        var windows = given.Select(w => new TimeWindow(w.Start!.Value.ToMicroseconds(), w.End!.Value.ToMicroseconds())).OrderBy(w => w.Start).ToList();
        for (var i = 1; i < windows.Count; i++)
            if (windows[i].Start <= windows[i - 1].End)
            {
                v.Add("windows", $"{OfferQueries.Iso(windows[i - 1].Start)}–{OfferQueries.Iso(windows[i - 1].End)} and " +
                    $"{OfferQueries.Iso(windows[i].Start)}–{OfferQueries.Iso(windows[i].End)} overlap or touch; merge them into one window.");
                break;
            }
        v.Require(windows[^1].End > now, "windows", $"must have a window that ends in the future (now is {OfferQueries.Iso(now)}).")
         .Require(start is null || start == windows[0].Start, "window_start", "must be the first window's start when windows are given (or leave it out).")
         .Require(end is null || end == windows[^1].End, "window_end", "must be the last window's end when windows are given (or leave it out).");
        return windows;
    }
}
