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
        tx.Connection.ExecuteAsync(new CommandDefinition(LockSql(group),
            new { model, market = group is null ? null : Markets.Key(model, group) }, tx.Transaction, cancellationToken: ct));

    /// <summary>
    /// <see cref="LockAsync"/> of one market, waiting at most <paramref name="timeout"/>: then PostgreSQL's
    /// <c>lock_not_available</c> (55P03), which the due-work runner answers by trying the item again shortly.
    /// </summary>
    public static Task LockWithinAsync(Tx tx, string model, string group, TimeSpan timeout, CancellationToken ct) =>
        tx.Connection.ExecuteAsync(new CommandDefinition(
            $"SET LOCAL lock_timeout = {(int)timeout.TotalMilliseconds}; {LockSql(group)} SET LOCAL lock_timeout TO DEFAULT;",
            new { model, market = Markets.Key(model, group) }, tx.Transaction, cancellationToken: ct));

    /// <summary>The statements of <see cref="LockAsync"/> (parameters @model and @market), to lead a command of more.</summary>
    private static string LockSql(string? group) => group is null
        ? $"SELECT 1 FROM pg_advisory_xact_lock({ModelLocks}, hashtext(@model));"
        : $"SELECT 1 FROM pg_advisory_xact_lock_shared({ModelLocks}, hashtext(@model)); SELECT 1 FROM pg_advisory_xact_lock({MarketLocks}, hashtext(@market));";

    private const string OfferColumns = """
        offer_id, provider_org_id, node_ids, accelerator_model, region, jurisdiction, accelerator_count, window_start,
        window_end, ask_amount, ask_currency, min_lease_seconds, published_at, interruptible_allowed,
        interruptible_floor_amount, preemption_notice_seconds, sla_level, windows::text AS windows, region_group, slot_ids, status
        """;

    /// <summary>Active offers of a model (of one group, or of all groups but <paramref name="exceptGroup"/>) with their bookings.</summary>
    /// <remarks>
    /// One round trip: the offers, then the model's matches written since the copy this instance keeps
    /// (<see cref="ActiveMatches"/>; all active ones the first time). Offers change only under the market lock, which the
    /// caller holds, so the offers and their bookings agree.
    /// </remarks>
    public static async Task<Supply> LoadSupplyAsync(Tx tx, string model, string? group, CancellationToken ct, string? exceptGroup = null)
    {
        var now = tx.Now;
        var known = ActiveMatches.Known(tx, model);
        await using var reader = await tx.Connection.QueryMultipleAsync(new CommandDefinition($"""
            SELECT {OfferColumns} FROM offers
            WHERE accelerator_model = @model AND status = 'active' AND window_end > @now
              AND (@group::text IS NULL OR region_group = @group) AND (@exceptGroup::text IS NULL OR region_group <> @exceptGroup);
            {ActiveMatches.Sql(known)}
            """, new { model, group, exceptGroup, now, since = known?.Since }, tx.Transaction, cancellationToken: ct));
        var offers = (await reader.ReadAsync<OfferRow>()).AsList();
        var matches = await ActiveMatches.ReadAsync(reader, tx, model, known, now);
        return WithBookings(offers, matches.ToLookup(m => m.OfferId, m => m.Booking));
    }

    /// <summary>
    /// For the "another model" alternative: the cheapest active offers of the model's other models priced within
    /// <paramref name="maxLimit"/> (an ask, or an interruptible floor) in one of <paramref name="currencies"/>.
    /// </summary>
    private static async Task<List<OfferCandidate>> LoadOtherModelsAsync(Tx tx, string model, string[] currencies, long maxLimit,
        CancellationToken ct)
    {
        var offers = (await tx.Connection.QueryAsync<OfferRow>(new CommandDefinition($"""
            SELECT {OfferColumns} FROM offers
            WHERE accelerator_model <> @model AND status = 'active' AND window_end > @now AND ask_currency = ANY(@currencies)
              AND least(ask_amount, coalesce(interruptible_floor_amount, ask_amount)) <= @maxLimit
            ORDER BY least(ask_amount, coalesce(interruptible_floor_amount, ask_amount)), offer_id
            LIMIT 200
            """, new { model, currencies, maxLimit, now = tx.Now }, tx.Transaction, cancellationToken: ct))).AsList();
        return (await WithBookingsAsync(tx, offers, ct)).Candidates;
    }

    private static async Task<Supply> WithBookingsAsync(Tx tx, List<OfferRow> offers, CancellationToken ct) =>
        offers.Count == 0 ? new Supply([], [])
            : WithBookings(offers, (await LoadBookingsAsync(tx, offers.Select(o => o.OfferId).ToArray(), ct))
                .ToLookup(b => b.OfferId, b => b.ToBooking(forClearing: true)));

    private static Supply WithBookings(List<OfferRow> offers, ILookup<Guid, Booking> bookings)
    {
        var candidates = offers.Select(o => o.ToCandidate(bookings[o.OfferId].ToList())).ToList();
        return new Supply(candidates, offers.ToDictionary(o => o.OfferId));
    }

    internal const string BookingColumns =
        "id, offer_id, order_id, start_at, end_at, accelerator_count, interruptible, preempted_at, bid_amount, created_at, slot_ids";

    private static async Task<List<BookingRow>> LoadBookingsAsync(Tx tx, Guid[] offerIds, CancellationToken ct) =>
        (await tx.Connection.QueryAsync<BookingRow>(new CommandDefinition($"""
            SELECT {BookingColumns} FROM matches
            WHERE state = 'active' AND end_at > @now AND offer_id = ANY(@offerIds)
            """, new { now = tx.Now, offerIds }, tx.Transaction, cancellationToken: ct))).AsList();

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

        // Every fill of the batch in three statements (orders, matches, OrderMatched), not one round trip per fill. The
        // preemptions a fill makes (rare) are written first, each with its own statements.
        var fills = result.Fills;
        var markets = new Dictionary<string, (Money Last, string Model, string Group)>();
        var matchIds = new Guid[fills.Count];
        var events = new List<OrderMatched>(fills.Count);
        for (var i = 0; i < fills.Count; i++)
        {
            var fill = fills[i];
            var (row, _) = book[fill.OrderId];
            var offer = supply.Offers[fill.OfferId];
            matchIds[i] = NewId.NextGuid();
            foreach (var p in fill.Preemptions)
                await PreemptAsync(tx, p, fill.Interruptible
                    ? $"outbid by an interruptible bid of {Matching.Price(row.MaxPriceAmount, row.MaxPriceCurrency)}"
                    : $"displaced by a higher-priority {row.Type} order", ct);
            events.Add(new OrderMatched(matchIds[i], row.Id, row.RenterOrgId, fill.OfferId, offer.ProviderOrgId, offer.NodeIds,
                row.AcceleratorModel, fill.Count, fill.Start, fill.End, new Money(fill.PriceAmount, fill.Currency), row.Type, now)
            {
                Interruptible = fill.Interruptible,
                PreemptionNoticeSeconds = offer.PreemptionNoticeSeconds,
                SlaLevel = offer.SlaLevel,
                SlotIds = offer.SlotIds,
                VerifiedOnly = row.VerifiedOnly,
            });
            markets[Markets.Key(row.AcceleratorModel, offer.RegionGroup)] =
                (new Money(fill.PriceAmount, fill.Currency), row.AcceleratorModel, offer.RegionGroup);
        }
        if (fills.Count > 0)
        {
            await tx.Connection.ExecuteAsync(new CommandDefinition("""
                UPDATE orders SET status = 'matched', status_reason = NULL, alternatives = '{}', updated_at = @now WHERE id = ANY(@orderIds);
                INSERT INTO matches (id, order_id, offer_id, accelerator_count, start_at, end_at, price_amount, price_currency, state,
                                     created_at, interruptible, bid_amount, order_type, market)
                SELECT f.id, f.order_id, f.offer_id, f.count, f.start_at, f.end_at, f.price, f.currency, 'active', @now,
                       f.interruptible, f.bid, f.type, f.market
                FROM unnest(@matchIds, @orderIds, @offerIds, @counts, @starts, @ends, @prices, @currencies, @interruptibles, @bids,
                            @types, @markets)
                     AS f(id, order_id, offer_id, count, start_at, end_at, price, currency, interruptible, bid, type, market);
                """, new
                {
                    now, matchIds,
                    orderIds = fills.Select(f => f.OrderId).ToArray(),
                    offerIds = fills.Select(f => f.OfferId).ToArray(),
                    counts = fills.Select(f => f.Count).ToArray(),
                    starts = fills.Select(f => f.Start.ToUniversalTime()).ToArray(),
                    ends = fills.Select(f => f.End.ToUniversalTime()).ToArray(),
                    prices = fills.Select(f => f.PriceAmount).ToArray(),
                    currencies = fills.Select(f => f.Currency).ToArray(),
                    interruptibles = fills.Select(f => f.Interruptible).ToArray(),
                    bids = fills.Select(f => f.Interruptible ? book[f.OrderId].Row.MaxPriceAmount : (long?)null).ToArray(),
                    types = fills.Select(f => book[f.OrderId].Row.Type).ToArray(),
                    markets = fills.Select(f => Markets.Key(book[f.OrderId].Row.AcceleratorModel, supply.Offers[f.OfferId].RegionGroup)).ToArray(),
                }, tx.Transaction, cancellationToken: ct));
            await tx.PublishAllAsync(events, ct);
        }

        var after = result.Offers.Concat(explainAgainst).ToList();
        if (result.Unfilled.Count > 0)
        {
            var unfilled = result.Unfilled.Select(id => book[id].Row).ToList();
            var model = unfilled[0].AcceleratorModel;
            after.AddRange(await LoadOtherModelsAsync(tx, model, [.. unfilled.Select(o => o.MaxPriceCurrency).Distinct()],
                unfilled.Max(o => o.MaxPriceAmount), ct));
            // Every unfilled order's reason and alternatives in one statement (the alternatives of each as a JSON array).
            var explained = result.Unfilled.Select(id =>
            {
                var (row, order) = book[id];
                var explanation = Explanations.Explain(order, after, now);
                var windowPassed = order.Kind == OrderKind.Reserved && now.AddSeconds(order.DurationSeconds) > order.LatestEnd;
                var cancel = windowPassed || (cancelUnfilledIoc && row.TimeInForce == "ioc");
                return (Id: id, Status: cancel ? "cancelled" : "open", explanation.Reason,
                    Alternatives: JsonSerializer.Serialize(explanation.Alternatives));
            }).ToList();
            await tx.Connection.ExecuteAsync(new CommandDefinition("""
                UPDATE orders o
                SET status = u.status, status_reason = u.reason, updated_at = @now,
                    alternatives = ARRAY(SELECT a FROM jsonb_array_elements_text(u.alternatives::jsonb) WITH ORDINALITY AS x(a, n) ORDER BY n)
                FROM unnest(@ids, @statuses, @reasons, @alternatives) AS u(id, status, reason, alternatives)
                WHERE o.id = u.id AND o.status = 'open'
                """, new
                {
                    now,
                    ids = explained.Select(e => e.Id).ToArray(),
                    statuses = explained.Select(e => e.Status).ToArray(),
                    reasons = explained.Select(e => e.Reason).ToArray(),
                    alternatives = explained.Select(e => e.Alternatives).ToArray(),
                }, tx.Transaction, cancellationToken: ct));
            await ScheduleWaitingAsync(tx, model, [.. explained.Where(e => e.Status == "open").Select(e => book[e.Id].Order)], result.Offers, supply, ct);
        }

        // The quote after the trades: the best bid from the book, the best ask from the offers as this clearing left them
        // (the same rule as MarketQuote, without reading every active match again).
        foreach (var (market, trade) in markets)
        {
            var bid = await MarketQuote.ReadBestBidAsync(tx, trade.Model, trade.Group, trade.Last.Currency, ct);
            var ask = Markets.BestAsk(result.Offers.Where(o => supply.Offers[o.OfferId].RegionGroup == trade.Group
                                                                       && o.Model == trade.Model),
                trade.Last.Currency, now);
            await tx.PublishAsync(new PriceTicked(market, trade.Last, bid, ask is { } a ? new Money(a, trade.Last.Currency) : null, now), ct);
        }
        return result;
    }

    /// <summary>
    /// Orders left open that wait for capacity are tried again when it comes back (<see cref="ClearMarket"/>): per region
    /// group of the cleared offers, at the first end of one of their bookings. Only markets whose lock the clearing holds
    /// are scheduled: the supply of a market's clearing is that market's offers, and a clearing of all groups holds the
    /// model exclusively.
    /// </summary>
    private static async Task ScheduleWaitingAsync(Tx tx, string model, List<BookOrder> waiting, IReadOnlyList<OfferCandidate> offers,
        Supply supply, CancellationToken ct)
    {
        if (waiting.Count == 0) return;
        foreach (var group in offers.GroupBy(o => supply.Offers[o.OfferId].RegionGroup))
            if (Clearing.CapacityReturnsAt(waiting, [.. group], tx.Now) is { } at)
                await ClearMarket.ScheduleAsync(tx, model, group.Key, at, ct);
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
        // A standing (gtc, gtt) interruptible order keeps wanting its capacity: its quantity goes back to the book.
        var requeued = await RequeueAsync(tx, id, p.EndsAt, reason, ct);
        var shown = requeued is { } next ? $"{reason}; back in the book as order {next}" : reason;
        await tx.Connection.ExecuteAsync(new CommandDefinition(
            "UPDATE orders SET status_reason = @shown, updated_at = @now WHERE id = @id",
            new { id, shown, now }, tx.Transaction, cancellationToken: ct));
        await tx.PublishAsync(new PreemptionRequested(p.MatchId, id, reason, p.NoticeSeconds, now), ct);
    }

    /// <summary>
    /// Puts the quantity of an order whose match was taken back (preempted, or revoked by an offer change) into the book
    /// again as a new standing order with the same terms, linked both ways (requeued_from / requeued_as), starting no
    /// earlier than <paramref name="notBefore"/>. Only gtc orders and gtt orders whose time has not run out are requeued,
    /// once per order. The new order has a new id because the old one keeps its lease (and Scheduling one lease per order).
    /// </summary>
    private static async Task<Guid?> RequeueAsync(Tx tx, Guid orderId, DateTimeOffset notBefore, string why, CancellationToken ct)
    {
        var now = tx.Now;
        var next = await tx.Connection.QuerySingleOrDefaultAsync<OrderRow>(new CommandDefinition($"""
            INSERT INTO orders (id, renter_org_id, idempotency_key, request_hash, type, time_in_force, status, status_reason,
                                accelerator_model, accelerator_count, duration_seconds, max_price_amount, max_price_currency, region,
                                jurisdiction, created_at, updated_at, priority_at, region_group, earliest_start, latest_end,
                                expires_at, verified_only, not_before, requeued_from)
            SELECT @newId, renter_org_id, idempotency_key || '/requeued/' || @newId, request_hash, type, time_in_force, 'open',
                   'requeued from order ' || id || ' (' || @why || '); waiting for capacity from '
                       || to_char(@notBefore AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"'),
                   accelerator_model, accelerator_count, duration_seconds, max_price_amount, max_price_currency, region,
                   jurisdiction, @now, @now, @now, region_group, earliest_start, latest_end, expires_at, verified_only,
                   @notBefore, id
            FROM orders
            WHERE id = @orderId AND requeued_as IS NULL
              AND (time_in_force = 'gtc' OR (time_in_force = 'gtt' AND expires_at > @notBefore))
            ON CONFLICT DO NOTHING
            RETURNING {OrderRow.Columns}
            """, new { newId = NewId.NextGuid(), orderId, notBefore, why, now }, tx.Transaction, cancellationToken: ct));
        if (next is null) return null;
        await tx.Connection.ExecuteAsync(new CommandDefinition(
            "UPDATE orders SET requeued_as = @newId WHERE id = @orderId", new { newId = next.Id, orderId }, tx.Transaction,
            cancellationToken: ct));
        await ScheduleExpiryAsync(tx, next, ct);
        return next.Id;
    }

    /// <summary>A standing order leaves the book when its time runs out: at expires_at (gtt), or at a reserved window's latest start.</summary>
    public static async Task ScheduleExpiryAsync(Tx tx, OrderRow order, CancellationToken ct)
    {
        if (ExpiryDue(order) is { } at) await tx.ScheduleAsync(ExpireOrder.Kind, order.Id.ToString(), at, ct);
    }

    /// <summary>When a standing order leaves the book (<see cref="ScheduleExpiryAsync"/>); null: it does not expire.</summary>
    public static DateTimeOffset? ExpiryDue(OrderRow order)
    {
        DateTimeOffset? due = order.ExpiresAt;
        if (order.LatestEnd is { } latestEnd && (due is null || latestEnd.AddSeconds(-order.DurationSeconds) < due))
            due = latestEnd.AddSeconds(-order.DurationSeconds);
        return order.TimeInForce == "ioc" ? null : due;
    }

    /// <summary>
    /// After an offer changed or was withdrawn: its matches that have not started and no longer fit the new terms
    /// (<see cref="OfferChanges"/>) are revoked. Each revoked match is released, Scheduling is asked to end its lease
    /// before it starts (PreemptionRequested without notice; repeated when the lease is booked later), the order is
    /// cancelled with the reason and its quantity requeued as a new standing order (gtc, gtt). Call under the market lock.
    /// </summary>
    public static async Task<int> RevokeUnfitMatchesAsync(Tx tx, Guid offerId, CancellationToken ct)
    {
        var now = tx.Now;
        var offer = await tx.Connection.QuerySingleOrDefaultAsync<OfferRow>(new CommandDefinition(
            $"SELECT {OfferColumns} FROM offers WHERE offer_id = @offerId", new { offerId }, tx.Transaction, cancellationToken: ct));
        if (offer is null) return 0;
        var rows = await LoadBookingsAsync(tx, [offerId], ct);
        if (rows.Count == 0) return 0;
        var bookings = rows.Select(b => b.ToBooking(forClearing: false)).ToList();
        var terms = offer.Status == "active" ? offer.ToCandidate([]) : null;
        var revoked = OfferChanges.Revoked(terms, bookings, now);
        foreach (var r in revoked)
        {
            var orderId = rows.Single(b => b.Id == r.MatchId).OrderId;
            var reason = OfferChanges.Describe(r.Cause, offerId);
            await tx.Connection.ExecuteAsync(new CommandDefinition("""
                UPDATE matches SET state = 'released', released_at = @now, release_reason = @reason,
                                   preempted_at = coalesce(preempted_at, @now), preempt_reason = coalesce(preempt_reason, @reason)
                WHERE id = @matchId AND state = 'active'
                """, new { matchId = r.MatchId, reason, now }, tx.Transaction, cancellationToken: ct));
            var requeued = await RequeueAsync(tx, orderId, now, reason, ct);
            await tx.Connection.ExecuteAsync(new CommandDefinition("""
                UPDATE orders SET status = 'cancelled', status_reason = @shown, updated_at = @now
                WHERE id = @orderId AND status IN ('matched', 'filled')
                """, new
                {
                    orderId, now,
                    shown = requeued is { } next ? $"{reason}; back in the book as order {next}"
                        : $"{reason}; not requeued (immediate-or-cancel, or its time ran out)",
                }, tx.Transaction, cancellationToken: ct));
            await tx.PublishAsync(new PreemptionRequested(r.MatchId, orderId, reason, 0, now), ct);
        }
        return revoked.Count;
    }

    /// <summary>
    /// Places one new (or amended) order into its market: lock, load, clear, record. <paramref name="bidBefore"/> is the
    /// market's best bid before the order came (or changed): if the order rests and moves it, PriceTicked says so.
    /// </summary>
    public static async Task ClearOneAsync(Tx tx, OrderRow order, bool placedNow, Money? bidBefore, CancellationToken ct)
    {
        await LockAsync(tx, order.AcceleratorModel, order.RegionGroup, ct);
        var supply = await LoadSupplyAsync(tx, order.AcceleratorModel, order.RegionGroup, ct);
        var others = order.RegionGroup is null ? []
            : (await LoadSupplyAsync(tx, order.AcceleratorModel, null, ct, exceptGroup: order.RegionGroup)).Candidates;
        var result = await ClearAsync(tx, [order], supply, others, cancelUnfilledIoc: placedNow, ct);
        // A trade already ticked with the new quote.
        if (result.Fills.Count == 0) await TickIfBestBidMovedAsync(tx, order, bidBefore, ct);
    }

    /// <summary>The best bid of an order's market (interruptible bids are not bids of the book), leaving out <paramref name="except"/>.</summary>
    public static async Task<Money?> BestBidAsync(Tx tx, OrderRow order, CancellationToken ct, Guid[]? except = null) =>
        order.Type == "interruptible" ? null
            : await MarketQuote.ReadBestBidAsync(tx, order.AcceleratorModel, order.RegionGroup, order.MaxPriceCurrency, ct, except);

    /// <summary>
    /// Clears newly placed orders of one market (model and region group, or the model for orders without a region) that
    /// no clearing has seen yet (open, no reason), all in one clearing: lock, load the supply once, clear, record, tick.
    /// An unfilled ioc order is cancelled. Orders another clearing got to first are skipped.
    /// </summary>
    public static async Task<int> ClearPlacedAsync(Tx tx, string model, string? group, Guid[] ids, CancellationToken ct)
    {
        // One round trip: the market lock, the safety net of these orders marked done (this clearing sees every one of
        // them, or a clearing already did; an item the due-work runner holds is its own clearing, skipped), the orders.
        List<OrderRow> orders;
        await using (var reader = await tx.Connection.QueryMultipleAsync(new CommandDefinition($"""
            {LockSql(group)}
            UPDATE due_work SET done_at = @now
            WHERE id IN (SELECT id FROM due_work WHERE kind = @kind AND key = ANY(@keys) AND done_at IS NULL FOR UPDATE SKIP LOCKED);
            SELECT {OrderRow.Columns} FROM orders
            WHERE id = ANY(@ids) AND status = 'open' AND status_reason IS NULL
            ORDER BY id
            FOR UPDATE;
            """, new
            {
                model, market = group is null ? null : Markets.Key(model, group), ids, now = tx.Now, kind = ClearPlacedOrder.Kind,
                keys = ids.Select(id => id.ToString()).ToArray(),
            }, tx.Transaction, cancellationToken: ct)))
        {
            for (var i = 0; i < (group is null ? 1 : 2); i++) await reader.ReadAsync<int>();
            orders = (await reader.ReadAsync<OrderRow>()).AsList();
        }
        if (orders.Count == 0) return 0;
        // The best bid before these orders came, per currency: if the ones left resting move it, PriceTicked says so.
        var bidders = orders.Where(o => o.Type != "interruptible").GroupBy(o => o.MaxPriceCurrency).Select(g => g.First()).ToList();
        var bidsBefore = new List<(OrderRow Order, Money? Bid)>();
        foreach (var o in bidders) bidsBefore.Add((o, await BestBidAsync(tx, o, ct, ids)));

        var supply = await LoadSupplyAsync(tx, model, group, ct);
        var others = group is null ? [] : (await LoadSupplyAsync(tx, model, null, ct, exceptGroup: group)).Candidates;
        var result = await ClearAsync(tx, orders, supply, others, cancelUnfilledIoc: true, ct);
        if (result.Fills.Count == 0)
            foreach (var (o, before) in bidsBefore) await TickIfBestBidMovedAsync(tx, o, before, ct);
        return orders.Count;
    }

    /// <summary>
    /// Publishes PriceTicked when an order resting, amended, cancelled or expiring moved its market's best bid. An order
    /// without a region bids in every group of its model: its tick names the market "model/*".
    /// </summary>
    public static async Task TickIfBestBidMovedAsync(Tx tx, OrderRow order, Money? bidBefore, CancellationToken ct)
    {
        if (order.Type == "interruptible") return;
        // The bid alone first (cheap); the whole quote, whose ask reads the offers' matches, only for a tick.
        if (await MarketQuote.ReadBestBidAsync(tx, order.AcceleratorModel, order.RegionGroup, order.MaxPriceCurrency, ct) == bidBefore)
            return;
        var quote = await MarketQuote.ReadAsync(tx, order.AcceleratorModel, order.RegionGroup, order.MaxPriceCurrency, ct);
        await tx.PublishAsync(new PriceTicked(Markets.Key(order.AcceleratorModel, order.RegionGroup ?? "*"), null, quote.BestBid,
            quote.BestAsk, tx.Now), ct);
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

        public string Status { get; init; } = "active";

        public OfferCandidate ToCandidate(List<Booking> bookings) => new(OfferId, AcceleratorModel, Region, Jurisdiction,
            AcceleratorCount, WindowStart, WindowEnd, AskAmount, AskCurrency, MinLeaseSeconds, PublishedAt, bookings)
        {
            InterruptibleAllowed = InterruptibleAllowed,
            InterruptibleFloorAmount = InterruptibleFloorAmount ?? 0,
            PreemptionNoticeSeconds = PreemptionNoticeSeconds,
            Windows = Windows is null ? null
                : JsonSerializer.Deserialize<List<TimeWindow>>(Windows, JsonSerializerOptions.Web)!.Select(w => (w.Start, w.End)).ToList(),
        };
    }

    internal sealed class BookingRow
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
        public Guid OrderId { get; init; }

        /// <summary>The accelerators Scheduling booked (LeaseScheduled); null while the match is in flight.</summary>
        public Guid[]? SlotIds { get; init; }

        /// <summary>False once released (read by <see cref="ActiveMatches"/>, which reads released matches too).</summary>
        public bool Active { get; init; } = true;

        /// <summary>Written by the reading transaction (<see cref="ActiveMatches"/>).</summary>
        public bool Own { get; init; }

        /// <param name="forClearing">
        /// True: an already preempted match is no longer interruptible (its capacity comes back at its shortened end, it
        /// is not preempted twice). False: as made (for offer changes).
        /// </param>
        public Booking ToBooking(bool forClearing) => new(StartAt, EndAt, AcceleratorCount)
        {
            MatchId = Id,
            Interruptible = Interruptible && (!forClearing || PreemptedAt is null),
            BidAmount = BidAmount ?? 0,
            MatchedAt = CreatedAt,
            SlotIds = SlotIds,
        };
    }
}
