using System.Net;
using System.Net.Http.Json;
using System.Text.Json.Nodes;
using Marketplace.Contracts;
using Xunit;

namespace Marketplace.Listings.Tests;

/// <summary>Cluster fabric and compliance, node inventory, maintenance windows, offer terms and their changes.</summary>
public sealed class TopologyAndTermsTests(ListingsApp app) : IClassFixture<ListingsApp>
{
    private static readonly DateTimeOffset T0 = ListingsApp.T0;

    private static object ClusterBody(string fabric = "infiniband", int gbps = 400) => new
    {
        name = "wuhan-ib", region = "cn-central", jurisdiction = "CN", fabric, fabric_gbps = gbps, datacenter_tier = 3,
        compliance = new object[]
        {
            new { kind = "mlps", level = 3, evidence_ref = "MLPS-2030-0042", expires_at = T0.AddYears(1) },
            new { kind = "data-residency", evidence_ref = "https://example.com/dr.pdf", expires_at = T0.AddYears(1) },
        },
    };

    [Fact]
    public async Task A_cluster_keeps_its_fabric_tier_and_attestations_and_nodes_carry_inventory_islands_and_topology_to_the_market()
    {
        var client = app.Provider(Guid.NewGuid());
        var cluster = await ListingsApp.ReadAsync<Cluster>(await client.PostAsJsonAsync("/v1/clusters", ClusterBody()), HttpStatusCode.Created);
        var node = await ListingsApp.ReadAsync<Node>(await client.PostAsJsonAsync($"/v1/clusters/{cluster.Id}/nodes", new
        {
            hostname = "gb-01", accelerator_model = "b200", accelerator_count = 8, cpu_cores = 112, ram_gb = 2048, disk_gb = 30000,
            nvlink_domain = "rack-07", gpus_per_nvlink_island = 4,
        }), HttpStatusCode.Created);
        var pcie = await app.CreateNodeAsync(client, cluster.Id, "l40s", 4);

        var read = await ListingsApp.ReadAsync<Cluster>(await client.GetAsync($"/v1/clusters/{cluster.Id}"), HttpStatusCode.OK);
        Assert.Equal(("infiniband", 400, (int?)3), (read.Fabric, read.FabricGbps, read.DatacenterTier));
        Assert.Equal(["data-residency", "mlps"], read.Compliance!.Select(a => a.Kind));
        Assert.Equal(3, read.Compliance!.Single(a => a.Kind == "mlps").Level);
        Assert.Equal((180, (int?)112, "rack-07"), (node.GpuMemoryGb, node.CpuCores, node.NvlinkDomain));
        Assert.Equal([0, 0, 0, 0, 1, 1, 1, 1], node.Slots.Select(s => s.NvlinkIsland ?? -1));
        Assert.All(pcie.Slots, s => Assert.Null(s.NvlinkIsland));
        Assert.Equal(node.Slots, read.Nodes!.Single(n => n.Id == node.Id).Slots);

        var evt = await app.Latest<NodeRegistered>(e => e.NodeId == node.Id, "NodeRegistered");
        Assert.Equal(("rack-07", "infiniband", 400), (evt.NvlinkDomain, evt.Fabric, evt.FabricGbps));
    }

    public static TheoryData<string, string> BadClusters => new()
    {
        { "fabric", """{"name":"c","region":"cn-east","jurisdiction":"CN","fabric":"token-ring"}""" },
        { "fabric_gbps", """{"name":"c","region":"cn-east","jurisdiction":"CN","fabric_gbps":-1}""" },
        { "datacenter_tier", """{"name":"c","region":"cn-east","jurisdiction":"CN","datacenter_tier":5}""" },
        { "compliance[0].kind", """{"name":"c","region":"cn-east","jurisdiction":"CN","compliance":[{"kind":"pci","evidence_ref":"x","expires_at":"2031-01-01T00:00:00Z"}]}""" },
        { "compliance[0].level", """{"name":"c","region":"cn-east","jurisdiction":"CN","compliance":[{"kind":"mlps","evidence_ref":"x","expires_at":"2031-01-01T00:00:00Z"}]}""" },
        { "compliance[0].level", """{"name":"c","region":"cn-east","jurisdiction":"CN","compliance":[{"kind":"soc2","level":2,"evidence_ref":"x","expires_at":"2031-01-01T00:00:00Z"}]}""" },
        { "compliance[0].evidence_ref", """{"name":"c","region":"cn-east","jurisdiction":"CN","compliance":[{"kind":"soc2","expires_at":"2031-01-01T00:00:00Z"}]}""" },
        { "compliance[0].expires_at", """{"name":"c","region":"cn-east","jurisdiction":"CN","compliance":[{"kind":"soc2","evidence_ref":"x","expires_at":"2029-01-01T00:00:00Z"}]}""" },
        { "compliance", """{"name":"c","region":"cn-east","jurisdiction":"CN","compliance":[{"kind":"soc2","evidence_ref":"x","expires_at":"2031-01-01T00:00:00Z"},{"kind":"soc2","evidence_ref":"y","expires_at":"2031-01-01T00:00:00Z"}]}""" },
    };

    [Theory, MemberData(nameof(BadClusters))]
    public async Task A_bad_fabric_or_attestation_is_rejected_and_nothing_is_written(string field, string json)
    {
        var before = await app.SnapshotAsync();
        var response = await app.Provider(Guid.NewGuid()).PostAsync("/v1/clusters", new StringContent(json, System.Text.Encoding.UTF8, "application/json"));
        Assert.Contains(field + ":", (await ListingsApp.ReadAsync<Problem>(response, HttpStatusCode.BadRequest)).Detail);
        Assert.Equal(before, await app.SnapshotAsync());
    }

    [Theory]
    [InlineData("cpu_cores", """{"hostname":"n1","accelerator_model":"h100-sxm","accelerator_count":8,"cpu_cores":0}""")]
    [InlineData("nvlink_domain", """{"hostname":"n1","accelerator_model":"h100-sxm","accelerator_count":8,"nvlink_domain":"Rack 7!"}""")]
    [InlineData("gpus_per_nvlink_island", """{"hostname":"n1","accelerator_model":"h100-sxm","accelerator_count":8,"gpus_per_nvlink_island":3}""")]
    public async Task A_bad_node_inventory_is_rejected_and_nothing_is_written(string field, string json)
    {
        var client = app.Provider(Guid.NewGuid());
        var cluster = await app.CreateClusterAsync(client);
        var before = await app.SnapshotAsync();
        var response = await client.PostAsync($"/v1/clusters/{cluster.Id}/nodes", new StringContent(json, System.Text.Encoding.UTF8, "application/json"));
        Assert.Contains(field + ":", (await ListingsApp.ReadAsync<Problem>(response, HttpStatusCode.BadRequest)).Detail);
        Assert.Equal(before, await app.SnapshotAsync());
    }

    [Fact]
    public async Task Maintenance_is_scheduled_shown_and_cancelled_once_with_events_and_hides_the_offer_for_that_window()
    {
        var org = Guid.NewGuid();
        var client = app.Provider(org);
        var cluster = await app.CreateClusterAsync(client);
        var node = await app.CreateNodeAsync(client, cluster.Id, "dcu-z100", 8);
        var offer = await app.PublishOfferAsync(client, cluster.Id, [node.Id], T0.AddDays(3), T0.AddDays(4));
        var url = $"/v1/clusters/{cluster.Id}/nodes/{node.Id}/maintenance";

        var m = await ListingsApp.ReadAsync<Maintenance>(await client.PostAsJsonAsync(url,
            new { start = T0.AddDays(3).AddHours(2), end = T0.AddDays(3).AddHours(4), reason = "firmware" }), HttpStatusCode.Created);
        var scheduled = await app.Latest<NodeMaintenanceScheduled>(e => e.MaintenanceId == m.Id, "NodeMaintenanceScheduled");
        Assert.Equal((node.Id, org, T0.AddDays(3).AddHours(2), T0.AddDays(3).AddHours(4)), (scheduled.NodeId, scheduled.ProviderOrgId, scheduled.Start, scheduled.End));
        Assert.Equal(m.Id, Assert.Single((await ListingsApp.ReadAsync<Node>(await client.GetAsync($"/v1/clusters/{cluster.Id}/nodes/{node.Id}"),
            HttpStatusCode.OK)).Maintenance!).Id);

        string Search(int fromHour, int toHour) =>
            $"/v1/offers?accelerator_model=dcu-z100&limit=100&available_from={Uri.EscapeDataString(T0.AddDays(3).AddHours(fromHour).ToString("O"))}" +
            $"&available_to={Uri.EscapeDataString(T0.AddDays(3).AddHours(toHour).ToString("O"))}";
        Assert.DoesNotContain((await ListingsApp.ReadAsync<Page<Offer>>(await client.GetAsync(Search(1, 3)), HttpStatusCode.OK)).Data, o => o.Id == offer.Id);
        Assert.Contains((await ListingsApp.ReadAsync<Page<Offer>>(await client.GetAsync(Search(4, 6)), HttpStatusCode.OK)).Data, o => o.Id == offer.Id);

        var overlapping = await client.PostAsJsonAsync(url, new { start = T0.AddDays(3).AddHours(3), end = T0.AddDays(3).AddHours(5) });
        Assert.EndsWith("/maintenance-overlap", (await ListingsApp.ReadAsync<Problem>(overlapping, HttpStatusCode.Conflict)).Type);

        var cancelled = await ListingsApp.ReadAsync<Maintenance>(await client.DeleteAsync($"{url}/{m.Id}"), HttpStatusCode.OK);
        Assert.NotNull(cancelled.CancelledAt);
        var after = await app.SnapshotAsync();
        Assert.NotNull((await ListingsApp.ReadAsync<Maintenance>(await client.DeleteAsync($"{url}/{m.Id}"), HttpStatusCode.OK)).CancelledAt);
        Assert.Equal(after, await app.SnapshotAsync());
        await app.Latest<NodeMaintenanceCancelled>(e => e.MaintenanceId == m.Id, "NodeMaintenanceCancelled");
        Assert.Contains((await ListingsApp.ReadAsync<Page<Offer>>(await client.GetAsync(Search(1, 3)), HttpStatusCode.OK)).Data, o => o.Id == offer.Id);
    }

    [Theory]
    [InlineData("start", """{"end":"2030-01-05T00:00:00Z"}""")]
    [InlineData("end", """{"start":"2030-01-05T00:00:00Z"}""")]
    [InlineData("end", """{"start":"2030-01-05T00:00:00Z","end":"2030-01-04T00:00:00Z"}""")]
    [InlineData("end", """{"start":"2029-12-01T00:00:00Z","end":"2029-12-02T00:00:00Z"}""")]
    [InlineData("end", """{"start":"2030-01-05T00:00:00Z","end":"2030-03-05T00:00:00Z"}""")]
    [InlineData("malformed", """{"start":"soon"}""")]
    public async Task Bad_maintenance_is_rejected_and_nothing_is_written(string field, string json)
    {
        var client = app.Provider(Guid.NewGuid());
        var cluster = await app.CreateClusterAsync(client);
        var node = await app.CreateNodeAsync(client, cluster.Id);
        var before = await app.SnapshotAsync();

        var response = await client.PostAsync($"/v1/clusters/{cluster.Id}/nodes/{node.Id}/maintenance",
            new StringContent(json, System.Text.Encoding.UTF8, "application/json"));

        await ListingsApp.AssertRefusedAsync(response, field);
        Assert.Equal(before, await app.SnapshotAsync());
    }

    [Fact]
    public async Task A_provider_cannot_read_or_change_another_providers_nodes_maintenance_or_offers()
    {
        var owner = app.Provider(Guid.NewGuid());
        var cluster = await app.CreateClusterAsync(owner);
        var node = await app.CreateNodeAsync(owner, cluster.Id);
        var offer = await app.PublishOfferAsync(owner, cluster.Id, [node.Id], T0.AddDays(5), T0.AddDays(6));
        var m = await ListingsApp.ReadAsync<Maintenance>(await owner.PostAsJsonAsync($"/v1/clusters/{cluster.Id}/nodes/{node.Id}/maintenance",
            new { start = T0.AddDays(7), end = T0.AddDays(7).AddHours(1) }), HttpStatusCode.Created);
        var mine = await app.CreateClusterAsync(app.Provider(Guid.NewGuid()));
        var stranger = app.Provider(Guid.NewGuid());
        var before = await app.SnapshotAsync();

        var responses = new[]
        {
            await stranger.GetAsync($"/v1/clusters/{cluster.Id}/nodes/{node.Id}"),
            await stranger.PostAsJsonAsync($"/v1/clusters/{cluster.Id}/nodes/{node.Id}/maintenance", new { start = T0.AddDays(8), end = T0.AddDays(9) }),
            await stranger.PostAsJsonAsync($"/v1/clusters/{mine.Id}/nodes/{node.Id}/maintenance", new { start = T0.AddDays(8), end = T0.AddDays(9) }),
            await stranger.DeleteAsync($"/v1/clusters/{cluster.Id}/nodes/{node.Id}/maintenance/{m.Id}"),
            await stranger.PatchAsJsonAsync($"/v1/offers/{offer.Id}", new { ask_per_hour = new { amount = 1, currency = "CNY" } }),
        };

        foreach (var response in responses)
            Assert.EndsWith("/not-found", (await ListingsApp.ReadAsync<Problem>(response, HttpStatusCode.NotFound)).Type);
        Assert.Equal(before, await app.SnapshotAsync());
    }

    [Fact]
    public async Task An_offer_with_several_windows_and_interruptible_terms_is_published_and_found_only_inside_its_windows()
    {
        var client = app.Provider(Guid.NewGuid());
        var cluster = await app.CreateClusterAsync(client);
        var node = await app.CreateNodeAsync(client, cluster.Id, "kunlun-r200", 8);

        var offer = await ListingsApp.ReadAsync<Offer>(await client.PostAsJsonAsync("/v1/offers", new
        {
            cluster_id = cluster.Id, node_ids = new[] { node.Id },
            windows = new[] { new { start = T0.AddDays(2).AddHours(8), end = T0.AddDays(2).AddHours(20) }, new { start = T0.AddDays(1).AddHours(8), end = T0.AddDays(1).AddHours(20) } },
            ask_per_hour = new { amount = 900, currency = "CNY" }, min_lease_seconds = 3600,
            interruptible_allowed = true, interruptible_floor_per_hour = new { amount = 400, currency = "CNY" },
            preemption_notice_seconds = 300, sla_level = "premium",
        }), HttpStatusCode.Created);

        Assert.Equal((T0.AddDays(1).AddHours(8), T0.AddDays(2).AddHours(20)), (offer.WindowStart, offer.WindowEnd));
        Assert.Equal([T0.AddDays(1).AddHours(8), T0.AddDays(2).AddHours(8)], offer.Windows!.Select(w => w.Start));
        Assert.Equal((new Money(400, "CNY"), 300, "premium"), (offer.InterruptibleFloorPerHour, offer.PreemptionNoticeSeconds, offer.SlaLevel));
        var evt = await app.Latest<OfferPublished>(e => e.OfferId == offer.Id, "OfferPublished");
        Assert.Equal((new Money(400, "CNY"), 300, "premium", 2), (evt.InterruptibleFloorPerHour, evt.PreemptionNoticeSeconds, evt.SlaLevel, evt.Windows!.Count));

        async Task<bool> FoundAsync(double fromHours, double toHours) =>
            (await ListingsApp.ReadAsync<Page<Offer>>(await client.GetAsync(
                $"/v1/offers?accelerator_model=kunlun-r200&interruptible=true&sla_level=premium&limit=100" +
                $"&available_from={Uri.EscapeDataString(T0.AddHours(fromHours).ToString("O"))}&available_to={Uri.EscapeDataString(T0.AddHours(toHours).ToString("O"))}"),
                HttpStatusCode.OK)).Data.Any(o => o.Id == offer.Id);
        Assert.True(await FoundAsync(24 + 9, 24 + 12));
        Assert.True(await FoundAsync(48 + 8, 48 + 20));
        Assert.False(await FoundAsync(24 + 19, 48 + 9)); // spans the night between the windows
        Assert.False(await FoundAsync(24 + 21, 24 + 23));

        // Another offer may take the node in the gap between the windows.
        await app.PublishOfferAsync(client, cluster.Id, [node.Id], T0.AddDays(1).AddHours(20), T0.AddDays(2).AddHours(8));
    }

    [Fact]
    public async Task Changing_an_offer_republishes_it_under_the_same_id_with_the_new_terms()
    {
        var client = app.Provider(Guid.NewGuid());
        var cluster = await app.CreateClusterAsync(client);
        var node = await app.CreateNodeAsync(client, cluster.Id, "h200", 8);
        var offer = await app.PublishOfferAsync(client, cluster.Id, [node.Id], T0.AddDays(10), T0.AddDays(11), 500);

        var changed = await ListingsApp.ReadAsync<Offer>(await client.PatchAsJsonAsync($"/v1/offers/{offer.Id}", new
        {
            ask_per_hour = new { amount = 450, currency = "CNY" }, window_end = T0.AddDays(12), sla_level = "none",
        }), HttpStatusCode.OK);

        Assert.Equal((offer.Id, new Money(450, "CNY"), T0.AddDays(10), T0.AddDays(12), "none"),
            (changed.Id, changed.AskPerHour, changed.WindowStart, changed.WindowEnd, changed.SlaLevel));
        Assert.Equal(app.Clock.GetUtcNow(), changed.UpdatedAt);
        var evt = await app.Latest<OfferPublished>(e => e.OfferId == offer.Id && e.AskPerHour.Amount == 450, "the changed OfferPublished");
        Assert.Equal((T0.AddDays(12), "none"), (evt.WindowEnd, evt.SlaLevel));

        // The node is now held until day 12: a window inside the extension conflicts, after it does not.
        var clash = await client.PostAsJsonAsync("/v1/offers", ListingsApp.OfferBody(cluster.Id, [node.Id], T0.AddDays(11), T0.AddDays(13)));
        Assert.Equal(HttpStatusCode.Conflict, clash.StatusCode);
        var later = await app.PublishOfferAsync(client, cluster.Id, [node.Id], T0.AddDays(12), T0.AddDays(13));

        var before = await app.SnapshotAsync();
        var overlap = await client.PatchAsJsonAsync($"/v1/offers/{offer.Id}", new { window_end = T0.AddDays(12).AddHours(1) });
        Assert.EndsWith("/offer-overlap", (await ListingsApp.ReadAsync<Problem>(overlap, HttpStatusCode.Conflict)).Type);
        Assert.Equal(before, await app.SnapshotAsync());

        await client.DeleteAsync($"/v1/offers/{later.Id}");
        var gone = await client.PatchAsJsonAsync($"/v1/offers/{later.Id}", new { sla_level = "premium" });
        Assert.EndsWith("/offer-withdrawn", (await ListingsApp.ReadAsync<Problem>(gone, HttpStatusCode.Conflict)).Type);
    }

    public static TheoryData<string, string> BadTerms => new()
    {
        { "floor without interruptible", "interruptible_floor_per_hour" },
        { "floor above the ask", "interruptible_floor_per_hour.amount" },
        { "floor in another currency", "interruptible_floor_per_hour.currency" },
        { "overlapping windows", "windows" },
        { "touching windows", "windows" },
        { "a window shorter than the min lease", "windows[1]" },
        { "a window without end", "windows[0].end" },
        { "no windows", "windows" },
        { "window_start that is not the first window's", "window_start" },
        { "unknown sla", "sla_level" },
        { "negative notice", "preemption_notice_seconds" },
    };

    [Theory, MemberData(nameof(BadTerms))]
    public async Task Bad_offer_terms_are_rejected_and_nothing_is_written(string @case, string field)
    {
        var client = app.Provider(Guid.NewGuid());
        var cluster = await app.CreateClusterAsync(client);
        var node = await app.CreateNodeAsync(client, cluster.Id);
        var body = JsonNode.Parse(System.Text.Json.JsonSerializer.Serialize(
            ListingsApp.OfferBody(cluster.Id, [node.Id], T0.AddDays(1), T0.AddDays(2), 500, interruptible: true)))!.AsObject();
        JsonArray Windows(params (int From, int To)[] hours) =>
            new(hours.Select(h => (JsonNode)new JsonObject { ["start"] = T0.AddHours(h.From), ["end"] = T0.AddHours(h.To) }).ToArray());
        void NoEnvelope() { body.Remove("window_start"); body.Remove("window_end"); }
        switch (@case)
        {
            case "floor without interruptible": body["interruptible_allowed"] = false; body["interruptible_floor_per_hour"] = new JsonObject { ["amount"] = 100, ["currency"] = "CNY" }; break;
            case "floor above the ask": body["interruptible_floor_per_hour"] = new JsonObject { ["amount"] = 501, ["currency"] = "CNY" }; break;
            case "floor in another currency": body["interruptible_floor_per_hour"] = new JsonObject { ["amount"] = 100, ["currency"] = "USD" }; break;
            case "overlapping windows": NoEnvelope(); body["windows"] = Windows((30, 40), (35, 50)); break;
            case "touching windows": NoEnvelope(); body["windows"] = Windows((30, 40), (40, 50)); break;
            case "a window shorter than the min lease": NoEnvelope(); body["windows"] = Windows((30, 40), (50, 50)); body["windows"]![1]!["end"] = T0.AddHours(50).AddSeconds(30); break;
            case "a window without end": NoEnvelope(); body["windows"] = new JsonArray(new JsonObject { ["start"] = T0.AddHours(30) }); break;
            case "no windows": NoEnvelope(); body["windows"] = new JsonArray(); break;
            case "window_start that is not the first window's": body["windows"] = Windows((30, 40)); break;
            case "unknown sla": body["sla_level"] = "gold"; break;
            case "negative notice": body["preemption_notice_seconds"] = -1; break;
            default: throw new ArgumentException(@case);
        }
        var before = await app.SnapshotAsync();

        var response = await client.PostAsJsonAsync("/v1/offers", body);

        Assert.Contains(field + ":", (await ListingsApp.ReadAsync<Problem>(response, HttpStatusCode.BadRequest)).Detail);
        Assert.Equal(before, await app.SnapshotAsync());
    }

    [Theory]
    [InlineData("""{}""", "body")]
    [InlineData("""{"node_ids":["00000000-0000-0000-0000-000000000001"]}""", "node_ids")]
    [InlineData("""{"ask_per_hour":{"amount":0,"currency":"CNY"}}""", "ask_per_hour.amount")]
    [InlineData("""{"min_lease_seconds":90000}""", "windows[0]")]
    [InlineData("""{"window_end":"2029-01-01T00:00:00Z"}""", "window_end")]
    [InlineData("""{"sla_level":"gold"}""", "sla_level")]
    [InlineData("""{"interruptible_allowed":"maybe"}""", "malformed")]
    public async Task A_bad_change_is_rejected_and_the_offer_stays_as_it_was(string json, string field)
    {
        var client = app.Provider(Guid.NewGuid());
        var cluster = await app.CreateClusterAsync(client);
        var node = await app.CreateNodeAsync(client, cluster.Id);
        var offer = await app.PublishOfferAsync(client, cluster.Id, [node.Id], T0.AddDays(20), T0.AddDays(21));
        var before = await app.SnapshotAsync();

        var response = await client.PatchAsync($"/v1/offers/{offer.Id}", new StringContent(json, System.Text.Encoding.UTF8, "application/json"));

        await ListingsApp.AssertRefusedAsync(response, field);
        Assert.Equal(before, await app.SnapshotAsync());
    }
}
