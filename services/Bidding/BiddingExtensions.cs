using Marketplace.Bidding.Market;
using Marketplace.Bidding.Offers;
using Marketplace.Bidding.Orders;
using Marketplace.ServiceDefaults.Hosting;
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
            bus.AddConsumer<PlacementFailedConsumer, PlacementFailedConsumerDefinition>();
            bus.AddConsumer<HoldRejectedConsumer, HoldRejectedConsumerDefinition>();
            bus.AddConsumer<LeaseEndedConsumer, LeaseEndedConsumerDefinition>();
        });
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
        app.MapGet("/v1/market/{model}/prices", GetPrices.HandleAsync).WithTags("Market").WithName("GetPrices")
            .WithSummary("Last trade and best ask of a market (one accelerator model).");
        return app;
    }
}
