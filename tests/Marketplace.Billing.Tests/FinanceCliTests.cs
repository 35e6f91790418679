using Xunit;
using Marketplace.Billing.Domain;
using Marketplace.FinanceCli;
using Marketplace.ServiceDefaults.Web;
using Spectre.Console;
using static Marketplace.Billing.Tests.BillingFixture;

namespace Marketplace.Billing.Tests;

/// <summary>The finance CLI's logic against the real Billing service (the gateway's part, identity headers, done by a handler).</summary>
public sealed class FinanceCliTests(AutoConfirmingStripe fx) : IClassFixture<AutoConfirmingStripe>
{
    /// <summary>Stands in for the gateway: turns the finance API key into the identity headers Billing trusts.</summary>
    private sealed class AsFinance(HttpMessageHandler inner, Guid org) : DelegatingHandler(inner)
    {
        protected override Task<HttpResponseMessage> SendAsync(HttpRequestMessage request, CancellationToken ct)
        {
            request.Headers.Authorization = null;
            request.Headers.Add(Caller.GatewayTokenHeader, "test-gateway-token");
            request.Headers.Add(Caller.OrgHeader, org.ToString());
            request.Headers.Add(Caller.RolesHeader, "finance");
            return base.SendAsync(request, ct);
        }
    }

    [Fact]
    public async Task The_cli_runs_a_period_and_prints_invoices_statements_an_sla_credit_and_the_balanced_ledger()
    {
        var (renter, provider) = (Guid.NewGuid(), Guid.NewGuid());
        await fx.FundAsync(renter, 10_000);
        var start = new DateTimeOffset(DateTime.UtcNow.Date, TimeSpan.Zero).AddDays(-40).AddHours(8);
        var lease = await fx.BookAsync(Lease(renter, provider, 1_000, 1, start, TimeSpan.FromHours(1)));
        await fx.RunAsync(lease, TimeSpan.FromHours(1), downtime: (TimeSpan.FromMinutes(1), TimeSpan.FromMinutes(2), "provider"));
        var output = new StringWriter();
        var console = AnsiConsole.Create(new AnsiConsoleSettings
        {
            Ansi = AnsiSupport.No, ColorSystem = ColorSystemSupport.NoColors, Interactive = InteractionSupport.No,
            Out = new AnsiConsoleOutput(output),
        });
        console.Profile.Width = 240;
        using var client = new FinanceClient("http://billing", "mk_test_finance", new AsFinance(fx.Factory.Server.CreateHandler(), Guid.NewGuid()));

        var summary = await new FinanceConsole(client, console).RunAsync(start.ToString("yyyy-MM-dd"), CancellationToken.None);

        var text = output.ToString();
        Assert.True(summary.Balanced);
        Assert.Equal(246, summary.SlaCredits);        // 60 s down of 3600: 98.33% → 25% of 9.83 CNY = 2.4575 → 2.46
        Assert.Contains("Invoices", text);
        Assert.Contains("SLA credit (standard)", text);
        Assert.Contains("Provider statements", text);
        Assert.Contains("ledger balanced", text);
        Assert.Contains(lease.LeaseId.ToString()[..8], text);
        // The run's trial balance is one row per kind of account, whatever the number of organisations; --all lists each.
        Assert.Contains("renter:*:available", text);
        Assert.DoesNotContain(Accounts.RenterAvailable(renter), text);
        output.GetStringBuilder().Clear();
        await new FinanceConsole(client, console).TrialBalanceAsync(CancellationToken.None, all: true);
        Assert.Contains(Accounts.RenterAvailable(renter), output.ToString());
    }

    [Theory]
    [InlineData("renter:0b0e6c1c-4c43-4a8e-9a52-2d1b1c7e0f10:available", "renter:*:available")]
    [InlineData("provider:0b0e6c1c-4c43-4a8e-9a52-2d1b1c7e0f10:payable", "provider:*:payable")]
    [InlineData("platform:revenue", "platform:revenue")]
    [InlineData("stripe:clearing", "stripe:clearing")]
    public void Accounts_group_by_kind(string account, string kind) => Assert.Equal(kind, FinanceConsole.Kind(account));
}
