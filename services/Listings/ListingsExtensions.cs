using Marketplace.Listings.Accelerators;
using Marketplace.Listings.Clusters;
using Marketplace.Listings.Offers;
using Marketplace.ServiceDefaults.Hosting;

namespace Marketplace.Listings;

public static class ListingsExtensions
{
    public static WebApplicationBuilder AddListingsServices(this WebApplicationBuilder builder)
    {
        // Listings consumes nothing yet; it publishes NodeRegistered, OfferPublished and OfferWithdrawn through the outbox.
        builder.AddServiceDefaults("listings");
        builder.Services.AddOptions<MarketOptions>().BindConfiguration("Market").ValidateDataAnnotations().ValidateOnStart();
        return builder;
    }

    public static WebApplication MapListingsApi(this WebApplication app)
    {
        ListAccelerators.Map(app);
        RegisterCluster.Map(app);
        GetCluster.Map(app);
        RegisterNode.Map(app);
        PublishOffer.Map(app);
        SearchOffers.Map(app);
        WithdrawOffer.Map(app);
        return app;
    }
}
