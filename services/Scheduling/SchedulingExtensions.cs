using MassTransit;
using Marketplace.Scheduling.Leases;
using Marketplace.Scheduling.Nodes;
using Marketplace.ServiceDefaults.Hosting;
using Marketplace.ServiceDefaults.Messaging;

namespace Marketplace.Scheduling;

public static class SchedulingExtensions
{
    public static WebApplicationBuilder AddSchedulingServices(this WebApplicationBuilder builder)
    {
        builder.AddServiceDefaults("scheduling", bus =>
        {
            bus.AddConsumer<NodeRegisteredConsumer, NodeRegisteredConsumerDefinition>();
            bus.AddConsumer<OrderMatchedConsumer, OrderMatchedConsumerDefinition>();
            bus.AddConsumer<HoldRejectedConsumer, HoldRejectedConsumerDefinition>();
        });
        builder.Services.AddDueWorkHandler<ActivateLease>();
        builder.Services.AddDueWorkHandler<CompleteLease>();
        return builder;
    }

    public static WebApplication MapSchedulingApi(this WebApplication app)
    {
        app.MapLeaseApi();
        return app;
    }
}
