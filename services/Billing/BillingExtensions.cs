using Marketplace.ServiceDefaults.Hosting;

namespace Marketplace.Billing;

public static class BillingExtensions
{
    public static WebApplicationBuilder AddBillingServices(this WebApplicationBuilder builder)
    {
        builder.AddServiceDefaults("billing", bus =>
        {
            // bus.AddConsumer<SomethingConsumer, SomethingConsumerDefinition>();
        });
        return builder;
    }

    public static WebApplication MapBillingApi(this WebApplication app)
    {
        return app;
    }
}
