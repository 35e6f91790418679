using Dapper;
using Marketplace.Bidding.Domain;
using Marketplace.Contracts;
using Marketplace.ServiceDefaults.Data;
using MassTransit;

namespace Marketplace.Bidding.Orders;

/// <summary>
/// The order book of one market (one accelerator model) in the database: the lock that serialises its matching across
/// instances, the candidate offers with their booked capacity, and recording a match with its OrderMatched event.
/// </summary>
internal static class OrderBook
{
    /// <summary>
    /// Serialises matching of one market across every instance until the transaction ends: capacity read under the
    /// lock stays true until the match that uses it is committed.
    /// </summary>
    public static Task LockMarketAsync(Tx tx, string model, CancellationToken ct) =>
        tx.Connection.ExecuteAsync(new CommandDefinition(
            "SELECT pg_advisory_xact_lock(hashtext(@model))", new { model }, tx.Transaction, cancellationToken: ct));

    public static async Task<List<OfferCandidate>> LoadCandidatesAsync(Tx tx, string model, DateTimeOffset now, CancellationToken ct)
    {
        var offers = (await tx.Connection.QueryAsync<OfferRow>(new CommandDefinition("""
            SELECT offer_id, provider_org_id, node_ids, accelerator_model, region, jurisdiction, accelerator_count,
                   window_start, window_end, ask_amount, ask_currency, min_lease_seconds, published_at
            FROM offers
            WHERE accelerator_model = @model AND status = 'active' AND window_end > @now
            """, new { model, now }, tx.Transaction, cancellationToken: ct))).AsList();
        if (offers.Count == 0) return [];
        var bookings = (await tx.Connection.QueryAsync<BookingRow>(new CommandDefinition("""
            SELECT offer_id, start_at, end_at, accelerator_count FROM matches
            WHERE state = 'active' AND end_at > @now AND offer_id = ANY(@ids)
            """, new { now, ids = offers.Select(o => o.OfferId).ToArray() }, tx.Transaction, cancellationToken: ct)))
            .ToLookup(b => b.OfferId, b => new Booking(b.StartAt, b.EndAt, b.AcceleratorCount));
        return offers.Select(o => new OfferCandidate(o.OfferId, o.AcceleratorModel, o.Region, o.Jurisdiction, o.AcceleratorCount,
            o.WindowStart, o.WindowEnd, o.AskAmount, o.AskCurrency, o.MinLeaseSeconds, o.PublishedAt, bookings[o.OfferId].ToList())).ToList();
    }

    /// <summary>
    /// Tries to match <paramref name="order"/> (an on-demand order starts now) against <paramref name="candidates"/>,
    /// records the outcome on the order, and keeps <paramref name="candidates"/> current for the next order of the book.
    /// Call under <see cref="LockMarketAsync"/> with candidates loaded under it.
    /// </summary>
    /// <param name="cancelWhenUnmatched">True for an immediate-or-cancel order placed now.</param>
    public static async Task<MatchDecision> MatchAsync(
        Tx tx, OrderRow order, List<OfferCandidate> candidates, bool cancelWhenUnmatched, CancellationToken ct)
    {
        var now = tx.Now;
        var spec = new OrderToMatch(order.AcceleratorModel, order.AcceleratorCount, order.MaxPriceAmount, order.MaxPriceCurrency,
            order.Region, order.Jurisdiction, now, now.AddSeconds(order.DurationSeconds));
        var decision = Matching.Choose(spec, candidates);

        if (decision.Offer is not { } offer)
        {
            await tx.Connection.ExecuteAsync(new CommandDefinition("""
                UPDATE orders SET status = @status, status_reason = @reason, updated_at = @now
                WHERE id = @id AND status = 'open'
                """, new { id = order.Id, status = cancelWhenUnmatched ? "cancelled" : "open", reason = decision.Reason, now },
                tx.Transaction, cancellationToken: ct));
            return decision;
        }

        var matchId = NewId.NextGuid();
        var updated = await tx.Connection.ExecuteAsync(new CommandDefinition("""
            UPDATE orders SET status = 'matched', status_reason = NULL, updated_at = @now WHERE id = @id AND status = 'open'
            """, new { id = order.Id, now }, tx.Transaction, cancellationToken: ct));
        if (updated == 0) return new MatchDecision(null, 0, "the order is no longer open");

        await tx.Connection.ExecuteAsync(new CommandDefinition("""
            INSERT INTO matches (id, order_id, offer_id, accelerator_count, start_at, end_at, price_amount, price_currency, state, created_at)
            VALUES (@matchId, @orderId, @offerId, @count, @start, @end, @price, @currency, 'active', @now)
            """, new
            {
                matchId, orderId = order.Id, offerId = offer.OfferId, count = spec.Count, start = spec.Start, end = spec.End,
                price = decision.PriceAmount, currency = offer.Currency, now,
            }, tx.Transaction, cancellationToken: ct));

        var (providerOrgId, nodeIds) = await tx.Connection.QuerySingleAsync<(Guid, Guid[])>(new CommandDefinition(
            "SELECT provider_org_id, node_ids FROM offers WHERE offer_id = @id", new { id = offer.OfferId },
            tx.Transaction, cancellationToken: ct));
        await tx.PublishAsync(new OrderMatched(matchId, order.Id, order.RenterOrgId, offer.OfferId, providerOrgId, nodeIds,
            order.AcceleratorModel, spec.Count, spec.Start, spec.End, new Money(decision.PriceAmount, offer.Currency),
            order.Type, now), ct);

        // The next order of the same book sees this match's capacity as taken.
        var i = candidates.FindIndex(c => c.OfferId == offer.OfferId);
        candidates[i] = offer with { Bookings = [.. offer.Bookings, new Booking(spec.Start, spec.End, spec.Count)] };
        return decision;
    }

    /// <summary>Matches the open good-till-cancelled orders of a market in time priority (after new supply arrived).</summary>
    public static async Task<int> MatchStandingOrdersAsync(Tx tx, string model, CancellationToken ct)
    {
        await LockMarketAsync(tx, model, ct);
        var candidates = await LoadCandidatesAsync(tx, model, tx.Now, ct);
        // FOR UPDATE: a concurrent cancel of one of these orders waits for us (or we for it), never both win.
        var open = await tx.Connection.QueryAsync<OrderRow>(new CommandDefinition($"""
            SELECT {OrderRow.Columns} FROM orders
            WHERE accelerator_model = @model AND status = 'open' AND type = 'on_demand'
            ORDER BY created_at, id
            FOR UPDATE
            """, new { model }, tx.Transaction, cancellationToken: ct));
        var matched = 0;
        foreach (var order in open)
            if ((await MatchAsync(tx, order, candidates, cancelWhenUnmatched: false, ct)).Matched) matched++;
        return matched;
    }

    public static async Task<OrderResponse?> ReadAsync(Tx tx, Guid orderId, Guid renterOrgId, CancellationToken ct)
    {
        var order = await tx.Connection.QuerySingleOrDefaultAsync<OrderRow>(new CommandDefinition($"""
            SELECT {OrderRow.Columns} FROM orders WHERE id = @orderId AND renter_org_id = @renterOrgId
            """, new { orderId, renterOrgId }, tx.Transaction, cancellationToken: ct));
        if (order is null) return null;
        var match = await tx.Connection.QuerySingleOrDefaultAsync<MatchRow>(new CommandDefinition("""
            SELECT id, order_id, offer_id, price_amount, price_currency, start_at, end_at FROM matches
            WHERE order_id = @orderId AND state = 'active'
            """, new { orderId }, tx.Transaction, cancellationToken: ct));
        return OrderResponse.From(order, match);
    }

    private sealed class OfferRow
    {
        public Guid OfferId { get; init; }
        public Guid ProviderOrgId { get; init; }
        public Guid[] NodeIds { get; init; } = [];
        public string AcceleratorModel { get; init; } = "";
        public string Region { get; init; } = "";
        public string Jurisdiction { get; init; } = "";
        public int AcceleratorCount { get; init; }
        public DateTimeOffset WindowStart { get; init; }
        public DateTimeOffset WindowEnd { get; init; }
        public long AskAmount { get; init; }
        public string AskCurrency { get; init; } = "";
        public int MinLeaseSeconds { get; init; }
        public DateTimeOffset PublishedAt { get; init; }
    }

    private sealed class BookingRow
    {
        public Guid OfferId { get; init; }
        public DateTimeOffset StartAt { get; init; }
        public DateTimeOffset EndAt { get; init; }
        public int AcceleratorCount { get; init; }
    }
}
