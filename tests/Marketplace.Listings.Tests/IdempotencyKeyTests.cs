using System.Net;
using System.Net.Http.Json;
using Marketplace.Contracts;
using Marketplace.Testing;
using Xunit;

namespace Marketplace.Listings.Tests;

/// <summary>
/// POST /v1/clusters and POST /v1/clusters/{id}/nodes honour an optional Idempotency-Key as POST /v1/offers does: a
/// provider whose request was cut off resends it and gets the object it created, never a second one.
/// </summary>
public sealed class IdempotencyKeyTests(ListingsApp app) : IClassFixture<ListingsApp>
{
    private static async Task<HttpResponseMessage> PostAsync(HttpClient client, string path, object body, string key)
    {
        using var request = new HttpRequestMessage(HttpMethod.Post, path) { Content = JsonContent.Create(body) };
        request.Headers.Add("Idempotency-Key", key);
        return await client.SendAsync(request);
    }

    private static object ClusterBody(string name) => new
    {
        name, region = "cn-east", jurisdiction = "CN",
        compliance = new[] { new { kind = "iso27001", evidence_ref = "https://certs.example.com/iso", expires_at = ListingsApp.T0.AddYears(1) } },
    };

    private static object NodeBody(string hostname) => new { hostname, accelerator_model = "h100-sxm", accelerator_count = 4 };

    [Fact]
    public async Task A_cluster_resent_with_its_Idempotency_Key_is_the_same_cluster_and_the_key_with_another_body_is_refused()
    {
        var client = app.Provider(Guid.NewGuid());
        var key = Guid.NewGuid().ToString();

        var created = await ListingsApp.ReadAsync<Cluster>(await PostAsync(client, "/v1/clusters", ClusterBody("east-1"), key), HttpStatusCode.Created);
        var afterFirst = await app.SnapshotAsync();
        var again = await ListingsApp.ReadAsync<Cluster>(await PostAsync(client, "/v1/clusters", ClusterBody("east-1"), key), HttpStatusCode.OK);

        Assert.Equal((created.Id, created.Name, created.CreatedAt), (again.Id, again.Name, again.CreatedAt));
        Assert.Equal("iso27001", Assert.Single(again.Compliance!).Kind);
        Assert.Equal(afterFirst, await app.SnapshotAsync());

        var problem = await ListingsApp.ReadAsync<Problem>(await PostAsync(client, "/v1/clusters", ClusterBody("east-2"), key), (HttpStatusCode)422);
        Assert.EndsWith("/idempotency-key-reused", problem.Type);
        Assert.Contains(created.Id.ToString(), problem.Detail);
        Assert.Equal(afterFirst, await app.SnapshotAsync());

        // Another provider's key of the same value is its own.
        var other = await PostAsync(app.Provider(Guid.NewGuid()), "/v1/clusters", ClusterBody("east-1"), key);
        Assert.NotEqual(created.Id, (await ListingsApp.ReadAsync<Cluster>(other, HttpStatusCode.Created)).Id);

        // Two racing requests with one new key create one cluster.
        var raceKey = Guid.NewGuid().ToString();
        var answers = await Task.WhenAll(PostAsync(client, "/v1/clusters", ClusterBody("east-3"), raceKey),
            PostAsync(client, "/v1/clusters", ClusterBody("east-3"), raceKey));
        Assert.Equal([HttpStatusCode.OK, HttpStatusCode.Created], answers.Select(a => a.StatusCode).Order());
        var ids = await Task.WhenAll(answers.Select(a => ListingsApp.ReadAsync<Cluster>(a, a.StatusCode)));
        Assert.Equal(ids[0].Id, ids[1].Id);
    }

    [Fact]
    public async Task A_node_resent_with_its_Idempotency_Key_is_the_same_node_published_once_and_the_key_elsewhere_is_refused()
    {
        var client = app.Provider(Guid.NewGuid());
        var cluster = await app.CreateClusterAsync(client);
        var otherCluster = await app.CreateClusterAsync(client);
        var key = Guid.NewGuid().ToString();
        var path = $"/v1/clusters/{cluster.Id}/nodes";

        var created = await ListingsApp.ReadAsync<Node>(await PostAsync(client, path, NodeBody("gpu-a"), key), HttpStatusCode.Created);
        var afterFirst = await app.SnapshotAsync();
        // Without the key the resent request would be a 409 duplicate-hostname: with it, the node the first one created.
        var again = await ListingsApp.ReadAsync<Node>(await PostAsync(client, path, NodeBody("gpu-a"), key), HttpStatusCode.OK);

        Assert.Equal(created.Id, again.Id);
        Assert.Equal(created.Slots.Select(s => s.Id), again.Slots.Select(s => s.Id));
        Assert.Equal(afterFirst, await app.SnapshotAsync()); // nothing written, nothing published again
        await Eventually.Get(() => Task.FromResult(app.Received.OfType<NodeRegistered>().FirstOrDefault(e => e.NodeId == created.Id)),
            _ => true, what: "NodeRegistered on the broker");
        Assert.Single(app.Received.OfType<NodeRegistered>(), e => e.NodeId == created.Id);

        foreach (var (otherPath, body) in new[] { (path, NodeBody("gpu-b")), ($"/v1/clusters/{otherCluster.Id}/nodes", NodeBody("gpu-a")) })
        {
            var problem = await ListingsApp.ReadAsync<Problem>(await PostAsync(client, otherPath, body, key), (HttpStatusCode)422);
            Assert.EndsWith("/idempotency-key-reused", problem.Type);
            Assert.Contains(created.Id.ToString(), problem.Detail);
        }
        Assert.Equal(afterFirst, await app.SnapshotAsync());

        var raceKey = Guid.NewGuid().ToString();
        var answers = await Task.WhenAll(PostAsync(client, path, NodeBody("gpu-c"), raceKey), PostAsync(client, path, NodeBody("gpu-c"), raceKey));
        Assert.Equal([HttpStatusCode.OK, HttpStatusCode.Created], answers.Select(a => a.StatusCode).Order());
        var ids = await Task.WhenAll(answers.Select(a => ListingsApp.ReadAsync<Node>(a, a.StatusCode)));
        Assert.Equal(ids[0].Id, ids[1].Id);
    }

    [Fact]
    public async Task An_unusable_Idempotency_Key_is_a_400_naming_the_header_and_writes_nothing()
    {
        var client = app.Provider(Guid.NewGuid());
        var cluster = await app.CreateClusterAsync(client);
        var before = await app.SnapshotAsync();

        await ListingsApp.AssertRefusedAsync(await PostAsync(client, "/v1/clusters", ClusterBody("x"), new string('k', 256)), "Idempotency-Key");
        await ListingsApp.AssertRefusedAsync(await PostAsync(client, $"/v1/clusters/{cluster.Id}/nodes", NodeBody("gpu-x"), new string('k', 256)),
            "Idempotency-Key");
        Assert.Equal(before, await app.SnapshotAsync());
    }
}
