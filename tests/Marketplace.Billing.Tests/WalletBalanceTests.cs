using System.Net.Http.Json;
using System.Text.Json;
using CsCheck;
using Dapper;
using Marketplace.Billing.Domain;
using Marketplace.Billing.Ledger;
using Marketplace.ServiceDefaults.Data;
using Microsoft.Extensions.DependencyInjection;
using Xunit;

namespace Marketplace.Billing.Tests;

/// <summary>
/// The renters' wallet balances the database keeps beside the journal (wallet_balances) are always the sums of their
/// entries, however the entries arrive: several transactions in one statement, one large transaction by COPY, many writers
/// at once on the same accounts, a transaction posted again; and no other account gets a kept balance.
/// </summary>
public sealed class WalletBalanceTests(AutoConfirmingStripe fx) : IClassFixture<AutoConfirmingStripe>
{
    private static readonly string[] AccountNames =
        [Marketplace.Billing.Domain.Accounts.StripeClearing, Marketplace.Billing.Domain.Accounts.PlatformRevenue, "renter:a:available", "renter:a:held", "renter:b:available", "provider:c:payable"];
    private static readonly string[] Currencies = ["CNY", "JPY", "KWD"];

    /// <summary>A balanced transaction of two to six entries (an account may appear twice), in one currency.</summary>
    private static readonly Gen<LedgerTransaction> Transaction =
        Gen.Select(Gen.Int[0, AccountNames.Length - 1].Array[1, 5], Gen.Long[-1_000_000, 1_000_000].Where(a => a != 0).Array[5], Gen.Int[0, Currencies.Length - 1])
            .Select((accounts, amounts, currency) =>
            {
                var entries = accounts.Select((a, i) => new LedgerEntry(AccountNames[a], Currencies[currency], amounts[i])).ToList();
                if (entries.Sum(e => e.Amount) == 0) // the balancing entry below must not be zero
                    entries[0] = entries[0] with { Amount = entries[0].Amount + Math.Sign(entries[0].Amount) };
                entries.Add(new LedgerEntry(AccountNames[(accounts[0] + 1) % AccountNames.Length], Currencies[currency], -entries.Sum(e => e.Amount)));
                return new LedgerTransaction($"test:{Guid.NewGuid()}", "test", entries);
            });

    private async Task<Dictionary<(string, string), long>> KeptAsync()
    {
        await using var c = fx.Database.OpenAdmin();
        return (await c.QueryAsync<(string Account, string Currency, long Balance)>("SELECT account, currency, balance FROM billing.wallet_balances"))
            .ToDictionary(r => (r.Account, r.Currency), r => r.Balance);
    }

    [Fact]
    public async Task Kept_wallet_balances_move_by_exactly_the_entries_posted_by_four_writers_at_once_in_any_shape()
    {
        var db = fx.Factory.Services.GetRequiredService<Db>();
        await Gen.Select(Transaction.List[1, 12], Transaction.List[1, 12], Transaction.List[1, 12], Transaction.List[1, 12]).SampleAsync(async (a, b, c, d) =>
        {
            var before = await KeptAsync();
            // Three writers post their transactions in one statement each, the fourth as one large transaction by COPY
            // (the billing run's way), each transaction of it merged into one; all four at once, on the same accounts.
            var large = new LedgerTransaction($"test:{Guid.NewGuid()}", "test", [.. d.SelectMany(t => t.Entries)]);
            async Task Post(Func<Tx, Task> post)
            {
                await using var tx = await db.BeginAsync(CancellationToken.None);
                await post(tx);
                await tx.CommitAsync(CancellationToken.None);
            }
            await Task.WhenAll(
                Post(tx => LedgerStore.PostManyAsync(tx, a, CancellationToken.None)),
                Post(tx => LedgerStore.PostManyAsync(tx, b, CancellationToken.None)),
                Post(tx => LedgerStore.PostManyAsync(tx, c, CancellationToken.None)),
                Post(tx => LedgerStore.PostLargeAsync(tx, large, CancellationToken.None)));
            // Posted again: nothing moves.
            await Post(tx => LedgerStore.PostManyAsync(tx, a, CancellationToken.None));

            var after = await KeptAsync();
            var moved = a.Concat(b).Concat(c).Append(large).SelectMany(t => t.Entries)
                .GroupBy(e => (e.Account, e.Currency)).ToDictionary(g => g.Key, g => g.Sum(e => e.Amount));
            foreach (var key in before.Keys.Union(after.Keys).Union(moved.Keys).Where(k => k.Item1.StartsWith("renter:", StringComparison.Ordinal)))
                Assert.Equal(before.GetValueOrDefault(key) + moved.GetValueOrDefault(key), after.GetValueOrDefault(key));
            Assert.All(after.Keys, k => Assert.StartsWith("renter:", k.Item1));
            Assert.True(await fx.LedgerBalancedAsync());
        }, iter: 25, threads: 1);
    }

    [Fact]
    public async Task The_trial_balance_reports_the_books_unbalanced_when_a_kept_wallet_balance_differs_from_its_entries()
    {
        var db = fx.Factory.Services.GetRequiredService<Db>();
        await using (var tx = await db.BeginAsync(CancellationToken.None))
        {
            await LedgerStore.PostAsync(tx, LedgerTransaction.Transfer($"test:{Guid.NewGuid()}", "test", "renter:t:held", "renter:t:available", "CNY", 500),
                CancellationToken.None);
            await tx.CommitAsync(CancellationToken.None);
        }
        async Task<bool> Balanced() =>
            (await fx.Finance().GetFromJsonAsync<JsonElement>("/v1/ledger/trial-balance", BillingFixture.Json)).GetProperty("balanced").GetBoolean();
        Assert.True(await Balanced());

        await using var c = fx.Database.OpenAdmin();
        await c.ExecuteAsync("UPDATE billing.wallet_balances SET balance = balance + 1 WHERE account = 'renter:t:available'");
        try
        {
            Assert.False(await Balanced());
        }
        finally
        {
            await c.ExecuteAsync("UPDATE billing.wallet_balances SET balance = balance - 1 WHERE account = 'renter:t:available'");
        }
        Assert.True(await Balanced());
    }
}
