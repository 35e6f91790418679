using Marketplace.Bidding.Market;
using Marketplace.Bidding.Offers;
using Marketplace.Bidding.Orders;
using Marketplace.ServiceDefaults.Hosting;
using Marketplace.ServiceDefaults.Messaging;
using MassTransit;

namespace Marketplace.Bidding;

public static class BiddingExtensions
{
    public static WebApplicationBuilder AddBiddingServices(this WebApplicationBuilder builder)
    {
        builder.Services.AddOptions<MarketOptions>().BindConfiguration("Market").ValidateDataAnnotations().ValidateOnStart();
        builder.AddServiceDefaults("bidding", bus =>
        {
            bus.AddConsumer<OfferPublishedConsumer, OfferPublishedConsumerDefinition>();
            bus.AddConsumer<OfferWithdrawnConsumer, OfferWithdrawnConsumerDefinition>();
            bus.AddConsumer<LeaseScheduledConsumer, LeaseScheduledConsumerDefinition>();
            bus.AddConsumer<LeaseSlotsMovedConsumer, LeaseSlotsMovedConsumerDefinition>();
            bus.AddConsumer<PlacementFailedConsumer, PlacementFailedConsumerDefinition>();
            bus.AddConsumer<HoldRejectedConsumer, HoldRejectedConsumerDefinition>();
            bus.AddConsumer<LeaseEndedConsumer, LeaseEndedConsumerDefinition>();
            bus.AddConsumer<LeaseExtendedConsumer, LeaseExtendedConsumerDefinition>();
            bus.AddConsumer<ExtensionRejectedConsumer, ExtensionRejectedConsumerDefinition>();
        });
        builder.Services.AddDueWorkHandler<ExpireOrder>();
        builder.Services.AddDueWorkHandler<ClearPlacedOrder>();
        builder.Services.AddDueWorkHandler<ClearMarket>();
        builder.Services.AddSingleton<PlacedOrders>();
        return builder;
    }

    public static WebApplication MapBiddingApi(this WebApplication app)
    {
        var orders = app.MapGroup("/v1/orders").WithTags("Orders");
        orders.MapPost("/", PlaceOrder.HandleAsync).WithName("PlaceOrder")
            .WithSummary("Place an order; it is matched at once or waits in the book with the reason (Idempotency-Key required).");
        orders.MapGet("/{id:guid}", GetOrder.HandleAsync).WithName("GetOrder")
            .WithSummary("An order of your organisation, with its match and why it is not (yet) filled.");
        orders.MapDelete("/{id:guid}", CancelOrder.HandleAsync).WithName("CancelOrder")
            .WithSummary("Cancel an open order.");
        orders.MapPatch("/{id:guid}", AmendOrder.HandleAsync).WithName("AmendOrder")
            .WithSummary("Amend an open order's max price (an interruptible order's bid); it is tried against the book at once.");
        var market = app.MapGroup("/v1/market/{model}").WithTags("Market");
        market.MapGet("/prices", GetPrices.HandleAsync).WithName("GetPrices")
            .WithSummary("Last trade, best bid and ask, hourly volume-weighted price and the interruptible clearing price of a market.");
        market.MapGet("/depth", GetDepth.HandleAsync).WithName("GetDepth")
            .WithSummary("Bids and asks by price level for a window (default: the next hour).");
        market.MapGet("/history", GetHistory.HandleAsync).WithName("GetHistory")
            .WithSummary("Trades of a market, newest first, and hourly volume-weighted prices.");
        return app;
    }
}
