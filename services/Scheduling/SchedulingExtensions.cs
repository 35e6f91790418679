using MassTransit;
using Marketplace.Scheduling.Agents;
using Marketplace.Scheduling.Leases;
using Marketplace.Scheduling.Nodes;
using Marketplace.Scheduling.Offers;
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
            bus.AddConsumer<NodeHealthChangedConsumer, NodeHealthChangedConsumerDefinition>();
            bus.AddConsumer<NodeMaintenanceScheduledConsumer, NodeMaintenanceScheduledConsumerDefinition>();
            bus.AddConsumer<NodeMaintenanceCancelledConsumer, NodeMaintenanceCancelledConsumerDefinition>();
            bus.AddConsumer<OfferPublishedConsumer, OfferPublishedConsumerDefinition>();
            bus.AddConsumer<OfferWithdrawnConsumer, OfferWithdrawnConsumerDefinition>();
            bus.AddConsumer<OrderMatchedConsumer, OrderMatchedConsumerDefinition>();
            bus.AddConsumer<HoldRejectedConsumer, HoldRejectedConsumerDefinition>();
            bus.AddConsumer<PreemptionRequestedConsumer, PreemptionRequestedConsumerDefinition>();
            bus.AddConsumer<ExtensionRejectedConsumer, ExtensionRejectedConsumerDefinition>();
        });
        builder.Services.AddSingleton<PlacementBatcher>();
        builder.Services.AddSingleton<PlacementPause>();
        builder.Services.AddHostedService(sp => sp.GetRequiredService<PlacementBatcher>());
        builder.Services.AddOptions<SchedulingOptions>().BindConfiguration(SchedulingOptions.Section).ValidateDataAnnotations().ValidateOnStart();
        builder.Services.AddDueWorkHandler<ActivateLease>();
        builder.Services.AddDueWorkHandler<CompleteLease>();
        builder.Services.AddDueWorkHandler<PreemptLease>();
        builder.Services.AddDueWorkHandler<ProvisioningTimeout>();
        builder.Services.AddDueWorkHandler<MaintenanceStart>();
        return builder;
    }

    public static WebApplication MapSchedulingApi(this WebApplication app)
    {
        app.MapLeaseApi();
        app.MapAgentApi();
        return app;
    }
}
