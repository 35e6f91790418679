namespace Marketplace.Bidding.Domain;

/// <summary>Why a match made on an offer no longer fits the offer's new terms.</summary>
public enum RevokeCause { Withdrawn, Window, Interruptible, Capacity }

public sealed record Revocation(Guid MatchId, RevokeCause Cause);

/// <summary>
/// What an offer's new terms (or its withdrawal) do to the matches already made on it (docs/market.md, "Offer changes").
/// A match that has started is kept whatever the terms. The matches that have not started are kept in the order they
/// were made while the new terms still hold them: a window covers their whole lease, an interruptible match still finds
/// interruptible use allowed, and the capacity holds them next to the matches kept before them. The rest are revoked.
/// A withdrawn offer (<c>terms</c> null) keeps only what has started. Prices agreed are never revisited.
/// </summary>
public static class OfferChanges
{
    public static IReadOnlyList<Revocation> Revoked(OfferCandidate? terms, IReadOnlyList<Booking> bookings, DateTimeOffset now)
    {
        var kept = new List<Booking>();
        var pending = new List<Booking>();
        foreach (var b in bookings)
            if (b.Start <= now) kept.Add(b);
            else pending.Add(b);
        pending.Sort((x, y) =>
        {
            var c = x.MatchedAt.CompareTo(y.MatchedAt);
            return c != 0 ? c : x.MatchId.CompareTo(y.MatchId);
        });

        var revoked = new List<Revocation>();
        foreach (var b in pending)
        {
            RevokeCause? cause = terms is null ? RevokeCause.Withdrawn
                : !terms.Covers(b.Start, b.End) ? RevokeCause.Window
                : b.Interruptible && !terms.InterruptibleAllowed ? RevokeCause.Interruptible
                : Clearing.PeakUse(kept, b.Start, b.End) + b.Count > terms.Capacity ? RevokeCause.Capacity
                : null;
            if (cause is { } c) revoked.Add(new Revocation(b.MatchId, c));
            else kept.Add(b);
        }
        return revoked;
    }

    /// <summary>The reason a renter reads on its order.</summary>
    public static string Describe(RevokeCause cause, Guid offerId) => cause switch
    {
        RevokeCause.Withdrawn => $"offer {offerId} was withdrawn by its provider before the lease started",
        RevokeCause.Window => $"offer {offerId} changed its availability windows before the lease started; they no longer cover it",
        RevokeCause.Interruptible => $"offer {offerId} no longer allows interruptible use, before the lease started",
        _ => $"offer {offerId} reduced its capacity before the lease started; earlier matches keep what is left",
    };
}
