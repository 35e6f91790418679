using Marketplace.ServiceDefaults.Hosting;

namespace Marketplace.Gateway;

public static class GatewayExtensions
{
    public static WebApplicationBuilder AddGatewayServices(this WebApplicationBuilder builder)
    {
        builder.AddServiceDefaults("gateway", bus =>
        {
            // bus.AddConsumer<SomethingConsumer, SomethingConsumerDefinition>();
        });
        return builder;
    }

    public static WebApplication MapGatewayApi(this WebApplication app)
    {
        return app;
    }
}
