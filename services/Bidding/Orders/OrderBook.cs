using System.Text.Json;
using Dapper;
using Marketplace.Bidding.Domain;
using Marketplace.Bidding.Market;
using Marketplace.Contracts;
using Marketplace.ServiceDefaults.Data;
using MassTransit;

namespace Marketplace.Bidding.Orders;

/// <summary>
/// The order book of a market (model × region group) in the database: the locks that serialise its clearing across
/// instances, the offers with their booked capacity, and recording what <see cref="Clearing"/> decided (matches,
/// preemptions, explanations) with its events in the outbox.
/// </summary>
internal static class OrderBook
{
    // Two lock namespaces of pg_advisory_xact_lock(int, int): a model, and one market of it.
    private const int ModelLocks = 4201, MarketLocks = 4202;

    /// <summary>
    /// Serialises clearing of one market across every instance until the transaction ends: shared on the model, exclusive
    /// on the market, so the markets of a model clear in parallel. A null group (an order without a region, which may take
    /// an offer of any group) takes the model exclusively. Capacity read under the lock stays true until commit.
    /// </summary>
    public static Task LockAsync(Tx tx, string model, string? group, CancellationToken ct) =>
        tx.Connection.ExecuteAsync(new CommandDefinition(group is null
            ? $"SELECT pg_advisory_xact_lock({ModelLocks}, hashtext(@model));"
            : $"SELECT pg_advisory_xact_lock_shared({ModelLocks}, hashtext(@model)); SELECT pg_advisory_xact_lock({MarketLocks}, hashtext(@market));",
            new { model, market = group is null ? null : Markets.Key(model, group) }, tx.Transaction, cancellationToken: ct));

    /// <summary>Active offers of a model (of one group, or of all groups but <paramref name="exceptGroup"/>) with their bookings.</summary>
    public static async Task<Supply> LoadSupplyAsync(Tx tx, string model, string? group, CancellationToken ct, string? exceptGroup = null)
    {
        var now = tx.Now;
        var offers = (await tx.Connection.QueryAsync<OfferRow>(new CommandDefinition("""
            SELECT offer_id, provider_org_id, node_ids, accelerator_model, region, jurisdiction, accelerator_count, window_start,
                   window_end, ask_amount, ask_currency, min_lease_seconds, published_at, interruptible_allowed,
                   interruptible_floor_amount, preemption_notice_seconds, sla_level, windows::text AS windows, region_group, slot_ids
            FROM offers
            WHERE accelerator_model = @model AND status = 'active' AND window_end > @now
              AND (@group::text IS NULL OR region_group = @group) AND (@exceptGroup::text IS NULL OR region_group <> @exceptGroup)
            """, new { model, group, exceptGroup, now }, tx.Transaction, cancellationToken: ct))).AsList();
        if (offers.Count == 0) return new Supply([], []);
        var bookings = (await tx.Connection.QueryAsync<BookingRow>(new CommandDefinition("""
            SELECT id, offer_id, start_at, end_at, accelerator_count, interruptible, preempted_at, bid_amount, created_at FROM matches
            WHERE state = 'active' AND end_at > @now AND offer_id = ANY(@ids)
            """, new { now, ids = offers.Select(o => o.OfferId).ToArray() }, tx.Transaction, cancellationToken: ct)))
            .ToLookup(b => b.OfferId, b => new Booking(b.StartAt, b.EndAt, b.AcceleratorCount)
            {
                MatchId = b.Id,
                // Already preempted: its capacity comes back at its (shortened) end, it is not preempted twice.
                Interruptible = b.Interruptible && b.PreemptedAt is null,
                BidAmount = b.BidAmount ?? 0,
                MatchedAt = b.CreatedAt,
            });
        var candidates = offers.Select(o => new OfferCandidate(o.OfferId, o.AcceleratorModel, o.Region, o.Jurisdiction,
            o.AcceleratorCount, o.WindowStart, o.WindowEnd, o.AskAmount, o.AskCurrency, o.MinLeaseSeconds, o.PublishedAt,
            bookings[o.OfferId].ToList())
        {
            InterruptibleAllowed = o.InterruptibleAllowed,
            InterruptibleFloorAmount = o.InterruptibleFloorAmount ?? 0,
            PreemptionNoticeSeconds = o.PreemptionNoticeSeconds,
            Windows = o.Windows is null ? null
                : JsonSerializer.Deserialize<List<TimeWindow>>(o.Windows, JsonSerializerOptions.Web)!.Select(w => (w.Start, w.End)).ToList(),
        }).ToList();
        return new Supply(candidates, offers.ToDictionary(o => o.OfferId));
    }

    /// <summary>
    /// Clears <paramref name="orders"/> (open, locked) against <paramref name="supply"/> and records the outcome: matches and
    /// their OrderMatched, preemptions and their PreemptionRequested, and for every order left open the reason and the
    /// alternatives. Call under <see cref="LockAsync"/> with the supply loaded under it.
    /// </summary>
    /// <param name="explainAgainst">More offers of the model (other groups) that explanations may point to.</param>
    /// <param name="cancelUnfilledIoc">True when <paramref name="orders"/> were placed now: an unfilled ioc order is cancelled.</param>
    public static async Task<ClearingResult> ClearAsync(Tx tx, IReadOnlyList<OrderRow> orders, Supply supply,
        IReadOnlyList<OfferCandidate> explainAgainst, bool cancelUnfilledIoc, CancellationToken ct)
    {
        var now = tx.Now;
        var book = orders.ToDictionary(o => o.Id, o => (Row: o, Order: o.ToBookOrder(now)));
        var result = Clearing.Clear([.. book.Values.Select(x => x.Order)], supply.Candidates, now);

        var markets = new Dictionary<string, (Money Last, string Model, string Group)>();
        foreach (var fill in result.Fills)
        {
            var (row, _) = book[fill.OrderId];
            var offer = supply.Offers[fill.OfferId];
            var matchId = NewId.NextGuid();
            var market = Markets.Key(row.AcceleratorModel, offer.RegionGroup);
            await tx.Connection.ExecuteAsync(new CommandDefinition("""
                UPDATE orders SET status = 'matched', status_reason = NULL, alternatives = '{}', updated_at = @now WHERE id = @id;
                INSERT INTO matches (id, order_id, offer_id, accelerator_count, start_at, end_at, price_amount, price_currency, state,
                                     created_at, interruptible, bid_amount, order_type, market)
                VALUES (@matchId, @id, @offerId, @count, @start, @end, @price, @currency, 'active', @now, @interruptible, @bid, @type, @market);
                """, new
                {
                    id = row.Id, matchId, offerId = fill.OfferId, count = fill.Count, start = fill.Start, end = fill.End,
                    price = fill.PriceAmount, currency = fill.Currency, now, interruptible = fill.Interruptible,
                    bid = fill.Interruptible ? row.MaxPriceAmount : (long?)null, type = row.Type, market,
                }, tx.Transaction, cancellationToken: ct));
            foreach (var p in fill.Preemptions)
                await PreemptAsync(tx, p, fill.Interruptible
                    ? $"outbid by an interruptible bid of {Matching.Price(row.MaxPriceAmount, row.MaxPriceCurrency)}"
                    : $"displaced by a higher-priority {row.Type} order", ct);
            await tx.PublishAsync(new OrderMatched(matchId, row.Id, row.RenterOrgId, fill.OfferId, offer.ProviderOrgId, offer.NodeIds,
                row.AcceleratorModel, fill.Count, fill.Start, fill.End, new Money(fill.PriceAmount, fill.Currency), row.Type, now)
            {
                Interruptible = fill.Interruptible,
                PreemptionNoticeSeconds = offer.PreemptionNoticeSeconds,
                SlaLevel = offer.SlaLevel,
                SlotIds = offer.SlotIds,
                VerifiedOnly = row.VerifiedOnly,
            }, ct);
            markets[market] = (new Money(fill.PriceAmount, fill.Currency), row.AcceleratorModel, offer.RegionGroup);
        }

        var after = result.Offers.Concat(explainAgainst).ToList();
        foreach (var id in result.Unfilled)
        {
            var (row, order) = book[id];
            var explanation = Explanations.Explain(order, after, now);
            var windowPassed = order.Kind == OrderKind.Reserved && now.AddSeconds(order.DurationSeconds) > order.LatestEnd;
            var cancel = windowPassed || (cancelUnfilledIoc && row.TimeInForce == "ioc");
            await tx.Connection.ExecuteAsync(new CommandDefinition("""
                UPDATE orders SET status = @status, status_reason = @reason, alternatives = @alternatives, updated_at = @now
                WHERE id = @id AND status = 'open'
                """, new
                {
                    id, status = cancel ? "cancelled" : "open", reason = explanation.Reason,
                    alternatives = explanation.Alternatives.ToArray(), now,
                }, tx.Transaction, cancellationToken: ct));
        }

        foreach (var (market, trade) in markets)
        {
            var quote = await MarketQuote.ReadAsync(tx, trade.Model, trade.Group, trade.Last.Currency, ct);
            await tx.PublishAsync(new PriceTicked(market, trade.Last, quote.BestBid, quote.BestAsk, now), ct);
        }
        return result;
    }

    /// <summary>
    /// An interruptible match makes way: its capacity is taken back at the end of the notice (the match is shortened, or
    /// released if it had not started), its order says why, and Scheduling is asked to give the lease notice.
    /// </summary>
    private static async Task PreemptAsync(Tx tx, Preemption p, string why, CancellationToken ct)
    {
        var now = tx.Now;
        var reason = $"preempted: {why}; the capacity is taken back at {p.EndsAt.UtcDateTime:yyyy-MM-dd'T'HH:mm:ss'Z'}";
        var orderId = await tx.Connection.QuerySingleOrDefaultAsync<Guid?>(new CommandDefinition("""
            UPDATE matches
            SET end_at = CASE WHEN @endsAt > start_at THEN @endsAt ELSE end_at END,
                state = CASE WHEN @endsAt > start_at THEN state ELSE 'released' END,
                released_at = CASE WHEN @endsAt > start_at THEN released_at ELSE @now END,
                preempted_at = @now, preempt_reason = @reason, release_reason = @reason
            WHERE id = @matchId AND state = 'active'
            RETURNING order_id
            """, new { matchId = p.MatchId, endsAt = p.EndsAt, now, reason }, tx.Transaction, cancellationToken: ct));
        if (orderId is not { } id) return;
        await tx.Connection.ExecuteAsync(new CommandDefinition(
            "UPDATE orders SET status_reason = @reason, updated_at = @now WHERE id = @id",
            new { id, reason, now }, tx.Transaction, cancellationToken: ct));
        await tx.PublishAsync(new PreemptionRequested(p.MatchId, id, reason, p.NoticeSeconds, now), ct);
    }

    /// <summary>Places one new (or amended) order into its market: lock, load, clear, record.</summary>
    public static async Task ClearOneAsync(Tx tx, OrderRow order, bool placedNow, CancellationToken ct)
    {
        await LockAsync(tx, order.AcceleratorModel, order.RegionGroup, ct);
        var supply = await LoadSupplyAsync(tx, order.AcceleratorModel, order.RegionGroup, ct);
        var others = order.RegionGroup is null ? []
            : (await LoadSupplyAsync(tx, order.AcceleratorModel, null, ct, exceptGroup: order.RegionGroup)).Candidates;
        await ClearAsync(tx, [order], supply, others, cancelUnfilledIoc: placedNow, ct);
    }

    /// <summary>
    /// Clears the standing book of one market after its supply changed (an offer appeared or changed, capacity came back):
    /// its open orders plus the open orders without a region (which may take any group's offer), in priority.
    /// </summary>
    public static async Task<int> ClearStandingAsync(Tx tx, string model, string group, CancellationToken ct)
    {
        await LockAsync(tx, model, group, ct);
        var supply = await LoadSupplyAsync(tx, model, group, ct);
        // FOR UPDATE in id order: a concurrent cancel or amend waits for us (or we for it), and two markets clearing the
        // same region-less order lock it in the same order; the second sees it matched and skips it.
        var open = (await tx.Connection.QueryAsync<OrderRow>(new CommandDefinition($"""
            SELECT {OrderRow.Columns} FROM orders
            WHERE accelerator_model = @model AND status = 'open' AND (region_group = @group OR region_group IS NULL)
            ORDER BY id
            FOR UPDATE
            """, new { model, group }, tx.Transaction, cancellationToken: ct))).AsList();
        if (open.Count == 0) return 0;
        var others = (await LoadSupplyAsync(tx, model, null, ct, exceptGroup: group)).Candidates;
        return (await ClearAsync(tx, open, supply, others, cancelUnfilledIoc: false, ct)).Fills.Count;
    }

    public static async Task<OrderResponse?> ReadAsync(Tx tx, Guid orderId, Guid renterOrgId, CancellationToken ct)
    {
        var order = await tx.Connection.QuerySingleOrDefaultAsync<OrderRow>(new CommandDefinition($"""
            SELECT {OrderRow.Columns} FROM orders WHERE id = @orderId AND renter_org_id = @renterOrgId
            """, new { orderId, renterOrgId }, tx.Transaction, cancellationToken: ct));
        if (order is null) return null;
        var match = await tx.Connection.QuerySingleOrDefaultAsync<MatchRow>(new CommandDefinition("""
            SELECT id, order_id, offer_id, price_amount, price_currency, start_at, end_at, interruptible, preempted_at FROM matches
            WHERE order_id = @orderId AND state = 'active'
            """, new { orderId }, tx.Transaction, cancellationToken: ct));
        return OrderResponse.From(order, match);
    }

    /// <summary>Offers as the engine sees them, and the terms it does not need (provider, nodes, SLA) by id.</summary>
    internal sealed record Supply(List<OfferCandidate> Candidates, Dictionary<Guid, OfferRow> Offers);

    internal sealed class OfferRow
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
        public bool InterruptibleAllowed { get; init; }
        public long? InterruptibleFloorAmount { get; init; }
        public int PreemptionNoticeSeconds { get; init; }
        public string SlaLevel { get; init; } = "standard";
        public string? Windows { get; init; }
        public string RegionGroup { get; init; } = "";

        /// <summary>The offered slots when the offer is part of its nodes; null: whole nodes.</summary>
        public Guid[]? SlotIds { get; init; }
    }

    private sealed class BookingRow
    {
        public Guid Id { get; init; }
        public Guid OfferId { get; init; }
        public DateTimeOffset StartAt { get; init; }
        public DateTimeOffset EndAt { get; init; }
        public int AcceleratorCount { get; init; }
        public bool Interruptible { get; init; }
        public DateTimeOffset? PreemptedAt { get; init; }
        public long? BidAmount { get; init; }
        public DateTimeOffset CreatedAt { get; init; }
    }
}
