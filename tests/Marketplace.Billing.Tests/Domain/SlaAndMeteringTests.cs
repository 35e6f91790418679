using Xunit;
using CsCheck;
using Marketplace.Billing.Domain;

namespace Marketplace.Billing.Tests.Domain;

public sealed class SlaAndMeteringTests
{
    private static readonly DateTime T0 = new(2026, 11, 29, 10, 0, 0, DateTimeKind.Utc);
    private const long Hour = 3_600_000_000; // microseconds

    private static Gen<string> OneOf(params string[] values) => Gen.Int[0, values.Length - 1].Select(i => values[i]);

    private static LeaseUsage Usage(TimeSpan booked, TimeSpan ran, string status = "completed", string cause = "platform",
        bool interruptible = false, string level = "standard", params DowntimeInterval[] downtime) =>
        new(T0, T0 + booked, T0, T0 + ran, status, cause, interruptible, level, downtime);

    private static DowntimeInterval Down(int fromSecond, int? toSecond, string cause = "provider") =>
        new(T0.AddSeconds(fromSecond), toSecond is { } t ? T0.AddSeconds(t) : null, cause);

    // Standard: < 99.5% → 10%, < 99% → 25%, < 95% → 100%. Premium: < 99.9% → 10%, < 99.5% → 25%, < 99% → 50%, < 95% → 100%.
    [Theory]
    [InlineData("standard", 0, 0)]
    [InlineData("standard", 18, 0)]        // 99.5% exactly: not below 99.5%
    [InlineData("standard", 19, 1000)]     // 99.47%
    [InlineData("standard", 36, 1000)]     // 99.0% exactly: not below 99%
    [InlineData("standard", 37, 2500)]
    [InlineData("standard", 180, 2500)]    // 95.0% exactly
    [InlineData("standard", 181, 10_000)]
    [InlineData("premium", 3, 0)]          // 99.917%
    [InlineData("premium", 4, 1000)]       // 99.889%
    [InlineData("premium", 19, 2500)]
    [InlineData("premium", 37, 5000)]
    [InlineData("premium", 181, 10_000)]
    [InlineData("none", 3600, 0)]
    public void Credit_tiers_per_level_at_and_around_each_boundary(string level, int downSecondsPerHour, int expectedBp) =>
        Assert.Equal(expectedBp, Sla.CreditBasisPoints(level, Hour, downSecondsPerHour * 1_000_000L));

    [Fact]
    public void More_downtime_never_earns_a_smaller_credit() =>
        Gen.Select(OneOf("standard", "premium"), Gen.Long[1, 10 * Hour], Gen.Double[0, 1], Gen.Double[0, 1])
            .Sample((level, expected, a, b) =>
            {
                var (less, more) = ((long)(expected * Math.Min(a, b)), (long)(expected * Math.Max(a, b)));
                return Sla.CreditBasisPoints(level, expected, more) >= Sla.CreditBasisPoints(level, expected, less);
            });

    [Fact]
    public void Downtime_is_never_billed_and_overlapping_intervals_count_once()
    {
        var m = Metering.Meter(Usage(TimeSpan.FromHours(1), TimeSpan.FromHours(1), downtime:
            [Down(100, 200), Down(150, 260, "platform"), Down(1000, 1010, "renter")]));

        Assert.Equal(3600 - 160 - 10, m.BilledSeconds);
        Assert.Equal(170, m.DowntimeSeconds);
        Assert.Equal(160 * 1_000_000L, m.SlaDowntimeMicros);   // the renter's own 10 s do not count against the provider
        Assert.Equal(2500, m.SlaCreditBasisPoints);            // 95.6% → 25%
    }

    [Fact]
    public void An_interruption_still_open_when_the_lease_ends_runs_to_the_end()
    {
        var m = Metering.Meter(Usage(TimeSpan.FromHours(1), TimeSpan.FromHours(1), downtime: [Down(3000, null)]));
        Assert.Equal(3000, m.BilledSeconds);
        Assert.Equal(600, m.DowntimeSeconds);
    }

    [Fact]
    public void A_provider_failure_counts_the_undelivered_rest_as_downtime_but_bills_only_what_ran()
    {
        var m = Metering.Meter(Usage(TimeSpan.FromHours(1), TimeSpan.FromMinutes(30), status: "failed", cause: "provider"));
        Assert.Equal(1800, m.BilledSeconds);
        Assert.Equal(Hour, m.SlaExpectedMicros);
        Assert.Equal(10_000, m.SlaCreditBasisPoints); // 50% availability → 100% credit
    }

    [Theory]
    [InlineData("cancelled", "renter", 0)]      // the renter stopped early: no credit, pays what ran
    [InlineData("preempted", "market", 0)]      // interruptible capacity taken back: no credit
    [InlineData("completed", "platform", 0)]
    [InlineData("preempted", "platform", 10_000)]
    [InlineData("cancelled", "provider", 10_000)]
    public void Early_ends_earn_a_credit_only_when_the_provider_or_the_platform_ended_the_lease(string status, string cause, int bp) =>
        Assert.Equal(bp, Metering.Meter(Usage(TimeSpan.FromHours(1), TimeSpan.FromMinutes(30), status, cause)).SlaCreditBasisPoints);

    [Fact]
    public void Interruptible_leases_carry_no_sla() =>
        Assert.Equal(0, Metering.Meter(Usage(TimeSpan.FromHours(1), TimeSpan.FromMinutes(10), "preempted", "provider", interruptible: true,
            downtime: [Down(0, 300)])).SlaCreditBasisPoints);

    private static readonly Gen<DowntimeInterval[]> Intervals = Gen.Select(Gen.Int[-100, 4000], Gen.Int[0, 900], OneOf("provider", "platform", "renter", "market"))
        .Select((from, length, cause) => new DowntimeInterval(T0.AddSeconds(from), T0.AddSeconds(from + length), cause)).Array[0, 8];

    [Fact]
    public void Downtime_and_sla_downtime_equal_a_second_by_second_count_in_any_order() =>
        Gen.Select(Gen.Int[1, 3000], Gen.Int[0, 3500],
                Gen.Select(Gen.Int[-100, 3500], Gen.Int[0, 600], Gen.Bool, OneOf("provider", "platform", "renter", "market")).Array[0, 40])
            .Sample((booked, ran, raw) =>
            {
                // Whole seconds, unsorted, overlapping, some still open at the end; more than 32 takes the heap path.
                var downtime = raw.Select(d => new DowntimeInterval(T0.AddSeconds(d.Item1), d.Item3 ? null : T0.AddSeconds(d.Item1 + d.Item2), d.Item4)).ToArray();
                var m = Metering.Meter(new LeaseUsage(T0, T0.AddSeconds(booked), T0, T0.AddSeconds(ran), "completed", "renter", false, "standard", downtime));
                var end = Math.Min(ran, booked);
                bool Down(int second, bool slaOnly) => downtime.Any(d => (!slaOnly || d.Cause is "provider" or "platform")
                    && d.Start <= T0.AddSeconds(second) && (d.End is not { } e || T0.AddSeconds(second) < e));
                var all = Enumerable.Range(0, end).Count(s => Down(s, false));
                var sla = Enumerable.Range(0, end).Count(s => Down(s, true));
                return m.DowntimeSeconds == all && m.SlaDowntimeMicros == sla * 1_000_000L && m.BilledSeconds == end - all;
            });

    [Fact]
    public void Billed_plus_downtime_never_exceeds_the_span_and_the_charge_never_exceeds_the_hold() =>
        Gen.Select(Gen.Int[1, 7200], Gen.Int[0, 8000], Intervals, Gen.Long[0, 100_000], Gen.Int[1, 8]).Sample((booked, ran, downtime, price, count) =>
        {
            var u = new LeaseUsage(T0, T0.AddSeconds(booked), T0, T0.AddSeconds(ran), "completed", "platform", false, "premium", downtime);
            var m = Metering.Meter(u);
            var span = Math.Min(ran, booked);
            var hold = Rating.MaxCost(price, count, booked);
            var line = Settlement.Price(price, count, m, 1000, hold);
            return m.BilledSeconds + m.DowntimeSeconds <= span && m.BilledSeconds >= 0 && line.Amount <= hold
                   && line.SlaCredit <= line.Amount && line.ProviderNet >= 0;
        });

    [Fact]
    public void Settling_a_lease_always_balances_and_empties_the_hold() =>
        Gen.Select(Gen.Long[0, 10_000_000], Gen.Long[0, 10_000_000], Gen.Int[0, 10_000], Gen.Int[0, 10_000]).Sample((hold, used, creditBp, feeBp) =>
        {
            var amount = Math.Min(hold, used);
            var credit = Rating.Share(amount, creditBp);
            var line = new PricedLine(amount, creditBp, credit, Rating.Share(amount - credit, feeBp));
            var (renter, provider) = (Guid.NewGuid(), Guid.NewGuid());
            var settle = Settlement.Settle(Guid.NewGuid(), renter, provider, "KWD", hold, line);
            var entries = settle?.Entries ?? [];
            long On(string account) => entries.Where(e => e.Account == account).Sum(e => e.Amount);
            return entries.Sum(e => e.Amount) == 0
                   && On(Accounts.RenterHeld(renter)) == -hold                              // the whole hold is settled
                   && On(Accounts.RenterAvailable(renter)) == hold - amount + credit       // the rest and the credit come back
                   && On(Accounts.ProviderPayable(provider)) == line.ProviderNet
                   && On(Accounts.PlatformRevenue) == line.PlatformFee
                   && entries.Select(e => e.Account).Distinct().Count() == entries.Count;   // one entry per account
        });

    [Fact]
    public void A_batch_settles_as_one_transaction_with_the_per_account_sums_of_its_leases() =>
        Gen.Select(Gen.Long[0, 1_000_000], Gen.Long[0, 1_000_000], Gen.Int[0, 10_000], Gen.Int[0, 3], Gen.Int[0, 3], Gen.Bool,
                (hold, used, creditBp, renter, provider, ran) => (hold, used, creditBp, renter, provider, ran)).Array[1, 30]
            .Sample(leases =>
            {
                var renters = Enumerable.Range(0, 4).Select(_ => Guid.NewGuid()).ToArray();
                var providers = Enumerable.Range(0, 4).Select(_ => Guid.NewGuid()).ToArray();
                var toSettle = leases.Select(l =>
                {
                    var amount = Math.Min(l.hold, l.used);
                    var credit = Rating.Share(amount, l.creditBp);
                    PricedLine? line = l.ran ? new PricedLine(amount, l.creditBp, credit, Rating.Share(amount - credit, 1000)) : null;
                    return new LeaseToSettle(renters[l.renter], providers[l.provider], l.renter % 2 == 0 ? "CNY" : "JPY", l.hold, line);
                }).ToList();
                var perLease = toSettle.Select(l => Settlement.Settle(Guid.NewGuid(), l.Renter, l.Provider, l.Currency, l.HoldAmount, l.Line))
                    .OfType<LedgerTransaction>().ToList();
                var expected = perLease.SelectMany(t => t.Entries).GroupBy(e => (e.Account, e.Currency))
                    .Select(g => (g.Key.Account, g.Key.Currency, Sum: g.Sum(e => e.Amount))).Where(x => x.Sum != 0).OrderBy(x => x).ToList();
                // What the billing run posts: the same sums, straight from the leases, in currency then account order.
                var entries = Settlement.SettleBatch("settle:test", toSettle)?.Entries ?? [];
                var actual = entries.Select(e => (e.Account, e.Currency, Sum: e.Amount)).OrderBy(x => x).ToList();
                var ordered = entries.OrderBy(e => e.Currency, StringComparer.Ordinal).ThenBy(e => e.Account, StringComparer.Ordinal);
                return expected.SequenceEqual(actual) && entries.SequenceEqual(ordered);
            });

    [Theory]
    [InlineData("JPY", 300L, 2500, 75L)]      // 0 decimals: 300 yen line, 25% credit = 75
    [InlineData("CNY", 235L, 1000, 24L)]      // 2 decimals: 23.5 → 24 (half to even)
    [InlineData("KWD", 1_250L, 1000, 125L)]   // 3 decimals: 0.125 KWD
    [InlineData("CNY", 225L, 1000, 22L)]      // 22.5 → 22 (half to even)
    public void Sla_credits_round_once_half_to_even_in_any_currency(string currency, long line, int bp, long credit)
    {
        Assert.Equal(credit, Rating.Share(line, bp));
        Assert.EndsWith(currency, Currencies.Format(credit, currency), StringComparison.Ordinal);
    }
}
