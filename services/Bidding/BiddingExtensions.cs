using Marketplace.ServiceDefaults.Hosting;

namespace Marketplace.Bidding;

public static class BiddingExtensions
{
    public static WebApplicationBuilder AddBiddingServices(this WebApplicationBuilder builder)
    {
        builder.AddServiceDefaults("bidding", bus =>
        {
            // bus.AddConsumer<SomethingConsumer, SomethingConsumerDefinition>();
        });
        return builder;
    }

    public static WebApplication MapBiddingApi(this WebApplication app)
    {
        return app;
    }
}
