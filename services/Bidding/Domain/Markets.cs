namespace Marketplace.Bidding.Domain;

/// <summary>
/// A market is one accelerator model in one region group. Regions of a group are close enough to be one pool of supply
/// and one price (cn-east, cn-north, cn-south → "cn"); an order may still pin its exact region.
/// </summary>
public static class Markets
{
    /// <summary>
    /// The region group is the region's prefix before the first '-' ("cn-east" → "cn", "eu-west-1" → "eu",
    /// "us-east" → "us"); a region without '-' is its own group.
    /// </summary>
    public static string RegionGroup(string region)
    {
        var trimmed = region.Trim().ToLowerInvariant();
        var dash = trimmed.IndexOf('-', StringComparison.Ordinal);
        return dash > 0 ? trimmed[..dash] : trimmed;
    }

    /// <summary>The market's name in events and locks: "h100-sxm/cn".</summary>
    public static string Key(string model, string regionGroup) => model + "/" + regionGroup;

    /// <summary>
    /// The best ask among <paramref name="offers"/> (of one market): the lowest ask in <paramref name="currency"/> of an
    /// offer whose window is open at <paramref name="now"/> and that has an accelerator not booked at that instant. The same
    /// rule as the ask of MarketQuote, on offers already in memory with their bookings.
    /// </summary>
    public static long? BestAsk(IEnumerable<OfferCandidate> offers, string currency, DateTimeOffset now)
    {
        long? best = null;
        foreach (var o in offers)
        {
            if (o.Currency != currency || o.WindowStart > now || o.WindowEnd <= now || (best is { } b && o.AskAmount >= b)) continue;
            var used = 0;
            foreach (var booking in o.Bookings)
                if (booking.Start <= now && booking.End > now) used += booking.Count;
            if (o.Capacity > used) best = o.AskAmount;
        }
        return best;
    }
}
