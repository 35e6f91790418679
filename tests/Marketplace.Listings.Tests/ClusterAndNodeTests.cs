using System.Net;
using System.Net.Http.Json;
using Marketplace.Contracts;
using Marketplace.Testing;
using Xunit;

namespace Marketplace.Listings.Tests;

public sealed class ClusterAndNodeTests(ListingsApp app) : IClassFixture<ListingsApp>
{
    [Fact]
    public async Task The_catalog_lists_the_seeded_models_to_any_role()
    {
        var page = await ListingsApp.ReadAsync<Page<AcceleratorInfo>>(
            await app.Renter(Guid.NewGuid()).GetAsync("/v1/accelerators"), HttpStatusCode.OK);

        var byId = page.Data.ToDictionary(a => a.Id);
        Assert.Equal(("NVIDIA", 80), (byId["h100-sxm"].Vendor, byId["h100-sxm"].MemoryGb));
        Assert.Equal("AMD", byId["mi300x"].Vendor);
        Assert.Equal("Huawei", byId["ascend-910b"].Vendor);
        foreach (var id in new[] { "h100-pcie", "a100-80gb", "h200", "l40s", "rtx-4090", "kunlun-r200", "mlu370", "dcu-z100" })
            Assert.Contains(id, byId.Keys);
        Assert.Null(page.NextCursor);
    }

    [Fact]
    public async Task A_provider_registers_a_cluster_and_a_node_and_reads_them_back_with_one_slot_per_accelerator()
    {
        var org = Guid.NewGuid();
        var client = app.Provider(org);
        var cluster = await app.CreateClusterAsync(client, "cn-north", "CN");
        Assert.Equal(org, cluster.ProviderOrgId);
        Assert.Equal(("cn-north", "CN"), (cluster.Region, cluster.Jurisdiction));

        var node = await app.CreateNodeAsync(client, cluster.Id, "ascend-910b", 8, "NPU-01.Example.com");
        Assert.Equal("npu-01.example.com", node.Hostname);
        Assert.Equal(Enumerable.Range(0, 8), node.Slots.Select(s => s.Index));
        Assert.Equal(8, node.Slots.Select(s => s.Id).Distinct().Count());

        var read = await ListingsApp.ReadAsync<Cluster>(await client.GetAsync($"/v1/clusters/{cluster.Id}"), HttpStatusCode.OK);
        Assert.Equal(cluster.Name, read.Name);
        var readNode = Assert.Single(read.Nodes!);
        Assert.Equal(node.Id, readNode.Id);
        Assert.Equal(node.Slots, readNode.Slots);
        Assert.Equal(node.CreatedAt, readNode.CreatedAt);
    }

    [Fact]
    public async Task Registering_a_node_publishes_NodeRegistered_with_its_slots_to_the_broker()
    {
        var org = Guid.NewGuid();
        var client = app.Provider(org);
        var cluster = await app.CreateClusterAsync(client, "eu-west", "DE");
        var node = await app.CreateNodeAsync(client, cluster.Id, "mi300x", 4);

        var evt = await Eventually.Get(() => Task.FromResult(app.Received.OfType<NodeRegistered>().FirstOrDefault(e => e.NodeId == node.Id)),
            e => true, what: "NodeRegistered on the broker");
        Assert.Equal((cluster.Id, org, "eu-west", "DE", "mi300x"), (evt.ClusterId, evt.ProviderOrgId, evt.Region, evt.Jurisdiction, evt.AcceleratorModel));
        Assert.Equal(node.Slots.Select(s => (s.Id, s.Index)), evt.Slots.Select(s => (s.SlotId, s.Index)));
        Assert.Equal(ListingsApp.T0, evt.At);
    }

    [Fact]
    public async Task Host_names_are_unique_within_a_cluster_regardless_of_case_but_not_across_clusters()
    {
        var client = app.Provider(Guid.NewGuid());
        var first = await app.CreateClusterAsync(client);
        var second = await app.CreateClusterAsync(client);
        await app.CreateNodeAsync(client, first.Id, hostname: "gpu-07");
        await app.CreateNodeAsync(client, second.Id, hostname: "gpu-07");
        var before = await app.SnapshotAsync();

        var response = await client.PostAsJsonAsync($"/v1/clusters/{first.Id}/nodes",
            new { hostname = "GPU-07", accelerator_model = "h100-sxm", accelerator_count = 8 });

        var problem = await ListingsApp.ReadAsync<Problem>(response, HttpStatusCode.Conflict);
        Assert.EndsWith("/duplicate-hostname", problem.Type);
        Assert.Equal(before, await app.SnapshotAsync());
    }

    public static TheoryData<string, object> BadClusters => new()
    {
        { "name", new { region = "cn-east", jurisdiction = "CN" } },
        { "name", new { name = "  ", region = "cn-east", jurisdiction = "CN" } },
        { "name", new { name = new string('x', 201), region = "cn-east", jurisdiction = "CN" } },
        { "region", new { name = "c", jurisdiction = "CN" } },
        { "region", new { name = "c", region = "CN East", jurisdiction = "CN" } },
        { "region", new { name = "c", region = "cn-east-", jurisdiction = "CN" } },
        { "jurisdiction", new { name = "c", region = "cn-east" } },
        { "jurisdiction", new { name = "c", region = "cn-east", jurisdiction = "cn" } },
        { "jurisdiction", new { name = "c", region = "cn-east", jurisdiction = "CHN" } },
    };

    [Theory, MemberData(nameof(BadClusters))]
    public async Task A_bad_cluster_is_rejected_with_a_problem_naming_the_field_and_nothing_is_written(string field, object body)
    {
        var before = await app.SnapshotAsync();

        var response = await app.Provider(Guid.NewGuid()).PostAsJsonAsync("/v1/clusters", body);

        Assert.Equal("application/problem+json", response.Content.Headers.ContentType?.MediaType);
        var problem = await ListingsApp.ReadAsync<Problem>(response, HttpStatusCode.BadRequest);
        Assert.EndsWith("/validation", problem.Type);
        Assert.Contains(field + ":", problem.Detail);
        Assert.Equal(before, await app.SnapshotAsync());
    }

    public static TheoryData<string, string> BadNodes => new()
    {
        { "hostname", """{"accelerator_model":"h100-sxm","accelerator_count":8}""" },
        { "hostname", """{"hostname":"bad host!","accelerator_model":"h100-sxm","accelerator_count":8}""" },
        { "accelerator_model", """{"hostname":"n1","accelerator_count":8}""" },
        { "accelerator_model", """{"hostname":"n1","accelerator_model":"tpu-v5","accelerator_count":8}""" },
        { "accelerator_count", """{"hostname":"n1","accelerator_model":"h100-sxm"}""" },
        { "accelerator_count", """{"hostname":"n1","accelerator_model":"h100-sxm","accelerator_count":0}""" },
        { "accelerator_count", """{"hostname":"n1","accelerator_model":"h100-sxm","accelerator_count":17}""" },
        { "malformed", """{"hostname":"n1","accelerator_model":"h100-sxm","accelerator_count":"eight"}""" },
        { "malformed", """{"hostname":"n1",""" },
    };

    [Theory, MemberData(nameof(BadNodes))]
    public async Task A_bad_node_is_rejected_with_a_problem_and_nothing_is_written(string field, string json)
    {
        var client = app.Provider(Guid.NewGuid());
        var cluster = await app.CreateClusterAsync(client);
        var before = await app.SnapshotAsync();

        var response = await client.PostAsync($"/v1/clusters/{cluster.Id}/nodes",
            new StringContent(json, System.Text.Encoding.UTF8, "application/json"));

        Assert.Equal("application/problem+json", response.Content.Headers.ContentType?.MediaType);
        await ListingsApp.AssertRefusedAsync(response, field);
        Assert.Equal(before, await app.SnapshotAsync());
    }

    [Fact]
    public async Task An_unknown_model_is_rejected_with_the_list_of_models_that_exist()
    {
        var client = app.Provider(Guid.NewGuid());
        var cluster = await app.CreateClusterAsync(client);

        var response = await client.PostAsJsonAsync($"/v1/clusters/{cluster.Id}/nodes",
            new { hostname = "n1", accelerator_model = "H100", accelerator_count = 8 });

        var problem = await ListingsApp.ReadAsync<Problem>(response, HttpStatusCode.BadRequest);
        Assert.Contains("unknown accelerator model 'H100'", problem.Detail);
        Assert.Contains("h100-sxm", problem.Detail);
        Assert.Contains("ascend-910b", problem.Detail);
    }

    [Fact]
    public async Task Another_provider_cannot_see_or_extend_a_foreign_cluster()
    {
        var owner = app.Provider(Guid.NewGuid());
        var cluster = await app.CreateClusterAsync(owner);
        await app.CreateNodeAsync(owner, cluster.Id);
        var stranger = app.Provider(Guid.NewGuid());
        var before = await app.SnapshotAsync();

        var read = await stranger.GetAsync($"/v1/clusters/{cluster.Id}");
        var extend = await stranger.PostAsJsonAsync($"/v1/clusters/{cluster.Id}/nodes",
            new { hostname = "intruder", accelerator_model = "h100-sxm", accelerator_count = 8 });
        var missing = await owner.GetAsync($"/v1/clusters/{Guid.NewGuid()}");

        foreach (var response in new[] { read, extend, missing })
            Assert.EndsWith("/not-found", (await ListingsApp.ReadAsync<Problem>(response, HttpStatusCode.NotFound)).Type);
        Assert.Equal(before, await app.SnapshotAsync());
    }

    [Fact]
    public async Task A_renter_is_forbidden_on_every_provider_route_and_nothing_is_written()
    {
        var provider = app.Provider(Guid.NewGuid());
        var cluster = await app.CreateClusterAsync(provider);
        var node = await app.CreateNodeAsync(provider, cluster.Id);
        var offer = await app.PublishOfferAsync(provider, cluster.Id, [node.Id], ListingsApp.T0, ListingsApp.T0.AddHours(4));
        var renter = app.Renter(Guid.NewGuid());
        var before = await app.SnapshotAsync();

        var responses = new[]
        {
            await renter.PostAsJsonAsync("/v1/clusters", new { name = "c", region = "cn-east", jurisdiction = "CN" }),
            await renter.GetAsync($"/v1/clusters/{cluster.Id}"),
            await renter.PostAsJsonAsync($"/v1/clusters/{cluster.Id}/nodes", new { hostname = "x", accelerator_model = "h100-sxm", accelerator_count = 1 }),
            await renter.PostAsJsonAsync("/v1/offers", ListingsApp.OfferBody(cluster.Id, [node.Id], ListingsApp.T0.AddDays(1), ListingsApp.T0.AddDays(2))),
            await renter.DeleteAsync($"/v1/offers/{offer.Id}"),
        };

        foreach (var response in responses)
            Assert.EndsWith("/forbidden", (await ListingsApp.ReadAsync<Problem>(response, HttpStatusCode.Forbidden)).Type);
        Assert.Equal(before, await app.SnapshotAsync());
    }
}
