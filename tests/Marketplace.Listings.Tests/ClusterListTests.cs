using System.Net;
using System.Net.Http.Json;
using Xunit;

namespace Marketplace.Listings.Tests;

/// <summary>A provider lists its own clusters and a cluster's nodes, a page at a time.</summary>
public sealed class ClusterListTests(ListingsApp app) : IClassFixture<ListingsApp>
{
    private static async Task<List<T>> AllPagesAsync<T>(HttpClient client, string path, int limit)
    {
        var all = new List<T>();
        string? cursor = null;
        for (var pages = 0; pages < 50; pages++)
        {
            var page = await ListingsApp.ReadAsync<Page<T>>(
                await client.GetAsync($"{path}?limit={limit}" + (cursor is null ? "" : "&cursor=" + cursor)), HttpStatusCode.OK);
            Assert.True(page.Data.Length <= limit);
            all.AddRange(page.Data);
            if ((cursor = page.NextCursor) is null) return all;
        }
        throw new InvalidOperationException("the listing never ended");
    }

    [Fact]
    public async Task A_provider_pages_through_exactly_its_own_clusters_newest_first_with_compliance_and_node_counts()
    {
        var org = Guid.NewGuid();
        var client = app.Provider(org);
        var mine = new List<Cluster>();
        for (var i = 0; i < 5; i++)
        {
            mine.Add(await app.CreateClusterAsync(client));
            if (i % 2 == 0) app.Clock.Advance(TimeSpan.FromSeconds(1)); // some share a creation time: ties go by id
        }
        await app.CreateNodeAsync(client, mine[1].Id);
        await app.CreateNodeAsync(client, mine[1].Id, "l40s", 2);
        await client.PutAsJsonAsync($"/v1/clusters/{mine[3].Id}/attestations/soc2",
            new { evidence_ref = "SOC2", expires_at = app.Clock.GetUtcNow().AddDays(30) });
        var stranger = app.Provider(Guid.NewGuid());
        await app.CreateClusterAsync(stranger);

        var listed = await AllPagesAsync<Cluster>(client, "/v1/clusters", 2);

        // PostgreSQL orders uuids by their bytes, which is the order of their lower-case text.
        Assert.Equal(mine.OrderByDescending(c => c.CreatedAt).ThenByDescending(c => c.Id.ToString(), StringComparer.Ordinal).Select(c => c.Id),
            listed.Select(c => c.Id));
        Assert.All(listed, c => Assert.Equal(org, c.ProviderOrgId));
        Assert.All(listed, c => Assert.Null(c.Nodes));
        Assert.Equal(2, listed.Single(c => c.Id == mine[1].Id).NodeCount);
        Assert.Equal(["soc2"], listed.Single(c => c.Id == mine[3].Id).Compliance!.Select(a => a.Kind));
        Assert.Single(await AllPagesAsync<Cluster>(stranger, "/v1/clusters", 100));
    }

    [Fact]
    public async Task A_provider_pages_through_a_clusters_nodes_in_registration_order_with_their_slots()
    {
        var client = app.Provider(Guid.NewGuid());
        var cluster = await app.CreateClusterAsync(client);
        var nodes = new List<Node>();
        for (var i = 0; i < 5; i++) nodes.Add(await app.CreateNodeAsync(client, cluster.Id, "h100-sxm", i + 1));
        await app.CreateNodeAsync(client, (await app.CreateClusterAsync(client)).Id); // another cluster's node stays out

        var listed = await AllPagesAsync<Node>(client, $"/v1/clusters/{cluster.Id}/nodes", 2);

        var expected = nodes.OrderBy(n => n.CreatedAt).ThenBy(n => n.Id.ToString(), StringComparer.Ordinal).ToList();
        Assert.Equal(expected.Select(n => n.Id), listed.Select(n => n.Id));
        Assert.Equal(expected.Select(n => n.AcceleratorCount), listed.Select(n => n.Slots.Length));
        var read = await ListingsApp.ReadAsync<Cluster>(await client.GetAsync($"/v1/clusters/{cluster.Id}"), HttpStatusCode.OK);
        Assert.Equal(5, read.NodeCount);
    }

    [Fact]
    public async Task Another_provider_cannot_list_a_foreign_clusters_nodes_and_a_renter_cannot_list_clusters()
    {
        var owner = app.Provider(Guid.NewGuid());
        var cluster = await app.CreateClusterAsync(owner);
        await app.CreateNodeAsync(owner, cluster.Id);

        Assert.EndsWith("/not-found", (await ListingsApp.ReadAsync<Problem>(
            await app.Provider(Guid.NewGuid()).GetAsync($"/v1/clusters/{cluster.Id}/nodes"), HttpStatusCode.NotFound)).Type);
        Assert.EndsWith("/not-found", (await ListingsApp.ReadAsync<Problem>(
            await app.Provider(Guid.NewGuid()).GetAsync($"/v1/clusters/{cluster.Id}/nodes?limit=0"), HttpStatusCode.NotFound)).Type);
        Assert.EndsWith("/forbidden", (await ListingsApp.ReadAsync<Problem>(
            await app.Renter(Guid.NewGuid()).GetAsync("/v1/clusters"), HttpStatusCode.Forbidden)).Type);
    }

    [Theory]
    [InlineData("limit=0", "limit")]
    [InlineData("limit=101", "limit")]
    [InlineData("cursor=not-a-cursor", "cursor")]
    [InlineData("cursor=OTk5fDB8MDAwMDAwMDAtMDAwMC0wMDAwLTAwMDAtMDAwMDAwMDAwMDAw", "cursor")]
    [InlineData("limit=many", "malformed")]
    public async Task A_bad_page_request_is_a_400_naming_the_parameter(string query, string field)
    {
        var client = app.Provider(Guid.NewGuid());
        var cluster = await app.CreateClusterAsync(client);
        await app.CreateNodeAsync(client, cluster.Id);
        await app.CreateNodeAsync(client, cluster.Id);
        await app.CreateClusterAsync(client);
        // A cursor of one listing is refused by the other.
        var clustersCursor = (await ListingsApp.ReadAsync<Page<Cluster>>(await client.GetAsync("/v1/clusters?limit=1"), HttpStatusCode.OK)).NextCursor;
        var nodesCursor = (await ListingsApp.ReadAsync<Page<Node>>(await client.GetAsync($"/v1/clusters/{cluster.Id}/nodes?limit=1"), HttpStatusCode.OK)).NextCursor;
        Assert.Contains("cursor:", (await ListingsApp.ReadAsync<Problem>(
            await client.GetAsync($"/v1/clusters/{cluster.Id}/nodes?cursor={clustersCursor}"), HttpStatusCode.BadRequest)).Detail);
        Assert.Contains("cursor:", (await ListingsApp.ReadAsync<Problem>(
            await client.GetAsync($"/v1/clusters?cursor={nodesCursor}"), HttpStatusCode.BadRequest)).Detail);

        foreach (var path in new[] { "/v1/clusters", $"/v1/clusters/{cluster.Id}/nodes" })
        {
            var response = await client.GetAsync(path + "?" + query);
            Assert.Equal("application/problem+json", response.Content.Headers.ContentType?.MediaType);
            await ListingsApp.AssertRefusedAsync(response, field);
        }
    }
}
