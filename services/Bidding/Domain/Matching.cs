using System.Globalization;

namespace Marketplace.Bidding.Domain;

/// <summary>What an order asks for, over a fixed window [Start, End).</summary>
public sealed record OrderToMatch(
    string Model,
    int Count,
    long MaxPriceAmount,
    string Currency,
    string? Region,
    string? Jurisdiction,
    DateTimeOffset Start,
    DateTimeOffset End)
{
    public long DurationSeconds => (long)(End - Start).TotalSeconds;
}

/// <summary>Capacity of an offer already promised to a match over [Start, End).</summary>
public sealed record Booking(DateTimeOffset Start, DateTimeOffset End, int Count)
{
    public Guid MatchId { get; init; }

    /// <summary>An interruptible match: a higher-priority order may preempt it (after the offer's notice).</summary>
    public bool Interruptible { get; init; }

    /// <summary>The interruptible order's bid per accelerator-hour: lower bids are preempted first.</summary>
    public long BidAmount { get; init; }

    public DateTimeOffset MatchedAt { get; init; }

    /// <summary>
    /// The accelerators Scheduling booked for the match (its <c>LeaseScheduled</c>); null while the match is in flight.
    /// A placed match blocks exactly these accelerators for its whole window (<see cref="Clearing.Free"/>).
    /// </summary>
    public IReadOnlyList<Guid>? SlotIds { get; init; }
}

/// <summary>An active offer of the market with the matches that already hold part of its capacity.</summary>
public sealed record OfferCandidate(
    Guid OfferId,
    string Model,
    string Region,
    string Jurisdiction,
    int Capacity,
    DateTimeOffset WindowStart,
    DateTimeOffset WindowEnd,
    long AskAmount,
    string Currency,
    int MinLeaseSeconds,
    DateTimeOffset PublishedAt,
    IReadOnlyList<Booking> Bookings)
{
    public bool InterruptibleAllowed { get; init; }

    /// <summary>Interruptible use never trades below this; 0 means the ask is the floor.</summary>
    public long InterruptibleFloorAmount { get; init; }

    public long Floor => InterruptibleFloorAmount > 0 ? InterruptibleFloorAmount : AskAmount;

    public int PreemptionNoticeSeconds { get; init; }

    /// <summary>Availability windows inside [WindowStart, WindowEnd); null means that one window.</summary>
    public IReadOnlyList<(DateTimeOffset Start, DateTimeOffset End)>? Windows { get; init; }

    /// <summary>True when one availability window holds the whole of [start, end).</summary>
    public bool Covers(DateTimeOffset start, DateTimeOffset end)
    {
        if (start < WindowStart || end > WindowEnd) return false;
        if (Windows is null) return true;
        foreach (var (s, e) in Windows)
            if (s <= start && e >= end) return true;
        return false;
    }
}

/// <summary>The chosen offer and the trade price, or why nothing matched (a sentence the renter can act on).</summary>
public sealed record MatchDecision(OfferCandidate? Offer, long PriceAmount, string? Reason)
{
    public bool Matched => Offer is not null;
}

/// <summary>
/// The matching rule of one market: price-time priority over the offers that can take the whole order (a gang of
/// <c>Count</c> accelerators from one offer, all or nothing). The trade happens at the offer's ask, so the renter
/// never pays above its max and the provider never receives below its ask.
/// </summary>
public static class Matching
{
    public static MatchDecision Choose(OrderToMatch order, IEnumerable<OfferCandidate> offers, string askWord = "ask")
    {
        var where = Where(order);
        var ofModel = offers.Where(o => o.Model == order.Model).ToList();
        if (ofModel.Count == 0)
            return NoMatch($"no {order.Model} offer is listed at the moment");

        var inPlace = ofModel.Where(o => (order.Region is null || o.Region == order.Region)
                                         && (order.Jurisdiction is null || o.Jurisdiction == order.Jurisdiction)).ToList();
        if (inPlace.Count == 0)
        {
            var elsewhere = string.Join(", ", ofModel.Select(o => $"{o.Region}/{o.Jurisdiction}").Distinct().Order(StringComparer.Ordinal).Take(5));
            return NoMatch($"no {order.Model} offer{where}; your region/jurisdiction constraint excludes all {ofModel.Count} offers, "
                           + $"which are in {elsewhere}");
        }

        var inCurrency = inPlace.Where(o => o.Currency == order.Currency).ToList();
        if (inCurrency.Count == 0)
        {
            var currencies = string.Join(", ", inPlace.Select(o => o.Currency).Distinct().Order(StringComparer.Ordinal));
            return NoMatch($"no {order.Model} offer{where} is priced in {order.Currency}; offers are priced in {currencies}");
        }

        var inWindow = inCurrency.Where(o => o.Covers(order.Start, order.End)).ToList();
        if (inWindow.Count == 0)
        {
            var latestEnd = inCurrency.Max(o => o.WindowEnd);
            return NoMatch($"no {order.Model} offer{where} covers {Iso(order.Start)} to {Iso(order.End)}; "
                           + $"the latest offered window ends at {Iso(latestEnd)}");
        }

        var leaseOk = inWindow.Where(o => order.DurationSeconds >= o.MinLeaseSeconds).ToList();
        if (leaseOk.Count == 0)
        {
            var shortest = inWindow.Min(o => o.MinLeaseSeconds);
            return NoMatch($"every {order.Model} offer{where} requires a lease of at least {shortest} s; "
                           + $"your order lasts {order.DurationSeconds} s");
        }

        var withCapacity = leaseOk.Where(o => RemainingCapacity(o, order.Start, order.End) >= order.Count).ToList();
        if (withCapacity.Count == 0)
        {
            var free = leaseOk.Select(o => RemainingCapacity(o, order.Start, order.End)).ToList();
            var most = free.Max();
            var total = free.Sum();
            if (total >= order.Count)
                return NoMatch($"no {order.Model} offer{where} has {order.Count} accelerators free from {Iso(order.Start)} to {Iso(order.End)}; "
                               + $"the most free in one offer is {most}: {total} are free across {free.Count(f => f > 0)} offers, "
                               + "but a gang must come from one offer");
            return NoMatch($"no {order.Model} offer{where} has {order.Count} accelerators free from {Iso(order.Start)} to {Iso(order.End)}; "
                           + $"the most free in one offer is {most}");
        }

        var affordable = withCapacity.Where(o => o.AskAmount <= order.MaxPriceAmount).ToList();
        if (affordable.Count == 0)
        {
            var bestAsk = withCapacity.Min(o => o.AskAmount);
            return NoMatch($"no {order.Model} offer{where} at or below {Price(order.MaxPriceAmount, order.Currency)}; "
                           + $"best {askWord} {Price(bestAsk, order.Currency)}, your max {Price(order.MaxPriceAmount, order.Currency)} "
                           + $"({Price(bestAsk - order.MaxPriceAmount, order.Currency)} short)");
        }

        // Price-time priority; the offer id breaks exact ties so the choice never depends on input order.
        var best = affordable
            .OrderBy(o => o.AskAmount)
            .ThenBy(o => o.PublishedAt)
            .ThenBy(o => o.OfferId)
            .First();
        return new MatchDecision(best, best.AskAmount, null);
    }

    /// <summary>Accelerators free for the whole of [start, end): see <see cref="Clearing.Free"/>.</summary>
    public static int RemainingCapacity(OfferCandidate offer, DateTimeOffset start, DateTimeOffset end) =>
        Clearing.Free(offer.Capacity, offer.Bookings, start, end);

    /// <summary>A per-accelerator-hour price for people: minor units shown with two decimals ("2.35 CNY/h").</summary>
    public static string Price(long amountMinor, string currency) =>
        (amountMinor / 100m).ToString("0.00", CultureInfo.InvariantCulture) + " " + currency + "/h";

    private static MatchDecision NoMatch(string reason) => new(null, 0, reason);

    private static string Where(OrderToMatch order) => (order.Region, order.Jurisdiction) switch
    {
        (null, null) => "",
        (string r, null) => $" in {r}",
        (null, string j) => $" in jurisdiction {j}",
        (string r, string j) => $" in {r} ({j})",
    };

    private static string Iso(DateTimeOffset t) => t.UtcDateTime.ToString("yyyy-MM-dd'T'HH:mm:ss'Z'", CultureInfo.InvariantCulture);
}
