using System.Net;
using System.Net.Http.Json;
using Dapper;
using Marketplace.Contracts;
using Marketplace.ServiceDefaults.Messaging;
using Marketplace.Testing;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Xunit;

namespace Marketplace.Listings.Tests;

/// <summary>The service without its background relay, so the outbox rows can be seen before they are relayed.</summary>
public sealed class ListingsAppWithoutRelay : ListingsApp
{
    protected override void ConfigureServices(IServiceCollection services) =>
        services.Remove(services.Single(d => d.ServiceType == typeof(IHostedService) && d.ImplementationType == typeof(OutboxRelay)));

    public Task<int> RelayAsync() =>
        ActivatorUtilities.CreateInstance<OutboxRelay>(Factory.Services).RelayBatchAsync(CancellationToken.None);
}

public sealed class OutboxTests(ListingsAppWithoutRelay app) : IClassFixture<ListingsAppWithoutRelay>
{
    private sealed record OutboxRow(string MessageType, string Body);

    private async Task<List<OutboxRow>> OutboxAsync()
    {
        await using var c = app.Database.OpenAdmin();
        return (await c.QueryAsync<OutboxRow>("SELECT message_type, body::text AS body FROM listings.outbox ORDER BY id")).AsList();
    }

    [Fact]
    public async Task A_node_commits_with_its_NodeRegistered_outbox_row_which_the_relay_then_delivers()
    {
        var client = app.Provider(Guid.NewGuid());
        var cluster = await app.CreateClusterAsync(client);
        await app.RelayAsync(); // whatever earlier tests left

        var node = await app.CreateNodeAsync(client, cluster.Id, "h200", 2);

        var row = Assert.Single(await OutboxAsync());
        Assert.Equal(typeof(NodeRegistered).FullName, row.MessageType);
        Assert.Contains(node.Id.ToString(), row.Body);
        Assert.DoesNotContain(app.Received.OfType<NodeRegistered>(), e => e.NodeId == node.Id);

        Assert.Equal(1, await app.RelayAsync());

        Assert.Empty(await OutboxAsync());
        var evt = await Eventually.Get(() => Task.FromResult(app.Received.OfType<NodeRegistered>().FirstOrDefault(e => e.NodeId == node.Id)),
            _ => true, what: "the relayed NodeRegistered");
        Assert.Equal(node.Slots.Select(s => s.Id), evt.Slots.Select(s => s.SlotId));
    }

    [Fact]
    public async Task A_rejected_offer_leaves_no_outbox_row_and_an_accepted_one_leaves_exactly_one()
    {
        var client = app.Provider(Guid.NewGuid());
        var cluster = await app.CreateClusterAsync(client);
        var node = await app.CreateNodeAsync(client, cluster.Id);
        await app.PublishOfferAsync(client, cluster.Id, [node.Id], ListingsApp.T0, ListingsApp.T0.AddHours(2));
        await app.RelayAsync();

        var overlapping = await client.PostAsJsonAsync("/v1/offers",
            ListingsApp.OfferBody(cluster.Id, [node.Id], ListingsApp.T0.AddHours(1), ListingsApp.T0.AddHours(3)));
        Assert.Equal(HttpStatusCode.Conflict, overlapping.StatusCode);
        Assert.Empty(await OutboxAsync());

        var offer = await app.PublishOfferAsync(client, cluster.Id, [node.Id], ListingsApp.T0.AddHours(2), ListingsApp.T0.AddHours(3));
        var row = Assert.Single(await OutboxAsync());
        Assert.Equal(typeof(OfferPublished).FullName, row.MessageType);
        Assert.Contains(offer.Id.ToString(), row.Body);
    }
}
