using System.Net;
using System.Net.Http.Json;
using System.Text.Json.Nodes;
using Marketplace.Contracts;
using Xunit;

namespace Marketplace.Listings.Tests;

/// <summary>Offers of part of a node: <c>nodes: [{node_id, gpus}]</c>; Listings chooses and records the slots.</summary>
public sealed class PartialOfferTests(ListingsApp app) : IClassFixture<ListingsApp>
{
    private static readonly DateTimeOffset T0 = ListingsApp.T0;

    private static object PartBody(Guid clusterId, (Guid Node, int Gpus)[] parts, DateTimeOffset start, DateTimeOffset end, long amount = 300) => new
    {
        cluster_id = clusterId, nodes = parts.Select(p => new { node_id = p.Node, gpus = p.Gpus }), window_start = start, window_end = end,
        ask_per_hour = new { amount, currency = "CNY" }, min_lease_seconds = ListingsApp.MinLeaseSeconds, interruptible_allowed = false,
    };

    private async Task<Offer> PublishPartAsync(HttpClient client, Guid clusterId, (Guid Node, int Gpus)[] parts, DateTimeOffset start, DateTimeOffset end) =>
        await ListingsApp.ReadAsync<Offer>(await client.PostAsJsonAsync("/v1/offers", PartBody(clusterId, parts, start, end)), HttpStatusCode.Created);

    /// <summary>An 8-accelerator node of two NVLink islands of 4.</summary>
    private async Task<Node> TwoIslandNodeAsync(HttpClient client, Guid clusterId) =>
        await ListingsApp.ReadAsync<Node>(await client.PostAsJsonAsync($"/v1/clusters/{clusterId}/nodes", new
        {
            hostname = "gpu-" + Guid.NewGuid().ToString("N")[..8], accelerator_model = "h100-sxm", accelerator_count = 8, gpus_per_nvlink_island = 4,
        }), HttpStatusCode.Created);

    [Fact]
    public async Task Two_offers_of_half_a_node_get_disjoint_slots_count_only_their_own_and_publish_their_slot_ids()
    {
        var client = app.Provider(Guid.NewGuid());
        var cluster = await app.CreateClusterAsync(client);
        var node = await TwoIslandNodeAsync(client, cluster.Id);

        var first = await PublishPartAsync(client, cluster.Id, [(node.Id, 4)], T0.AddHours(1), T0.AddHours(9));
        var second = await PublishPartAsync(client, cluster.Id, [(node.Id, 4)], T0.AddHours(5), T0.AddHours(12));

        Assert.Equal((4, 1, 4), (first.AcceleratorCount, first.NodeCount, first.PerNode));
        Assert.Equal([node.Id], first.NodeIds);
        // Each keeps to one NVLink island; together they hold the node, and no slot twice.
        Assert.Equal(node.Slots.Where(s => s.NvlinkIsland == 0).Select(s => s.Id), first.Slots!.Select(s => s.Id));
        Assert.Equal(node.Slots.Where(s => s.NvlinkIsland == 1).Select(s => s.Id), second.Slots!.Select(s => s.Id));
        Assert.All(first.Slots!.Concat(second.Slots!), s => Assert.Equal(node.Id, s.NodeId));

        var evt = await app.Latest<OfferPublished>(e => e.OfferId == second.Id, "OfferPublished of the second half");
        Assert.Equal(4, evt.AcceleratorCount);
        Assert.Equal([node.Id], evt.NodeIds);
        Assert.Equal(second.Slots!.Select(s => s.Id), evt.SlotIds);

        // Search finds both with their own count and shape, and shows their slots.
        var page = await ListingsApp.ReadAsync<Page<Offer>>(await client.GetAsync($"/v1/offers?accelerator_model=h100-sxm&limit=100"), HttpStatusCode.OK);
        var found = page.Data.Where(o => o.Id == first.Id || o.Id == second.Id).ToList();
        Assert.Equal(2, found.Count);
        Assert.All(found, o => Assert.Equal((4, 4, 4), (o.AcceleratorCount, o.PerNode, o.Slots!.Length)));
        var tooBig = await ListingsApp.ReadAsync<Page<Offer>>(await client.GetAsync($"/v1/offers?accelerator_model=h100-sxm&min_count=5&limit=100"), HttpStatusCode.OK);
        Assert.DoesNotContain(tooBig.Data, o => o.Id == first.Id || o.Id == second.Id);
        var perNode = await ListingsApp.ReadAsync<Page<Offer>>(await client.GetAsync($"/v1/offers?accelerator_model=h100-sxm&per_node=5&limit=100"), HttpStatusCode.OK);
        Assert.DoesNotContain(perNode.Data, o => o.Id == first.Id || o.Id == second.Id);
    }

    [Fact]
    public async Task A_whole_node_offer_publishes_no_slot_ids_and_its_response_lists_none()
    {
        var client = app.Provider(Guid.NewGuid());
        var cluster = await app.CreateClusterAsync(client);
        var node = await app.CreateNodeAsync(client, cluster.Id, "l40s", 4);

        var offer = await app.PublishOfferAsync(client, cluster.Id, [node.Id], T0.AddHours(1), T0.AddHours(3));

        Assert.Null(offer.Slots);
        var evt = await app.Latest<OfferPublished>(e => e.OfferId == offer.Id, "OfferPublished of the whole node");
        Assert.Null(evt.SlotIds);
        Assert.Equal(4, evt.AcceleratorCount);
    }

    [Fact]
    public async Task An_offer_of_several_nodes_in_parts_counts_the_offered_accelerators_and_its_gang_shape_is_the_fewest_per_node()
    {
        var client = app.Provider(Guid.NewGuid());
        var cluster = await app.CreateClusterAsync(client);
        var a = await app.CreateNodeAsync(client, cluster.Id, "ascend-910b", 8);
        var b = await app.CreateNodeAsync(client, cluster.Id, "ascend-910b", 8);

        var offer = await PublishPartAsync(client, cluster.Id, [(a.Id, 6), (b.Id, 2)], T0.AddHours(1), T0.AddHours(4));

        Assert.Equal((8, 2, 2), (offer.AcceleratorCount, offer.NodeCount, offer.PerNode));
        Assert.Equal([a.Id, b.Id], offer.NodeIds);
        Assert.Equal([6, 2], new[] { a.Id, b.Id }.Select(n => offer.Slots!.Count(s => s.NodeId == n)));
        Assert.Equal([0, 1, 2, 3, 4, 5, 0, 1], offer.Slots!.Select(s => s.Index));
    }

    [Fact]
    public async Task A_slot_held_by_an_active_offer_cannot_be_offered_again_for_an_overlapping_window_and_the_409_names_node_and_slots()
    {
        var client = app.Provider(Guid.NewGuid());
        var cluster = await app.CreateClusterAsync(client);
        var node = await app.CreateNodeAsync(client, cluster.Id, "h100-sxm", 8);
        var held = await PublishPartAsync(client, cluster.Id, [(node.Id, 6)], T0.AddHours(2), T0.AddHours(6));
        var before = await app.SnapshotAsync();

        // Only 2 are free: asking for 3 is refused, and so is the whole node.
        var tooMany = await ListingsApp.ReadAsync<Problem>(await client.PostAsJsonAsync("/v1/offers",
            PartBody(cluster.Id, [(node.Id, 3)], T0.AddHours(5), T0.AddHours(8))), HttpStatusCode.Conflict);
        var whole = await ListingsApp.ReadAsync<Problem>(await client.PostAsJsonAsync("/v1/offers",
            ListingsApp.OfferBody(cluster.Id, [node.Id], T0.AddHours(5), T0.AddHours(8))), HttpStatusCode.Conflict);

        foreach (var problem in new[] { tooMany, whole })
        {
            Assert.EndsWith("/offer-overlap", problem.Type);
            Assert.Contains($"Node {node.Id}", problem.Detail);
            Assert.Contains("slots 0, 1, 2, 3, 4, 5", problem.Detail);
            Assert.Contains(held.Id.ToString(), problem.Detail);
        }
        Assert.Contains("2 free accelerators", tooMany.Detail);
        Assert.Equal(before, await app.SnapshotAsync());

        // The two left are offered; after the held window the whole node is free again.
        var rest = await PublishPartAsync(client, cluster.Id, [(node.Id, 2)], T0.AddHours(5), T0.AddHours(8));
        Assert.Equal([6, 7], rest.Slots!.Select(s => s.Index));
        await app.PublishOfferAsync(client, cluster.Id, [node.Id], T0.AddHours(8), T0.AddHours(10));
    }

    [Fact]
    public async Task Changing_an_offer_of_part_of_a_node_keeps_its_slots_and_a_window_overlapping_another_offers_slots_is_refused()
    {
        var client = app.Provider(Guid.NewGuid());
        var cluster = await app.CreateClusterAsync(client);
        var node = await app.CreateNodeAsync(client, cluster.Id, "h100-sxm", 8);
        var part = await PublishPartAsync(client, cluster.Id, [(node.Id, 4)], T0.AddHours(1), T0.AddHours(3));
        var whole = await app.PublishOfferAsync(client, cluster.Id, [node.Id], T0.AddHours(4), T0.AddHours(6));

        var changed = await ListingsApp.ReadAsync<Offer>(await client.PatchAsJsonAsync($"/v1/offers/{part.Id}",
            new { ask_per_hour = new { amount = 999, currency = "CNY" }, window_end = T0.AddHours(4) }), HttpStatusCode.OK);
        Assert.Equal(part.Slots!.Select(s => s.Id), changed.Slots!.Select(s => s.Id));
        var evt = await app.Latest<OfferPublished>(e => e.OfferId == part.Id && e.AskPerHour.Amount == 999, "the changed offer republished");
        Assert.Equal(part.Slots!.Select(s => s.Id), evt.SlotIds);
        Assert.Equal(4, evt.AcceleratorCount);

        var before = await app.SnapshotAsync();
        var overlap = await ListingsApp.ReadAsync<Problem>(await client.PatchAsJsonAsync($"/v1/offers/{part.Id}",
            new { window_end = T0.AddHours(5) }), HttpStatusCode.Conflict);
        Assert.Contains($"Node {node.Id} slots 0, 1, 2, 3", overlap.Detail);
        Assert.Contains(whole.Id.ToString(), overlap.Detail);
        Assert.Equal(before, await app.SnapshotAsync());
    }

    [Fact]
    public async Task Withdrawing_an_offer_of_part_of_a_node_frees_its_slots_for_the_next_offer()
    {
        var client = app.Provider(Guid.NewGuid());
        var cluster = await app.CreateClusterAsync(client);
        var node = await app.CreateNodeAsync(client, cluster.Id, "mi300x", 8);
        var a = await PublishPartAsync(client, cluster.Id, [(node.Id, 5)], T0.AddHours(1), T0.AddHours(3));
        await PublishPartAsync(client, cluster.Id, [(node.Id, 3)], T0.AddHours(1), T0.AddHours(3));
        Assert.Equal(HttpStatusCode.Conflict, (await client.PostAsJsonAsync("/v1/offers",
            PartBody(cluster.Id, [(node.Id, 1)], T0.AddHours(2), T0.AddHours(3)))).StatusCode);

        var withdrawn = await ListingsApp.ReadAsync<Offer>(await client.DeleteAsync($"/v1/offers/{a.Id}"), HttpStatusCode.OK);
        Assert.Equal(a.Slots!.Select(s => s.Id), withdrawn.Slots!.Select(s => s.Id));

        var next = await PublishPartAsync(client, cluster.Id, [(node.Id, 5)], T0.AddHours(2), T0.AddHours(3));
        Assert.Equal(a.Slots!.Select(s => s.Id), next.Slots!.Select(s => s.Id));
    }

    [Fact]
    public async Task Concurrent_offers_of_parts_of_one_node_never_share_a_slot_and_only_as_many_as_fit_are_accepted()
    {
        var client = app.Provider(Guid.NewGuid());
        var cluster = await app.CreateClusterAsync(client);
        var node = await app.CreateNodeAsync(client, cluster.Id, "h200", 8);

        // Eight offers of 3 accelerators at once, in overlapping windows: 8 slots fit two of them.
        var responses = await Task.WhenAll(Enumerable.Range(0, 8).Select(i => client.PostAsJsonAsync("/v1/offers",
            PartBody(cluster.Id, [(node.Id, 3)], T0.AddHours(1 + i % 2), T0.AddHours(5)))));

        var accepted = new List<Offer>();
        foreach (var response in responses)
            if (response.StatusCode == HttpStatusCode.Created) accepted.Add((await response.Content.ReadFromJsonAsync<Offer>(ListingsApp.Json))!);
            else Assert.EndsWith("/offer-overlap", (await ListingsApp.ReadAsync<Problem>(response, HttpStatusCode.Conflict)).Type);
        Assert.Equal(2, accepted.Count);
        var slots = accepted.SelectMany(o => o.Slots!.Select(s => s.Id)).ToList();
        Assert.Equal(6, slots.Distinct().Count());
    }

    [Fact]
    public async Task The_database_refuses_a_second_claim_on_a_slot_for_an_overlapping_window_whatever_the_application_does()
    {
        var client = app.Provider(Guid.NewGuid());
        var cluster = await app.CreateClusterAsync(client);
        var node = await app.CreateNodeAsync(client, cluster.Id, "l40s", 2);
        var first = await PublishPartAsync(client, cluster.Id, [(node.Id, 1)], T0.AddHours(1), T0.AddHours(4));
        var second = await PublishPartAsync(client, cluster.Id, [(node.Id, 1)], T0.AddHours(1), T0.AddHours(4));

        await using var c = app.Database.OpenAdmin();
        var error = await Assert.ThrowsAsync<Npgsql.PostgresException>(() => Dapper.SqlMapper.ExecuteAsync(c, """
            INSERT INTO listings.offer_slots (offer_id, node_id, slot_id, during) VALUES (@offer, @node, @slot, tstzrange(@from, @to))
            """, new { offer = second.Id, node = node.Id, slot = first.Slots![0].Id, from = T0.AddHours(3), to = T0.AddHours(6) }));
        Assert.Equal(Npgsql.PostgresErrorCodes.ExclusionViolation, error.SqlState);
    }

    public static TheoryData<string, string> BadParts => new()
    {
        { "both forms", "nodes" },
        { "empty", "nodes" },
        { "no node id", "nodes[0].node_id" },
        { "no gpus", "nodes[0].gpus" },
        { "zero gpus", "nodes[0].gpus" },
        { "more gpus than the node has", "nodes[0].gpus" },
        { "a node twice", "nodes" },
        { "a node of another provider", "nodes" },
        { "mixed models", "nodes" },
        { "gpus is text", "malformed" },
    };

    [Theory, MemberData(nameof(BadParts))]
    public async Task A_bad_offer_of_part_of_a_node_is_rejected_naming_the_field_and_nothing_is_written(string @case, string field)
    {
        var client = app.Provider(Guid.NewGuid());
        var cluster = await app.CreateClusterAsync(client);
        var h = await app.CreateNodeAsync(client, cluster.Id, "h100-sxm", 8);
        var a = await app.CreateNodeAsync(client, cluster.Id, "a100-80gb", 8);
        var stranger = app.Provider(Guid.NewGuid());
        var foreign = await app.CreateNodeAsync(stranger, (await app.CreateClusterAsync(stranger)).Id, "h100-sxm", 8);
        var body = JsonNode.Parse(System.Text.Json.JsonSerializer.Serialize(
            PartBody(cluster.Id, [(h.Id, 4)], T0.AddDays(1), T0.AddDays(2))))!.AsObject();
        JsonObject Part(object? node, object? gpus) => new() { ["node_id"] = JsonValue.Create(node), ["gpus"] = JsonValue.Create(gpus) };
        switch (@case)
        {
            case "both forms": body["node_ids"] = new JsonArray(h.Id); break;
            case "empty": body["nodes"] = new JsonArray(); break;
            case "no node id": body["nodes"] = new JsonArray(Part(null, 2)); break;
            case "no gpus": body["nodes"] = new JsonArray(Part(h.Id, null)); break;
            case "zero gpus": body["nodes"] = new JsonArray(Part(h.Id, 0)); break;
            case "more gpus than the node has": body["nodes"] = new JsonArray(Part(h.Id, 9)); break;
            case "a node twice": body["nodes"] = new JsonArray(Part(h.Id, 2), Part(h.Id, 2)); break;
            case "a node of another provider": body["nodes"] = new JsonArray(Part(h.Id, 2), Part(foreign.Id, 2)); break;
            case "mixed models": body["nodes"] = new JsonArray(Part(h.Id, 2), Part(a.Id, 2)); break;
            case "gpus is text": body["nodes"] = new JsonArray(Part(h.Id, "four")); break;
            default: throw new ArgumentException(@case);
        }
        var before = await app.SnapshotAsync();

        var response = await client.PostAsJsonAsync("/v1/offers", body);

        Assert.Equal("application/problem+json", response.Content.Headers.ContentType?.MediaType);
        await ListingsApp.AssertRefusedAsync(response, field);
        Assert.Equal(before, await app.SnapshotAsync());
    }

    [Fact]
    public async Task The_nodes_of_an_offer_cannot_be_changed_and_the_refusal_writes_nothing()
    {
        var client = app.Provider(Guid.NewGuid());
        var cluster = await app.CreateClusterAsync(client);
        var node = await app.CreateNodeAsync(client, cluster.Id, "h100-sxm", 8);
        var offer = await PublishPartAsync(client, cluster.Id, [(node.Id, 2)], T0.AddHours(1), T0.AddHours(3));
        var before = await app.SnapshotAsync();

        var response = await client.PatchAsJsonAsync($"/v1/offers/{offer.Id}", new { nodes = new[] { new { node_id = node.Id, gpus = 4 } } });

        Assert.Contains("nodes:", (await ListingsApp.ReadAsync<Problem>(response, HttpStatusCode.BadRequest)).Detail);
        Assert.Equal(before, await app.SnapshotAsync());
    }
}
