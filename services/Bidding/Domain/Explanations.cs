namespace Marketplace.Bidding.Domain;

/// <summary>Why an order is not filled, and the nearest changes that would fill it now.</summary>
public sealed record Explanation(string Reason, IReadOnlyList<string> Alternatives);

/// <summary>
/// Explains an unfilled order against the market after clearing, in terms a renter can act on: the first rule that stands
/// in the way (<see cref="Matching.Choose"/>), then the nearest alternatives – another price, another window, another
/// region of the market, another model, or the gang split. <c>offers</c> may hold offers of other models: they only
/// feed the "another model" alternative.
/// </summary>
public static class Explanations
{
    public static Explanation Explain(BookOrder order, IReadOnlyList<OfferCandidate> offers, DateTimeOffset now)
    {
        var interruptible = order.Kind == OrderKind.Interruptible;
        var start = order.EarliestStart > now ? order.EarliestStart : now;
        var duration = TimeSpan.FromSeconds(order.DurationSeconds);
        if (order.Kind == OrderKind.Reserved && start + duration > order.LatestEnd)
            return new Explanation($"the window has passed: a {order.DurationSeconds} s lease can no longer end by {Iso(order.LatestEnd)}", []);

        var usable = offers;
        if (interruptible)
        {
            usable = [.. offers.Where(o => o.InterruptibleAllowed).Select(o => o with { AskAmount = o.Floor })];
            if (usable.Count == 0 && offers.Any(o => o.Model == order.Model))
                return new Explanation($"no {order.Model} offer allows interruptible use at the moment",
                    ["place an on_demand order instead"]);
        }

        var spec = new OrderToMatch(order.Model, order.Count, order.LimitAmount, order.Currency, order.Region, order.Jurisdiction,
            start, start + duration);
        var decision = Matching.Choose(spec, usable, interruptible ? "floor" : "ask");
        var reason = decision.Reason ?? (interruptible
            ? "higher-priority orders (on-demand, reserved or higher bids) hold the capacity"
            : $"capacity exists from {Iso(start)} but was taken by orders ahead of this one");
        return new Explanation(reason, Alternatives(order, spec, usable, start, duration));
    }

    private static List<string> Alternatives(BookOrder order, OrderToMatch spec, IReadOnlyList<OfferCandidate> offers,
        DateTimeOffset start, TimeSpan duration)
    {
        var alternatives = new List<string>();
        var ofModel = offers.Where(o => o.Model == order.Model && o.Currency == order.Currency
                                        && order.DurationSeconds >= o.MinLeaseSeconds).ToList();
        bool InPlace(OfferCandidate o) => (order.Region is null || o.Region == order.Region)
                                          && (order.Jurisdiction is null || o.Jurisdiction == order.Jurisdiction);
        bool RoomNow(OfferCandidate o) => o.Covers(spec.Start, spec.End)
                                          && Matching.RemainingCapacity(o, spec.Start, spec.End) >= order.Count;
        var word = order.Kind == OrderKind.Interruptible ? "bid_per_hour" : "max_price_per_hour";

        // Another price: the cheapest offer that holds the whole order now, above the limit.
        var priced = ofModel.Where(o => InPlace(o) && RoomNow(o)).MinBy(o => o.AskAmount);
        if (priced is not null && priced.AskAmount > order.LimitAmount)
            alternatives.Add($"raise {word} to {Matching.Price(priced.AskAmount, order.Currency)}: "
                             + $"{order.Count} accelerators are free now at that price");

        // Another window: the earliest start at which an affordable offer in place holds the gang.
        var affordable = ofModel.Where(o => InPlace(o) && o.AskAmount <= order.LimitAmount).ToList();
        if (priced is null || priced.AskAmount > order.LimitAmount)
        {
            DateTimeOffset? earliest = null;
            foreach (var o in affordable)
            {
                var candidates = o.Bookings.Select(b => b.End).Append(o.WindowStart)
                    .Concat(o.Windows?.Select(w => w.Start) ?? []).Where(t => t > start).Append(start).Order();
                foreach (var t in candidates)
                {
                    if (earliest is { } e && t >= e) break;
                    if (o.Covers(t, t + duration) && Matching.RemainingCapacity(o, t, t + duration) >= order.Count)
                    {
                        earliest = t;
                        break;
                    }
                }
            }
            if (earliest is { } at && at > start)
                alternatives.Add($"start later: {order.Count} accelerators are free at your price from {Iso(at)} "
                                 + $"(a reserved order with earliest_start {Iso(at)})");
        }

        // Another region of the market: offers outside the order's region/jurisdiction with room now at the limit.
        if (order.Region is not null || order.Jurisdiction is not null)
        {
            var elsewhere = ofModel.Where(o => !InPlace(o) && o.AskAmount <= order.LimitAmount && RoomNow(o))
                .GroupBy(o => o.Region).Select(g => (Region: g.Key, Ask: g.Min(o => o.AskAmount)))
                .OrderBy(x => x.Ask).ThenBy(x => x.Region, StringComparer.Ordinal).Take(3).ToList();
            if (elsewhere.Count > 0)
                alternatives.Add("another region: " + string.Join(", ",
                    elsewhere.Select(x => $"{x.Region} has room at {Matching.Price(x.Ask, order.Currency)}")));
        }

        // Another model: offers of other models, in place and in the order's currency, that hold the whole order in its
        // window within its price (the market for a model may be empty or full while a comparable one has room).
        var otherModels = offers.Where(o => o.Model != order.Model && o.Currency == order.Currency && InPlace(o)
                                            && order.DurationSeconds >= o.MinLeaseSeconds && o.AskAmount <= order.LimitAmount
                                            && RoomNow(o))
            .GroupBy(o => o.Model).Select(g => (Model: g.Key, Ask: g.Min(o => o.AskAmount)))
            .OrderBy(x => x.Ask).ThenBy(x => x.Model, StringComparer.Ordinal).Take(3).ToList();
        if (otherModels.Count > 0)
            alternatives.Add("another model: " + string.Join(", ",
                otherModels.Select(x => $"{x.Model} has {order.Count} free at {Matching.Price(x.Ask, order.Currency)}")));

        // The gang split: enough free in total, but not in one offer.
        var free = affordable.Where(o => o.Covers(spec.Start, spec.End))
            .Select(o => Matching.RemainingCapacity(o, spec.Start, spec.End)).Where(f => f > 0).ToList();
        if (free.Count > 1 && free.Max() < order.Count && free.Sum() >= order.Count)
            alternatives.Add($"a smaller gang: at most {free.Max()} accelerators are free in one offer now "
                             + $"({free.Sum()} across {free.Count} offers)");
        return alternatives;
    }

    private static string Iso(DateTimeOffset t) => t.UtcDateTime.ToString("yyyy-MM-dd'T'HH:mm:ss'Z'", System.Globalization.CultureInfo.InvariantCulture);
}
