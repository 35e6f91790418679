using System.Buffers;

namespace Marketplace.Bidding.Domain;

public enum OrderKind { OnDemand, Reserved, Interruptible }

/// <summary>
/// An order of the book as the engine sees it: <c>Count</c> accelerators for <c>DurationSeconds</c>, starting no earlier
/// than <c>EarliestStart</c> and ending no later than <c>LatestEnd</c> (on-demand: [now, now + duration)), at most
/// <c>LimitAmount</c> per accelerator-hour (the max price, or the bid of an interruptible order).
/// </summary>
public sealed record BookOrder(
    Guid Id,
    OrderKind Kind,
    string Model,
    int Count,
    long LimitAmount,
    string Currency,
    string? Region,
    string? Jurisdiction,
    DateTimeOffset EarliestStart,
    DateTimeOffset LatestEnd,
    long DurationSeconds,
    DateTimeOffset PlacedAt);

/// <summary>A match the clearing made. <c>Preemptions</c> are the interruptible matches that must make way for it.</summary>
public sealed record Fill(
    Guid OrderId,
    Guid OfferId,
    DateTimeOffset Start,
    DateTimeOffset End,
    int Count,
    long PriceAmount,
    string Currency,
    bool Interruptible,
    IReadOnlyList<Preemption> Preemptions);

/// <summary>An interruptible match whose capacity is taken back at <c>EndsAt</c> (now + the offer's notice).</summary>
public sealed record Preemption(Guid MatchId, Guid OfferId, DateTimeOffset EndsAt, int NoticeSeconds);

/// <summary>The outcome of clearing a book; <c>Offers</c> carry their bookings after it (for explanations).</summary>
public sealed record ClearingResult(IReadOnlyList<Fill> Fills, IReadOnlyList<Guid> Unfilled, IReadOnlyList<OfferCandidate> Offers);

/// <summary>
/// Clears a whole book of one market at once. The rules (docs/market.md):
/// <list type="bullet">
/// <item>Orders in priority: on-demand and reserved before interruptible; then the higher limit; then the earlier order;
/// then the id. Each order in turn takes the best offer that can hold all of it (a gang is all or nothing, from one offer).</item>
/// <item>Offers in priority: the lowest ask (interruptible orders: the lowest floor), then the earliest published, then the id.</item>
/// <item>On-demand and reserved trade at the ask. Interruptible trades at max(floor, clearing price, the bids it displaced),
/// capped at its bid, where the clearing price is the highest interruptible bid this clearing left unfilled.</item>
/// <item>A reserved order with a flexible window starts at the earliest time the chosen offer can hold it.</item>
/// <item>An order that fits nowhere may displace interruptible matches (on-demand/reserved: any; interruptible: strictly
/// lower bids), lowest bid first, until it fits; it then starts after the offer's preemption notice.</item>
/// </list>
/// Deterministic: the result depends on the sets of orders and offers, not on the order they are given in.
/// </summary>
public static class Clearing
{

    public static ClearingResult Clear(IReadOnlyList<BookOrder> orders, IReadOnlyList<OfferCandidate> offers, DateTimeOffset now)
    {
        var book = new Book(offers, now);
        var sorted = orders.ToArray();
        Array.Sort(sorted, OrderPriority.Instance);

        var fills = new List<Fill>();
        var unfilled = new List<Guid>();
        var highestLosingBid = new Dictionary<string, long>(StringComparer.Ordinal);
        var interruptibleFills = new List<(int Index, long Bid, long Floor, long DisplacedBid)>();
        foreach (var order in sorted)
        {
            var taken = book.TryFill(order);
            if (taken is not { } t)
            {
                unfilled.Add(order.Id);
                if (order.Kind == OrderKind.Interruptible
                    && (!highestLosingBid.TryGetValue(order.Currency, out var b) || order.LimitAmount > b))
                    highestLosingBid[order.Currency] = order.LimitAmount;
                continue;
            }
            if (order.Kind == OrderKind.Interruptible)
                interruptibleFills.Add((fills.Count, order.LimitAmount, t.Offer.Offer.Floor, t.DisplacedBid));
            fills.Add(new Fill(order.Id, t.Offer.Offer.OfferId, t.Start, t.Start.AddSeconds(order.DurationSeconds), order.Count,
                order.Kind == OrderKind.Interruptible ? order.LimitAmount : t.Offer.Offer.AskAmount, order.Currency,
                order.Kind == OrderKind.Interruptible, t.Preemptions));
        }

        // Interruptible orders pay the market's clearing price (the highest bid left out), never below the floor or above their bid.
        foreach (var (index, bid, floor, displaced) in interruptibleFills)
        {
            var fill = fills[index];
            var clearing = highestLosingBid.GetValueOrDefault(fill.Currency);
            fills[index] = fill with { PriceAmount = Math.Min(bid, Math.Max(floor, Math.Max(clearing, displaced))) };
        }
        return new ClearingResult(fills, unfilled, book.Snapshot());
    }

    /// <summary>
    /// When to clear a market's standing book again for <paramref name="waiting"/>, the orders a clearing left open: at the
    /// first instant after <paramref name="now"/> at which a booking of <paramref name="offers"/> ends, but only if one of
    /// them waits for capacity, that is, would be filled if no accelerator were booked. An order that waits for a price,
    /// a region or a window is not helped by capacity coming back (its market's next order or offer clears it); null then,
    /// and when no booking ends.
    /// </summary>
    /// <remarks>
    /// Clearing all of them together against empty offers fills something exactly when one of them would fill alone: the
    /// first such order in priority is never kept out by orders before it that did not fill.
    /// </remarks>
    public static DateTimeOffset? CapacityReturnsAt(IReadOnlyList<BookOrder> waiting, IReadOnlyList<OfferCandidate> offers, DateTimeOffset now)
    {
        if (waiting.Count == 0 || offers.Count == 0) return null;
        DateTimeOffset? next = null;
        foreach (var offer in offers)
            foreach (var b in offer.Bookings)
                if (b.End > now && (next is null || b.End < next)) next = b.End;
        if (next is null) return null;
        var empty = offers.Select(o => o with { Bookings = [] }).ToList();
        return Clear(waiting, empty, now).Fills.Count > 0 ? next : null;
    }

    /// <summary>Peak concurrent use of <paramref name="bookings"/> over [start, end) (half-open: adjacent bookings do not overlap).</summary>
    public static int PeakUse(IReadOnlyList<Booking> bookings, DateTimeOffset start, DateTimeOffset end, Func<Booking, bool>? skip = null)
    {
        long s = start.UtcTicks, e = end.UtcTicks;
        int n = 0, sum = 0;
        foreach (var b in bookings)
        {
            if (b.Start.UtcTicks >= e || b.End.UtcTicks <= s || (skip is not null && skip(b))) continue;
            n++;
            sum += b.Count;
        }
        if (n <= 1) return sum;

        var keys = ArrayPool<long>.Shared.Rent(2 * n);
        var deltas = ArrayPool<int>.Shared.Rent(2 * n);
        try
        {
            var k = 0;
            foreach (var b in bookings)
            {
                if (b.Start.UtcTicks >= e || b.End.UtcTicks <= s || (skip is not null && skip(b))) continue;
                // At equal times an end (even key) sorts before a start (odd key), so touching intervals do not add up.
                keys[k] = Math.Max(b.Start.UtcTicks, s) * 2 + 1; deltas[k++] = b.Count;
                keys[k] = Math.Min(b.End.UtcTicks, e) * 2; deltas[k++] = -b.Count;
            }
            Array.Sort(keys, deltas, 0, k);
            int used = 0, peak = 0;
            for (var i = 0; i < k; i++)
            {
                used += deltas[i];
                if (used > peak) peak = used;
            }
            return peak;
        }
        finally
        {
            ArrayPool<long>.Shared.Return(keys);
            ArrayPool<int>.Shared.Return(deltas);
        }
    }

    /// <summary>
    /// Accelerators of an offer of <paramref name="capacity"/> free for the <b>whole</b> of [start, end), which is what a
    /// lease needs: Scheduling books concrete accelerators, each free for the lease's whole window (known issue 8).
    /// <list type="bullet">
    /// <item>A placed match (<see cref="Booking.SlotIds"/>, from its LeaseScheduled) blocks its accelerators if it overlaps
    /// the window at all, even for a second: free capacity spread over several accelerators (one free until 10:20, another
    /// from 10:30) is not capacity for a lease over both times.</item>
    /// <item>Matches in flight (not placed yet) count by their peak overlap with the window, as Scheduling will place them
    /// on accelerators still free then.</item>
    /// </list>
    /// Without placed matches this is the capacity minus the peak overlap (<see cref="PeakUse"/>); windows are half-open,
    /// so a lease ending at 10:00 never blocks one starting at 10:00. <paramref name="skip"/> leaves bookings out (preemption).
    /// </summary>
    public static int Free(int capacity, IReadOnlyList<Booking> bookings, DateTimeOffset start, DateTimeOffset end,
        Func<Booking, bool>? skip = null)
    {
        HashSet<Guid>? busy = null;
        foreach (var b in bookings)
        {
            if (b.SlotIds is not { } slots || b.Start >= end || b.End <= start || (skip is not null && skip(b))) continue;
            busy ??= [];
            foreach (var slot in slots) busy.Add(slot);
        }
        if (busy is null) return capacity - PeakUse(bookings, start, end, skip);
        return capacity - busy.Count - PeakUse(bookings, start, end, b => b.SlotIds is not null || (skip is not null && skip(b)));
    }

    private sealed class OrderPriority : IComparer<BookOrder>
    {
        public static readonly OrderPriority Instance = new();

        public int Compare(BookOrder? x, BookOrder? y)
        {
            if (ReferenceEquals(x, y)) return 0;
            if (x is null) return -1;
            if (y is null) return 1;
            var c = (x.Kind == OrderKind.Interruptible).CompareTo(y.Kind == OrderKind.Interruptible);
            if (c != 0) return c;
            c = y.LimitAmount.CompareTo(x.LimitAmount);
            if (c != 0) return c;
            c = x.PlacedAt.CompareTo(y.PlacedAt);
            return c != 0 ? c : x.Id.CompareTo(y.Id);
        }
    }

    private readonly record struct Taken(OfferState Offer, DateTimeOffset Start, IReadOnlyList<Preemption> Preemptions, long DisplacedBid);

    /// <summary>One offer during a clearing: its bookings and the capacity free at the clearing instant.</summary>
    private sealed class OfferState
    {
        private readonly DateTimeOffset _now;

        public OfferState(OfferCandidate offer, DateTimeOffset now, int horizon)
        {
            _now = now;
            Offer = offer;
            Bookings = [.. offer.Bookings];
            FreeNow = offer.Capacity - offer.Bookings.Where(b => b.Start <= now && b.End > now).Sum(b => b.Count);
            InterruptibleBookings = offer.Bookings.Count(b => b.Interruptible);
            SlotFree = new int[horizon];
            for (var slot = 0; slot < horizon; slot++) SlotFree[slot] = ComputeSlotFree(slot);
        }

        public OfferCandidate Offer { get; }
        public List<Booking> Bookings { get; }
        public int FreeNow { get; private set; }
        public int InterruptibleBookings { get; set; }
        public List<(OfferIndex Index, int Position)> Positions { get; } = [];

        /// <summary>
        /// Per hour slot from now: an upper bound of the accelerators free at the best instant of the slot (the capacity
        /// minus the bookings covering the whole slot; -1 outside the offer's windows). An order can start in slot s only
        /// if every slot its lease surely overlaps has room, which lets the index skip offers booked at those times.
        /// </summary>
        public int[] SlotFree { get; }

        private int ComputeSlotFree(int slot)
        {
            // In ticks: this runs for every slot of every offer when a book is built.
            long start = _now.UtcTicks + slot * TimeSpan.TicksPerHour, end = start + TimeSpan.TicksPerHour;
            if (Offer.WindowStart.UtcTicks >= end || Offer.WindowEnd.UtcTicks <= start) return -1;
            if (Offer.Windows is { } windows)
            {
                var open = false;
                foreach (var (ws, we) in windows)
                    if (ws.UtcTicks < end && we.UtcTicks > start) { open = true; break; }
                if (!open) return -1;
            }
            var used = 0;
            foreach (var b in Bookings)
                if (b.Start.UtcTicks <= start && b.End.UtcTicks >= end) used += b.Count;
            return Offer.Capacity - used;
        }

        /// <summary>Whether some start slot in [first, last] has room in the <paramref name="span"/> slots a lease from it surely overlaps.</summary>
        public bool SlotsMayFit(int first, int last, int span, int count)
        {
            for (var s = first; s <= last; s++)
            {
                var ok = true;
                for (var x = s; x < s + span && x < SlotFree.Length; x++)
                    if (SlotFree[x] < count) { ok = false; break; }
                if (ok) return true;
            }
            return false;
        }

        public void RecomputeSlots()
        {
            for (var slot = 0; slot < SlotFree.Length; slot++)
            {
                var value = ComputeSlotFree(slot);
                if (value == SlotFree[slot]) continue;
                SlotFree[slot] = value;
                foreach (var (index, position) in Positions) index.UpdateSlot(slot, position, value);
            }
        }

        public bool Fits(DateTimeOffset start, DateTimeOffset end, int count)
        {
            if (!Offer.Covers(start, end)) return false;
            var overlapping = 0;
            foreach (var b in Bookings)
                if (b.Start < end && b.End > start) overlapping += b.Count;
            // Most checks end here: even all overlapping bookings at once leave room.
            return overlapping + count <= Offer.Capacity || Free(Offer.Capacity, Bookings, start, end) >= count;
        }

        /// <summary>The earliest start in [earliest, latestStart] where the offer holds the order; feasibility only improves where a booking or a window ends/starts.</summary>
        /// <param name="starts">A scratch list (reused: this runs for every candidate offer of every reserved order).</param>
        public DateTimeOffset? EarliestFit(DateTimeOffset earliest, DateTimeOffset latestStart, TimeSpan duration, int count, int span,
            List<DateTimeOffset> starts)
        {
            starts.Clear();
            starts.Add(earliest);
            foreach (var b in Bookings)
                if (b.End > earliest && b.End <= latestStart) starts.Add(b.End);
            if (Offer.WindowStart > earliest && Offer.WindowStart <= latestStart) starts.Add(Offer.WindowStart);
            if (Offer.Windows is { } windows)
                foreach (var (ws, _) in windows)
                    if (ws > earliest && ws <= latestStart) starts.Add(ws);
            starts.Sort();
            foreach (var t in starts)
            {
                // The hour slots are a cheap necessary check before the exact one.
                var slot = (int)((t - _now).Ticks / TimeSpan.TicksPerHour);
                if (slot < SlotFree.Length && !SlotsMayFit(slot, slot, span, count)) continue;
                if (Fits(t, t + duration, count)) return t;
            }
            return null;
        }

        public void Add(Booking booking, DateTimeOffset now)
        {
            Bookings.Add(booking);
            if (booking.Interruptible) InterruptibleBookings++;
            if (booking.Start <= now && booking.End > now) SetFreeNow(FreeNow - booking.Count);
            // Only slots the booking covers whole lose capacity at every instant.
            var first = Math.Max(0, (int)Math.Ceiling((booking.Start - now).TotalHours));
            var last = Math.Min(SlotFree.Length, (int)Math.Floor((booking.End - now).TotalHours));
            for (var slot = first; slot < last; slot++)
            {
                SlotFree[slot] -= booking.Count;
                foreach (var (index, position) in Positions) index.UpdateSlot(slot, position, SlotFree[slot]);
            }
        }

        public void SetFreeNow(int value)
        {
            FreeNow = value;
            foreach (var (index, position) in Positions) index.Update(position, value);
        }
    }

    /// <summary>
    /// The offers one kind of order may use (same model and currency, its region and jurisdiction if it names them), in
    /// price-time priority, with a max-tree over the capacity free now: finding the first offer with room for a gang is
    /// O(log n) instead of a scan over full offers.
    /// </summary>
    private sealed class OfferIndex
    {
        public OfferState[] States { get; }
        private readonly long[] _prices;
        private readonly int[] _tree;
        private readonly int _size;

        /// <param name="states">The eligible offers, already in price-time priority (<see cref="Compare"/>).</param>
        public OfferIndex(OfferState[] states, bool interruptible)
        {
            States = states;
            _slotTrees = new int[]?[states.Length > 0 ? states[0].SlotFree.Length : 0];
            _prices = new long[States.Length];
            for (var i = 0; i < States.Length; i++) _prices[i] = Price(States[i].Offer, interruptible);
            _size = 1;
            while (_size < Math.Max(1, States.Length)) _size <<= 1;
            _tree = new int[2 * _size];
            Array.Fill(_tree, int.MinValue);
            for (var i = 0; i < States.Length; i++)
            {
                _tree[_size + i] = States[i].FreeNow;
                States[i].Positions.Add((this, i));
            }
            for (var i = _size - 1; i >= 1; i--) _tree[i] = Math.Max(_tree[2 * i], _tree[2 * i + 1]);
        }

        private static long Price(OfferCandidate o, bool interruptible) => interruptible ? o.Floor : o.AskAmount;

        /// <summary>Price-time priority of offers: the lowest ask (interruptible: floor), the earliest published, the id.</summary>
        public static int Compare(OfferState a, OfferState b, bool interruptible)
        {
            var c = Price(a.Offer, interruptible).CompareTo(Price(b.Offer, interruptible));
            if (c != 0) return c;
            c = a.Offer.PublishedAt.CompareTo(b.Offer.PublishedAt);
            return c != 0 ? c : a.Offer.OfferId.CompareTo(b.Offer.OfferId);
        }

        /// <summary>How many offers are priced at or below <paramref name="limit"/> (they come first).</summary>
        public int CountAtOrBelow(long limit)
        {
            int lo = 0, hi = _prices.Length;
            while (lo < hi)
            {
                var mid = (lo + hi) >>> 1;
                if (_prices[mid] <= limit) lo = mid + 1; else hi = mid;
            }
            return lo;
        }

        public void Update(int position, int value) => Set(_tree, position, value);

        /// <summary>Keeps the tree of an hour slot current, if that slot was ever asked about.</summary>
        public void UpdateSlot(int slot, int position, int value)
        {
            if (_slotTrees[slot] is { } tree) Set(tree, position, value);
        }

        private void Set(int[] tree, int position, int value)
        {
            var i = _size + position;
            tree[i] = value;
            for (i >>= 1; i >= 1; i >>= 1) tree[i] = Math.Max(tree[2 * i], tree[2 * i + 1]);
        }

        /// <summary>The first position in [from, to) whose free-now capacity is at least <paramref name="count"/>, or -1.</summary>
        public int FirstWithRoom(int from, int to, int count) => from >= to ? -1 : Find(_tree, from, to, count);

        /// <summary>The first position in [from, to) that may have <paramref name="count"/> free in hour slot <paramref name="slot"/>, or -1.</summary>
        public int FirstWithRoomInSlot(int slot, int from, int to, int count)
        {
            if (from >= to) return -1;
            if (_slotTrees[slot] is not { } tree)
            {
                tree = new int[2 * _size];
                Array.Fill(tree, int.MinValue);
                for (var i = 0; i < States.Length; i++) tree[_size + i] = States[i].SlotFree[slot];
                for (var i = _size - 1; i >= 1; i--) tree[i] = Math.Max(tree[2 * i], tree[2 * i + 1]);
                _slotTrees[slot] = tree;
            }
            return Find(tree, from, to, count);
        }

        /// <summary>Per hour slot, built when first asked about.</summary>
        private readonly int[]?[] _slotTrees;

        /// <summary>
        /// The first position in [from, to) that may hold <paramref name="count"/> in every slot of [s, s + span) (slots past
        /// the horizon unchecked) for some start slot s in [first, last], or -1. Per start slot the slot trees leapfrog: each
        /// answers the first position at or after the others' (a "leapfrog join"), until all the slots agree.
        /// </summary>
        public int FirstMayFit(int first, int last, int span, int horizon, int from, int to, int count)
        {
            var best = -1;
            for (var s = first; s <= last && from < to; s++)
            {
                var end = Math.Min(s + span, horizon);
                int p = from, agreed = 0, x = s;
                while (agreed < end - s)
                {
                    var q = FirstWithRoomInSlot(x, p, to, count);
                    if (q < 0) { p = -1; break; }
                    if (q == p) agreed++;
                    else { p = q; agreed = 1; }
                    x = x + 1 == end ? s : x + 1;
                }
                // A later start slot only matters if it finds a cheaper offer.
                if (p >= 0) best = to = p;
            }
            return best;
        }

        /// <summary>
        /// The first leaf in [from, to) of a max-tree holding at least <paramref name="count"/>, bottom-up: the range splits
        /// into O(log n) whole subtrees, the left ones met in position order and the right ones in reverse; the first whose
        /// maximum is big enough is descended.
        /// </summary>
        private int Find(int[] tree, int from, int to, int count)
        {
            Span<int> right = stackalloc int[64];
            var pending = 0;
            int l = from + _size, r = to + _size;
            while (l < r)
            {
                if ((l & 1) == 1)
                {
                    if (tree[l] >= count) return Descend(tree, l, count);
                    l++;
                }
                if ((r & 1) == 1) right[pending++] = --r;
                l >>= 1;
                r >>= 1;
            }
            while (pending > 0)
            {
                var node = right[--pending];
                if (tree[node] >= count) return Descend(tree, node, count);
            }
            return -1;
        }

        private int Descend(int[] tree, int node, int count)
        {
            while (node < _size) node = tree[2 * node] >= count ? 2 * node : 2 * node + 1;
            return node - _size;
        }
    }

    private readonly record struct IndexKey(string Model, bool Interruptible, string Currency, string? Region, string? Jurisdiction);

    private sealed class Book(IReadOnlyList<OfferCandidate> offers, DateTimeOffset now)
    {
        /// <summary>Hour slots tracked from now (at most 31 days); an order starting later is checked offer by offer.</summary>
        private readonly int _horizon = offers.Count == 0 ? 0
            : (int)Math.Clamp(Math.Ceiling((offers.Max(o => o.WindowEnd) - now).TotalHours), 0, 31 * 24);
        private readonly Dictionary<IndexKey, OfferIndex> _indexes = [];
        private readonly List<DateTimeOffset> _starts = [];
        private int _interruptibleBookings = offers.Sum(o => o.Bookings.Count(b => b.Interruptible));
        // The lowest bid of any interruptible booking seen (a lower bound): a bid at or below it can outbid nobody.
        private long _lowestInterruptibleBid = offers.SelectMany(o => o.Bookings).Where(b => b.Interruptible)
            .Select(b => b.BidAmount).DefaultIfEmpty(long.MaxValue).Min();
        private OfferState[]? _states;

        private OfferState[] States => _states ??= [.. offers.Select(o => new OfferState(o, now, _horizon))];

        private OfferState[]? _byAsk, _byFloor;

        private OfferState[] ByAsk => _byAsk ??= Sorted(interruptible: false);

        private OfferState[] ByFloor => _byFloor ??= Sorted(interruptible: true);

        private OfferState[] Sorted(bool interruptible)
        {
            var sorted = (OfferState[])States.Clone();
            Array.Sort(sorted, (a, b) => OfferIndex.Compare(a, b, interruptible));
            return sorted;
        }

        public Taken? TryFill(BookOrder order)
        {
            var interruptible = order.Kind == OrderKind.Interruptible;
            var duration = TimeSpan.FromSeconds(order.DurationSeconds);
            var earliest = order.EarliestStart > now ? order.EarliestStart : now;
            var latestStart = order.LatestEnd - duration;
            if (order.Kind != OrderKind.Reserved && latestStart < earliest) latestStart = earliest;
            if (latestStart < earliest || order.Count <= 0) return null;

            var index = IndexFor(new IndexKey(order.Model, interruptible, order.Currency, order.Region, order.Jurisdiction));
            var affordable = index.CountAtOrBelow(order.LimitAmount);

            if (earliest == latestStart && earliest == now)
            {
                // Starts now: only offers with room now can hold it; the tree skips the rest.
                for (var i = index.FirstWithRoom(0, affordable, order.Count); i >= 0; i = index.FirstWithRoom(i + 1, affordable, order.Count))
                {
                    var s = index.States[i];
                    if (order.DurationSeconds >= s.Offer.MinLeaseSeconds && s.Fits(now, now + duration, order.Count))
                        return Take(s, order, now, [], 0);
                }
            }
            else
            {
                var firstSlot = (int)((earliest - now).Ticks / TimeSpan.TicksPerHour);
                var lastSlot = (int)((latestStart - now).Ticks / TimeSpan.TicksPerHour);
                var span = Math.Max(1, (int)(duration.Ticks / TimeSpan.TicksPerHour));
                for (var from = 0; from < affordable;)
                {
                    // The cheapest offer that may have room in every slot a lease from some start slot surely overlaps;
                    // beyond the horizon, every offer in turn.
                    var best = lastSlot >= _horizon ? from
                        : index.FirstMayFit(firstSlot, lastSlot, span, _horizon, from, affordable, order.Count);
                    if (best < 0) break;
                    var s = index.States[best];
                    if (order.DurationSeconds >= s.Offer.MinLeaseSeconds
                        && s.EarliestFit(earliest, latestStart, duration, order.Count, span, _starts) is { } start)
                        return Take(s, order, start, [], 0);
                    from = best + 1;
                }
            }
            if (_interruptibleBookings == 0 || (interruptible && order.LimitAmount <= _lowestInterruptibleBid)) return null;
            return TryDisplace(order, index, affordable, earliest, latestStart, duration);
        }

        private Taken? TryDisplace(BookOrder order, OfferIndex index, int affordable, DateTimeOffset earliest,
            DateTimeOffset latestStart, TimeSpan duration)
        {
            for (var i = 0; i < affordable; i++)
            {
                var s = index.States[i];
                if (s.InterruptibleBookings == 0 || order.DurationSeconds < s.Offer.MinLeaseSeconds) continue;
                var noticeEnd = now.AddSeconds(s.Offer.PreemptionNoticeSeconds);
                var start = earliest > noticeEnd ? earliest : noticeEnd;
                // A reserved window is the renter's hard constraint; on-demand and interruptible orders wait out the notice.
                if (order.Kind == OrderKind.Reserved && start > latestStart) continue;
                var end = start + duration;
                if (!s.Offer.Covers(start, end)) continue;

                var victims = s.Bookings
                    .Where(b => b.Interruptible && b.Start < end && b.End > start
                                && (order.Kind != OrderKind.Interruptible || b.BidAmount < order.LimitAmount))
                    .OrderBy(b => b.BidAmount).ThenByDescending(b => b.MatchedAt).ThenBy(b => b.MatchId)
                    .ToList();
                var removed = new HashSet<Booking>(ReferenceEqualityComparer.Instance);
                foreach (var victim in victims)
                {
                    removed.Add(victim);
                    if (Free(s.Offer.Capacity, s.Bookings, start, end, b => removed.Contains(b)) < order.Count) continue;

                    var preemptions = new List<Preemption>();
                    var displacedBid = 0L;
                    foreach (var v in removed)
                    {
                        var idx = s.Bookings.FindIndex(b => ReferenceEquals(b, v));
                        s.Bookings.RemoveAt(idx);
                        s.InterruptibleBookings--;
                        _interruptibleBookings--;
                        var endsAt = v.Start > noticeEnd ? v.Start : noticeEnd;
                        if (endsAt > v.Start) s.Bookings.Add(v with { End = endsAt, Interruptible = false });
                        preemptions.Add(new Preemption(v.MatchId, s.Offer.OfferId, endsAt, s.Offer.PreemptionNoticeSeconds));
                        displacedBid = Math.Max(displacedBid, v.BidAmount);
                    }
                    s.SetFreeNow(s.Offer.Capacity - s.Bookings.Where(b => b.Start <= now && b.End > now).Sum(b => b.Count));
                    s.RecomputeSlots();
                    preemptions.Sort((a, b) => a.MatchId.CompareTo(b.MatchId));
                    return Take(s, order, start, preemptions, displacedBid);
                }
            }
            return null;
        }

        private Taken Take(OfferState s, BookOrder order, DateTimeOffset start, IReadOnlyList<Preemption> preemptions, long displacedBid)
        {
            var interruptible = order.Kind == OrderKind.Interruptible;
            s.Add(new Booking(start, start.AddSeconds(order.DurationSeconds), order.Count)
            {
                MatchId = order.Id,
                Interruptible = interruptible,
                BidAmount = order.LimitAmount,
                MatchedAt = now,
            }, now);
            if (interruptible)
            {
                _interruptibleBookings++;
                _lowestInterruptibleBid = Math.Min(_lowestInterruptibleBid, order.LimitAmount);
            }
            return new Taken(s, start, preemptions, displacedBid);
        }

        private OfferIndex IndexFor(IndexKey key)
        {
            if (_indexes.TryGetValue(key, out var index)) return index;
            // Filtering offers already in priority keeps them in priority: two sorts for all the indexes, not one each.
            var eligible = new List<OfferState>();
            foreach (var s in key.Interruptible ? ByFloor : ByAsk)
                if (s.Offer.Model == key.Model && s.Offer.Currency == key.Currency
                    && (key.Region is null || s.Offer.Region == key.Region)
                    && (key.Jurisdiction is null || s.Offer.Jurisdiction == key.Jurisdiction)
                    && (!key.Interruptible || s.Offer.InterruptibleAllowed))
                    eligible.Add(s);
            return _indexes[key] = new OfferIndex([.. eligible], key.Interruptible);
        }

        public IReadOnlyList<OfferCandidate> Snapshot() => [.. States.Select(s => s.Offer with { Bookings = s.Bookings.ToArray() })];
    }
}
