using Marketplace.Listings.Accelerators;
using Marketplace.Listings.Agent;
using Marketplace.Listings.Clusters;
using Marketplace.Listings.Health;
using Marketplace.Listings.Maintenance;
using Marketplace.Listings.Offers;
using Marketplace.ServiceDefaults.Hosting;

namespace Marketplace.Listings;

public static class ListingsExtensions
{
    public static WebApplicationBuilder AddListingsServices(this WebApplicationBuilder builder)
    {
        // Listings consumes nothing; it publishes node, health, maintenance and offer events through the outbox.
        builder.AddServiceDefaults("listings");
        builder.Services.AddOptions<MarketOptions>().BindConfiguration("Market").ValidateDataAnnotations().ValidateOnStart();
        builder.Services.AddOptions<ListingsOptions>().BindConfiguration(ListingsOptions.Section).ValidateDataAnnotations().ValidateOnStart();
        builder.Services.AddSingleton<NodeHealthMonitor>();
        builder.Services.AddHostedService<NodeHealthMonitorLoop>();
        return builder;
    }

    public static WebApplication MapListingsApi(this WebApplication app)
    {
        ListAccelerators.Map(app);
        ManageAccelerators.Map(app);
        RegisterCluster.Map(app);
        ListClusters.Map(app);
        GetCluster.Map(app);
        ClusterAttestations.Map(app);
        RegisterNode.Map(app);
        NodeMaintenance.Map(app);
        Heartbeat.Map(app);
        PublishOffer.Map(app);
        ChangeOffer.Map(app);
        SearchOffers.Map(app);
        GetOffer.Map(app);
        WithdrawOffer.Map(app);
        return app;
    }
}
