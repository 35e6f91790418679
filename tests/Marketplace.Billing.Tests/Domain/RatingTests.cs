using CsCheck;
using Marketplace.Billing.Domain;

namespace Marketplace.Billing.Tests.Domain;

public sealed class RatingTests
{
    // Prices up to 100 000 major units per hour in a 3-decimal currency, 64 accelerators, a year of seconds.
    private static readonly Gen<long> Price = Gen.Long[0, 100_000_000];
    private static readonly Gen<int> Count = Gen.Int[1, 64];
    private static readonly Gen<long> Seconds = Gen.Long[0, 366L * 24 * 3600];

    [Fact]
    public void Cost_is_the_exact_rational_rounded_once_half_to_even() =>
        Gen.Select(Price, Count, Seconds).Sample((price, count, seconds) =>
        {
            var exact = (decimal)price * count * seconds / 3600m;
            return Rating.Cost(price, count, seconds) == (long)Math.Round(exact, MidpointRounding.ToEven);
        });

    [Fact]
    public void Cost_never_decreases_with_more_seconds_or_accelerators() =>
        Gen.Select(Price, Count, Seconds, Gen.Long[0, 100_000]).Sample((price, count, seconds, more) =>
            Rating.Cost(price, count, seconds + more) >= Rating.Cost(price, count, seconds)
            && Rating.Cost(price, count + 1, seconds) >= Rating.Cost(price, count, seconds));

    [Fact]
    public void A_hold_always_covers_the_charge_for_any_usage_within_the_lease() =>
        Gen.Select(Price, Count, Seconds, Gen.Double[0, 1]).Sample((price, count, booked, used) =>
            Rating.Cost(price, count, (long)(booked * used)) <= Rating.MaxCost(price, count, booked)
            && Rating.MaxCost(price, count, booked) - (decimal)price * count * booked / 3600m < 1m);

    [Theory]
    [InlineData("JPY", 300L)]      // 0 decimals: 300 yen / h
    [InlineData("CNY", 235L)]      // 2 decimals: 2.35 yuan / h
    [InlineData("KWD", 1_250L)]    // 3 decimals: 1.250 dinar / h
    public void Whole_hours_cost_exactly_price_times_count_times_hours_in_any_currency(string currency, long price) =>
        Gen.Select(Count, Gen.Int[0, 24 * 31]).Sample((count, hours) =>
            Rating.Cost(price, count, hours * 3600L) == price * count * hours
            && Currencies.Format(price * count * hours, currency).EndsWith(" " + currency, StringComparison.Ordinal));

    [Theory]
    [InlineData(235, 1, 1800, 118)]   // 117.5 → 118 (118 is even)
    [InlineData(233, 1, 1800, 116)]   // 116.5 → 116 (116 is even)
    [InlineData(1, 1, 1799, 0)]       // 0.4997 → 0
    [InlineData(235, 2, 1807, 236)]   // 235.91 → 236
    public void Half_to_even_examples(long price, int count, long seconds, long expected) =>
        Assert.Equal(expected, Rating.Cost(price, count, seconds));

    [Theory]
    [InlineData(236, 1000, 24)]   // 23.6 → 24
    [InlineData(25, 1000, 2)]     // 2.5 → 2
    [InlineData(35, 1000, 4)]     // 3.5 → 4
    public void Fees_round_half_to_even(long amount, int bps, long expected) => Assert.Equal(expected, Rating.Fee(amount, bps));

    [Theory]
    [InlineData(1200, "CNY", "12.00 CNY")]
    [InlineData(3525, "CNY", "35.25 CNY")]
    [InlineData(1200, "JPY", "1200 JPY")]
    [InlineData(1200, "KWD", "1.200 KWD")]
    public void Amounts_are_shown_in_major_units(long minor, string currency, string shown) =>
        Assert.Equal(shown, Currencies.Format(minor, currency));
}
