using CsCheck;
using Marketplace.Billing.Domain;

namespace Marketplace.Billing.Tests.Domain;

public sealed class LedgerTransactionTests
{
    private static readonly Gen<string> Currency = OneOf("CNY", "JPY", "KWD", "USD");
    private static readonly Gen<string> Account = OneOf(
        Accounts.StripeClearing, Accounts.PlatformRevenue, Accounts.PayoutsClearing, "renter:a:available", "renter:a:held", "provider:b:payable");

    private static Gen<string> OneOf(params string[] values) => Gen.Int[0, values.Length - 1].Select(i => values[i]);

    [Fact]
    public void Transfers_of_any_amount_sum_to_zero_per_currency() =>
        Gen.Select(Account, Account, Currency, Gen.Long[1, long.MaxValue]).Sample((from, to, currency, amount) =>
        {
            var t = LedgerTransaction.Transfer("k", "test", from, to, currency, amount);
            return t.Entries.GroupBy(e => e.Currency).All(g => g.Sum(e => (decimal)e.Amount) == 0);
        });

    [Fact]
    public void A_transaction_that_does_not_sum_to_zero_cannot_be_built() =>
        Gen.Select(Account, Account, Currency, Gen.Long[1, 1_000_000_000], Gen.Long[1, 1_000_000]).Sample((a, b, currency, amount, skew) =>
        {
            var ex = Record.Exception(() => new LedgerTransaction("k", "test",
                [new LedgerEntry(a, currency, -amount), new LedgerEntry(b, currency, amount + skew)]));
            return ex is ArgumentException;
        });

    [Fact]
    public void Balanced_in_one_currency_does_not_excuse_another() =>
        Assert.Throws<ArgumentException>(() => new LedgerTransaction("k", "test",
        [
            new LedgerEntry("x", "CNY", -100), new LedgerEntry("y", "CNY", 100),
            new LedgerEntry("x", "USD", -5), new LedgerEntry("y", "JPY", 5),
        ]));

    [Fact]
    public void Overflowing_entries_are_refused_instead_of_wrapping_to_zero() =>
        Assert.ThrowsAny<Exception>(() => new LedgerTransaction("k", "test",
        [
            new LedgerEntry("x", "CNY", long.MaxValue), new LedgerEntry("y", "CNY", long.MaxValue), new LedgerEntry("z", "CNY", 2),
        ]));

    [Fact]
    public void Zero_entries_and_single_entries_are_refused()
    {
        Assert.Throws<ArgumentException>(() => new LedgerTransaction("k", "t", [new LedgerEntry("x", "CNY", 0), new LedgerEntry("y", "CNY", 0)]));
        Assert.Throws<ArgumentException>(() => new LedgerTransaction("k", "t", [new LedgerEntry("x", "CNY", 5)]));
    }
}
