using Marketplace.ServiceDefaults.Hosting;

namespace Marketplace.Listings;

public static class ListingsExtensions
{
    public static WebApplicationBuilder AddListingsServices(this WebApplicationBuilder builder)
    {
        builder.AddServiceDefaults("listings", bus =>
        {
            // bus.AddConsumer<SomethingConsumer, SomethingConsumerDefinition>();
        });
        return builder;
    }

    public static WebApplication MapListingsApi(this WebApplication app)
    {
        return app;
    }
}
