using Marketplace.ServiceDefaults.Hosting;

namespace Marketplace.Scheduling;

public static class SchedulingExtensions
{
    public static WebApplicationBuilder AddSchedulingServices(this WebApplicationBuilder builder)
    {
        builder.AddServiceDefaults("scheduling", bus =>
        {
            // bus.AddConsumer<SomethingConsumer, SomethingConsumerDefinition>();
        });
        return builder;
    }

    public static WebApplication MapSchedulingApi(this WebApplication app)
    {
        return app;
    }
}
