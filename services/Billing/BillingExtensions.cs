using Marketplace.Billing.Holds;
using Marketplace.Billing.Invoices;
using Marketplace.Billing.Ledger;
using Marketplace.Billing.Payouts;
using Marketplace.Billing.Runs;
using Marketplace.Billing.Usage;
using Marketplace.Billing.Wallet;
using Marketplace.ServiceDefaults.Hosting;
using MassTransit;
using Microsoft.Extensions.Options;
using Stripe;

namespace Marketplace.Billing;

public static class BillingExtensions
{
    public static WebApplicationBuilder AddBillingServices(this WebApplicationBuilder builder)
    {
        builder.AddServiceDefaults("billing", bus =>
        {
            bus.AddConsumer<LeaseScheduledConsumer, LeaseScheduledConsumerDefinition>();
            bus.AddConsumer<LeaseStartedConsumer, LeaseStartedConsumerDefinition>();
            bus.AddConsumer<LeaseEndedConsumer, LeaseEndedConsumerDefinition>();
            bus.AddConsumer<LeaseExtendedConsumer, LeaseExtendedConsumerDefinition>();
            bus.AddConsumer<LeaseInterruptedConsumer, LeaseInterruptedConsumerDefinition>();
            bus.AddConsumer<LeaseResumedConsumer, LeaseResumedConsumerDefinition>();
        });
        builder.Services.AddSingleton<BillingRunHooks>();
        builder.Services.AddScoped<BillingRunner>();
        builder.Services.AddOptions<BillingOptions>().BindConfiguration("Billing").ValidateDataAnnotations().ValidateOnStart();
        builder.Services.AddOptions<StripeOptions>().BindConfiguration("Stripe").ValidateDataAnnotations().ValidateOnStart();
        // One client for the process: Stripe.net's client is thread-safe and pools its HTTP connections.
        builder.Services.AddSingleton(sp =>
        {
            var o = sp.GetRequiredService<IOptions<StripeOptions>>().Value;
            return new StripeClient(new StripeClientOptions { ApiKey = o.ApiKey, ApiBase = o.ApiBase.TrimEnd('/') });
        });
        return builder;
    }

    public static WebApplication MapBillingApi(this WebApplication app)
    {
        var v1 = app.MapGroup("/v1");
        v1.MapGet("/wallet", GetWallet.Handle).WithTags("Wallet");
        v1.MapPost("/wallet/top-ups", CreateTopUp.Handle).WithTags("Wallet");
        v1.MapPut("/wallet/spend-cap", WalletSettings.PutSpendCap).WithTags("Wallet");
        v1.MapPut("/wallet/low-balance-threshold", WalletSettings.PutLowBalanceThreshold).WithTags("Wallet");
        v1.MapPost("/billing/periods/{period}/runs", RunBillingPeriod.Handle).WithTags("Billing runs");
        v1.MapGet("/billing/periods/{period}/runs", RunBillingPeriod.GetProgress).WithTags("Billing runs");
        v1.MapGet("/invoices", BillingReads.ListInvoices).WithTags("Invoices");
        v1.MapGet("/invoices/export.csv", Exports.InvoicesCsv).WithTags("Invoices");
        v1.MapGet("/invoices/{id:guid}", BillingReads.GetInvoice).WithTags("Invoices");
        v1.MapPost("/invoices/{id:guid}/credit-notes", CreateCreditNote.Handle).WithTags("Invoices");
        v1.MapGet("/statements", BillingReads.ListStatements).WithTags("Statements");
        v1.MapGet("/statements/export.csv", Exports.StatementsCsv).WithTags("Statements");
        v1.MapPost("/payout-accounts", PayoutAccounts.Create).WithTags("Payout accounts");
        v1.MapGet("/payout-accounts", PayoutAccounts.List).WithTags("Payout accounts");
        v1.MapGet("/payout-accounts/{id:guid}", PayoutAccounts.Get).WithTags("Payout accounts");
        v1.MapPost("/payout-accounts/{id:guid}/onboarding-links", PayoutAccounts.CreateLink).WithTags("Payout accounts");
        v1.MapGet("/ledger/trial-balance", TrialBalance.Handle).WithTags("Ledger");
        v1.MapGet("/ledger/entries", Exports.LedgerJson).WithTags("Ledger");
        v1.MapGet("/ledger/entries.csv", Exports.LedgerCsv).WithTags("Ledger");
        // Outside /v1: Stripe has no API key; the signature is the authentication. The gateway forwards
        // POST /v1/webhooks/stripe here.
        app.MapPost("/webhooks/stripe", StripeWebhook.Handle).WithTags("Webhooks");
        return app;
    }
}
