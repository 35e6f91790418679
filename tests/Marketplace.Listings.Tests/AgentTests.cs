using System.Net;
using System.Net.Http.Json;
using Dapper;
using Marketplace.Contracts;
using Marketplace.Listings.Health;
using Marketplace.ServiceDefaults.Web;
using Marketplace.Testing;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Time.Testing;
using Xunit;

namespace Marketplace.Listings.Tests;

public sealed record HeartbeatAnswer(Guid NodeId, string Health, bool Verified, string? StatusReason, DateTimeOffset LastHeartbeatAt,
    DateTimeOffset NextHeartbeatBy, string? HealthReason = null, string? VerificationReason = null);

/// <summary>The node agent protocol: authentication by node, verification of the inventory, and silent nodes under a fake clock.</summary>
public sealed class AgentTests(ListingsApp app) : IClassFixture<ListingsApp>
{
    private async Task<(Guid Org, Cluster Cluster, Node Node)> NodeAsync(string model = "h100-sxm", int count = 8)
    {
        var org = Guid.NewGuid();
        var client = app.Provider(org);
        var cluster = await app.CreateClusterAsync(client);
        return (org, cluster, await app.CreateNodeAsync(client, cluster.Id, model, count));
    }

    private async Task<HeartbeatAnswer> BeatAsync(Guid org, Node node, object? body = null) =>
        await ListingsApp.ReadAsync<HeartbeatAnswer>(
            await app.Agent(org, node.Id).PostAsJsonAsync("/v1/agent/heartbeats", body ?? ListingsApp.InventoryOf(node)), HttpStatusCode.OK);

    private async Task<Node> ReadNodeAsync(Guid org, Node node) =>
        await ListingsApp.ReadAsync<Node>(await app.Provider(org).GetAsync($"/v1/clusters/{node.ClusterId}/nodes/{node.Id}"), HttpStatusCode.OK);

    [Fact]
    public async Task A_heartbeat_with_the_declared_inventory_makes_the_node_healthy_and_verified_and_tells_the_market()
    {
        var (org, cluster, node) = await NodeAsync("ascend-910b", 8);
        Assert.Equal(("unknown", false, 64), (node.Health, node.Verified, node.GpuMemoryGb));

        var answer = await BeatAsync(org, node);

        Assert.Equal(("healthy", true, (string?)null), (answer.Health, answer.Verified, answer.StatusReason));
        Assert.Equal(app.Clock.GetUtcNow().AddSeconds(ListingsApp.HeartbeatTimeoutSeconds), answer.NextHeartbeatBy);
        var read = await ReadNodeAsync(org, node);
        Assert.Equal(("healthy", true, (DateTimeOffset?)app.Clock.GetUtcNow()), (read.Health, read.Verified, read.LastHeartbeatAt));
        var evt = await app.Latest<NodeHealthChanged>(e => e.NodeId == node.Id, "NodeHealthChanged");
        Assert.Equal((cluster.Id, org, "healthy", true), (evt.ClusterId, evt.ProviderOrgId, evt.Health, evt.Verified));
    }

    [Fact]
    public async Task A_heartbeat_older_than_the_last_one_applied_changes_nothing()
    {
        var (org, _, node) = await NodeAsync("h100-sxm", 8);
        // A second instance of the service whose clock is 10 s ahead: its heartbeat is the newer report, however late the
        // first instance's (older) one is applied, as when an agent's earlier request waited for a connection or the lock.
        var later = new FakeTimeProvider(app.Clock.GetUtcNow().AddSeconds(10));
        await using var other = new ServiceFactory<Program>("listings", app.Database, app.Factory.VirtualHost, services =>
        {
            services.AddSingleton<TimeProvider>(later);
            services.Remove(services.Single(d => d.ServiceType == typeof(IHostedService) && d.ImplementationType == typeof(NodeHealthMonitorLoop)));
        }, new Dictionary<string, string?> { ["Market:MinLeaseSeconds"] = ListingsApp.MinLeaseSeconds.ToString() });
        using var otherAgent = other.ClientFor(org, "provider");
        otherAgent.DefaultRequestHeaders.Add(Caller.NodeHeader, node.Id.ToString());
        var newer = await ListingsApp.ReadAsync<HeartbeatAnswer>(
            await otherAgent.PostAsJsonAsync("/v1/agent/heartbeats", ListingsApp.InventoryOf(node)), HttpStatusCode.OK);
        Assert.Equal(("healthy", true), (newer.Health, newer.Verified));

        var older = await BeatAsync(org, node, new
        {
            inventory = new { accelerator_model = node.AcceleratorModel, accelerator_count = 7, gpu_memory_gb = node.GpuMemoryGb },
            healthy = false, message = "xid 79",
        });

        Assert.Equal(("healthy", true, later.GetUtcNow()), (older.Health, older.Verified, older.LastHeartbeatAt));
        var read = await ReadNodeAsync(org, node);
        Assert.Equal(("healthy", true, (DateTimeOffset?)later.GetUtcNow(), (string?)null), (read.Health, read.Verified, read.LastHeartbeatAt, read.StatusReason));
        await using var c = app.Database.OpenAdmin();
        Assert.Equal([true], await c.QueryAsync<bool>("SELECT healthy FROM listings.node_health_periods WHERE node_id = @Id ORDER BY started_at", node));
        Assert.DoesNotContain(app.Received.OfType<NodeHealthChanged>(), e => e.NodeId == node.Id && e.Health != "healthy");
    }

    [Fact]
    public async Task A_heartbeat_applied_after_a_later_silence_sweep_never_leaves_overlapping_health_periods()
    {
        var (org, _, node) = await NodeAsync("h100-sxm", 8);
        await BeatAsync(org, node);
        // Another instance sweeps 40 s later by its clock and finds the node silent, while this instance's heartbeat,
        // taken at 35 s, is applied only after the sweep (it waited for the node's lock).
        var sweepClock = new FakeTimeProvider(app.Clock.GetUtcNow().AddSeconds(40));
        await using var sweeper = new ServiceFactory<Program>("listings", app.Database, app.Factory.VirtualHost, services =>
        {
            services.AddSingleton<TimeProvider>(sweepClock);
            services.Remove(services.Single(d => d.ServiceType == typeof(IHostedService) && d.ImplementationType == typeof(NodeHealthMonitorLoop)));
        }, new Dictionary<string, string?>
        {
            ["Market:MinLeaseSeconds"] = ListingsApp.MinLeaseSeconds.ToString(),
            ["Listings:HeartbeatTimeoutSeconds"] = ListingsApp.HeartbeatTimeoutSeconds.ToString(),
        });
        await sweeper.Services.GetRequiredService<NodeHealthMonitor>().MarkSilentNodesUnhealthyAsync(CancellationToken.None);
        Assert.Equal("unhealthy", (await ReadNodeAsync(org, node)).Health);
        app.Clock.Advance(TimeSpan.FromSeconds(35));

        Assert.Equal("healthy", (await BeatAsync(org, node)).Health);

        await using var c = app.Database.OpenAdmin();
        var overlapping = await c.ExecuteScalarAsync<long>("""
            SELECT count(*) FROM listings.node_health_periods a JOIN listings.node_health_periods b
              ON a.node_id = b.node_id AND a.started_at < b.started_at
             AND tstzrange(a.started_at, a.ended_at) && tstzrange(b.started_at, b.ended_at)
            WHERE a.node_id = @Id
            """, node);
        Assert.Equal(0, overlapping);
    }

    [Fact]
    public async Task An_inventory_that_differs_marks_the_node_unverified_with_the_difference_until_it_matches_again()
    {
        var (org, _, node) = await NodeAsync("h100-sxm", 8);
        await BeatAsync(org, node);

        var mismatch = await BeatAsync(org, node, ListingsApp.InventoryOf(node, count: 7));

        Assert.Equal(("healthy", false), (mismatch.Health, mismatch.Verified));
        Assert.Contains("accelerator_count declared 8, observed 7", mismatch.StatusReason);
        var evt = await app.Latest<NodeHealthChanged>(e => e.NodeId == node.Id && !e.Verified, "NodeHealthChanged unverified");
        Assert.Contains("accelerator_count declared 8, observed 7", evt.Reason);
        Assert.Contains("observed 7", (await ReadNodeAsync(org, node)).StatusReason);

        var wrongModel = await BeatAsync(org, node, ListingsApp.InventoryOf(node, model: "a100-80gb"));
        Assert.Contains("accelerator_model declared h100-sxm, observed a100-80gb", wrongModel.StatusReason);

        app.Clock.Advance(TimeSpan.FromSeconds(5));
        var healed = await BeatAsync(org, node);
        Assert.Equal(("healthy", true, (string?)null), (healed.Health, healed.Verified, healed.StatusReason));
        await app.Latest<NodeHealthChanged>(e => e.NodeId == node.Id && e.Verified && e.At == app.Clock.GetUtcNow(), "NodeHealthChanged verified again");
        Assert.Equal(3, app.Received.OfType<NodeHealthChanged>().Count(e => e.NodeId == node.Id)); // the second mismatch changed nothing
    }

    [Fact]
    public async Task A_silent_unverified_node_keeps_its_mismatch_reason_next_to_its_health_reason_until_each_clears()
    {
        var (org, _, node) = await NodeAsync("h100-sxm", 8);
        var mismatch = await BeatAsync(org, node, ListingsApp.InventoryOf(node, count: 7));
        Assert.Equal((null, "observed inventory differs from the declared one: accelerator_count declared 8, observed 7"),
            (mismatch.HealthReason, mismatch.VerificationReason));

        app.Clock.Advance(TimeSpan.FromSeconds(ListingsApp.HeartbeatTimeoutSeconds + 1));
        await app.Monitor.MarkSilentNodesUnhealthyAsync(CancellationToken.None);

        var silent = await ReadNodeAsync(org, node);
        Assert.Equal(("unhealthy", false), (silent.Health, silent.Verified));
        Assert.StartsWith("no heartbeat since", silent.HealthReason);
        Assert.Equal(mismatch.VerificationReason, silent.VerificationReason);
        Assert.Equal(silent.HealthReason + ". " + silent.VerificationReason, silent.StatusReason);
        var evt = await app.Latest<NodeHealthChanged>(e => e.NodeId == node.Id && e.Health == "unhealthy", "NodeHealthChanged unhealthy");
        Assert.Contains("no heartbeat since", evt.Reason);
        Assert.Contains("accelerator_count declared 8, observed 7", evt.Reason);

        // Back, still short of one accelerator: healthy, still unverified for the same reason.
        var back = await BeatAsync(org, node, ListingsApp.InventoryOf(node, count: 7));
        Assert.Equal(("healthy", false, (string?)null), (back.Health, back.Verified, back.HealthReason));
        Assert.Equal(mismatch.VerificationReason, (await ReadNodeAsync(org, node)).VerificationReason);

        var fixedNode = await BeatAsync(org, node);
        Assert.Equal((true, (string?)null, (string?)null), (fixedNode.Verified, fixedNode.VerificationReason, fixedNode.StatusReason));
        var read = await ReadNodeAsync(org, node);
        Assert.Equal(((string?)null, (string?)null), (read.HealthReason, read.VerificationReason));
    }

    [Fact]
    public async Task An_agent_reporting_itself_unhealthy_with_a_mismatch_shows_both_reasons_apart()
    {
        var (org, _, node) = await NodeAsync("h100-sxm", 8);
        var answer = await BeatAsync(org, node, new { inventory = new { accelerator_model = "h100-sxm", accelerator_count = 7, gpu_memory_gb = 80 },
            healthy = false, message = "XID 79" });

        Assert.Equal("the agent reports the node unhealthy: XID 79", answer.HealthReason);
        Assert.Equal("observed inventory differs from the declared one: accelerator_count declared 8, observed 7", answer.VerificationReason);
        var read = await ReadNodeAsync(org, node);
        Assert.Equal((answer.HealthReason, answer.VerificationReason, answer.StatusReason), (read.HealthReason, read.VerificationReason, read.StatusReason));
    }

    [Fact]
    public async Task Declared_cpu_ram_and_disk_are_minimums_the_agent_must_see()
    {
        var org = Guid.NewGuid();
        var client = app.Provider(org);
        var cluster = await app.CreateClusterAsync(client);
        var node = await ListingsApp.ReadAsync<Node>(await client.PostAsJsonAsync($"/v1/clusters/{cluster.Id}/nodes",
            new { hostname = "big-01", accelerator_model = "mi300x", accelerator_count = 8, cpu_cores = 192, ram_gb = 2048, disk_gb = 30000 }),
            HttpStatusCode.Created);

        var more = await BeatAsync(org, node, new { inventory = new { accelerator_model = "mi300x", accelerator_count = 8, gpu_memory_gb = 192,
            cpu_cores = 256, ram_gb = 2048, disk_gb = 30000 } });
        var less = await BeatAsync(org, node, new { inventory = new { accelerator_model = "mi300x", accelerator_count = 8, gpu_memory_gb = 192,
            cpu_cores = 192, ram_gb = 1024 } });

        Assert.True(more.Verified);
        Assert.False(less.Verified);
        Assert.Contains("ram_gb declared 2048, observed 1024", less.StatusReason);
        Assert.Contains("disk_gb declared 30000, not reported", less.StatusReason);
    }

    [Fact]
    public async Task An_agent_that_reports_itself_unhealthy_makes_the_node_unhealthy_with_its_message()
    {
        var (org, _, node) = await NodeAsync();
        await BeatAsync(org, node);

        var answer = await BeatAsync(org, node, new { inventory = new { accelerator_model = node.AcceleratorModel, accelerator_count = 8,
            gpu_memory_gb = node.GpuMemoryGb }, healthy = false, message = "XID 79: GPU 3 fell off the bus" });

        Assert.Equal(("unhealthy", true), (answer.Health, answer.Verified));
        var evt = await app.Latest<NodeHealthChanged>(e => e.NodeId == node.Id && e.Health == "unhealthy", "NodeHealthChanged unhealthy");
        Assert.Contains("XID 79", evt.Reason);
    }

    [Fact]
    public async Task A_node_silent_past_the_timeout_is_marked_unhealthy_once_and_recovers_with_its_next_heartbeat()
    {
        var (org, _, node) = await NodeAsync();
        await BeatAsync(org, node);
        var beatAt = app.Clock.GetUtcNow();

        app.Clock.Advance(TimeSpan.FromSeconds(ListingsApp.HeartbeatTimeoutSeconds));
        await app.Monitor.MarkSilentNodesUnhealthyAsync(CancellationToken.None);
        Assert.Equal("healthy", (await ReadNodeAsync(org, node)).Health); // exactly at the timeout: not yet

        app.Clock.Advance(TimeSpan.FromSeconds(1));
        await app.Monitor.MarkSilentNodesUnhealthyAsync(CancellationToken.None);
        await app.Monitor.MarkSilentNodesUnhealthyAsync(CancellationToken.None);

        var read = await ReadNodeAsync(org, node);
        Assert.Equal("unhealthy", read.Health);
        Assert.Contains("no heartbeat since", read.StatusReason);
        var evt = await app.Latest<NodeHealthChanged>(e => e.NodeId == node.Id && e.Health == "unhealthy", "NodeHealthChanged unhealthy");
        Assert.Equal(beatAt, evt.At); // the outage is dated from the last heartbeat, not from when it was noticed
        Assert.True(evt.Verified);

        Assert.Equal("healthy", (await BeatAsync(org, node)).Health);
        await app.Latest<NodeHealthChanged>(e => e.NodeId == node.Id && e.Health == "healthy" && e.At == app.Clock.GetUtcNow(), "recovered");
        Assert.Equal(3, app.Received.OfType<NodeHealthChanged>().Count(e => e.NodeId == node.Id)); // healthy, unhealthy once, healthy
    }

    [Fact]
    public async Task Reliability_is_measured_healthy_time_over_observed_time_per_node_cluster_and_offer()
    {
        var org = Guid.NewGuid();
        var client = app.Provider(org);
        var cluster = await app.CreateClusterAsync(client);
        var a = await app.CreateNodeAsync(client, cluster.Id, "mlu370", 8);
        var b = await app.CreateNodeAsync(client, cluster.Id, "mlu370", 8);
        var t = app.Clock.GetUtcNow();
        var both = await app.PublishOfferAsync(client, cluster.Id, [a.Id, b.Id], t.AddDays(1), t.AddDays(2));
        Assert.Null(both.Reliability);

        await BeatAsync(org, a);
        await BeatAsync(org, b);
        app.Clock.Advance(TimeSpan.FromHours(6));
        await BeatAsync(org, b);
        await app.Monitor.MarkSilentNodesUnhealthyAsync(CancellationToken.None); // a: down from t+6h
        app.Clock.Advance(TimeSpan.FromHours(2));
        await BeatAsync(org, a);
        await BeatAsync(org, b);
        app.Clock.Advance(TimeSpan.FromHours(2));
        await BeatAsync(org, a);
        await BeatAsync(org, b);
        await app.Monitor.RefreshReliabilityAsync(CancellationToken.None);

        var read = await ListingsApp.ReadAsync<Cluster>(await client.GetAsync($"/v1/clusters/{cluster.Id}"), HttpStatusCode.OK);
        Assert.Equal(0.8m, read.Nodes!.Single(n => n.Id == a.Id).Reliability);
        Assert.Equal(1m, read.Nodes!.Single(n => n.Id == b.Id).Reliability);
        Assert.Equal(0.9m, read.Reliability);
        var found = await ListingsApp.ReadAsync<Page<Offer>>(await client.GetAsync("/v1/offers?accelerator_model=mlu370&min_reliability=0.9&limit=100"),
            HttpStatusCode.OK);
        Assert.Equal(0.9m, Assert.Single(found.Data, o => o.Id == both.Id).Reliability);
        Assert.True(found.Data.Single(o => o.Id == both.Id).Verified);
        var tooStrict = await ListingsApp.ReadAsync<Page<Offer>>(await client.GetAsync("/v1/offers?accelerator_model=mlu370&min_reliability=0.95&limit=100"),
            HttpStatusCode.OK);
        Assert.DoesNotContain(tooStrict.Data, o => o.Id == both.Id);
    }

    [Fact]
    public async Task Maintenance_time_counts_neither_as_up_nor_as_down_time_for_reliability()
    {
        var org = Guid.NewGuid();
        var client = app.Provider(org);
        var cluster = await app.CreateClusterAsync(client);
        var a = await app.CreateNodeAsync(client, cluster.Id, "kunlun-r200", 8);
        var b = await app.CreateNodeAsync(client, cluster.Id, "kunlun-r200", 8);
        var t = app.Clock.GetUtcNow();
        // Two hours planned while healthy, one while down.
        foreach (var (from, to) in new[] { (1, 3), (7, 8) })
            await ListingsApp.ReadAsync<Maintenance>(await client.PostAsJsonAsync($"/v1/clusters/{cluster.Id}/nodes/{a.Id}/maintenance",
                new { start = t.AddHours(from), end = t.AddHours(to) }), HttpStatusCode.Created);

        await BeatAsync(org, a);
        await BeatAsync(org, b);
        app.Clock.Advance(TimeSpan.FromHours(6));
        await BeatAsync(org, b);
        await app.Monitor.MarkSilentNodesUnhealthyAsync(CancellationToken.None); // a: down from t+6h
        app.Clock.Advance(TimeSpan.FromHours(2));
        await BeatAsync(org, a);
        app.Clock.Advance(TimeSpan.FromHours(2));
        await BeatAsync(org, a);
        await BeatAsync(org, b);
        await app.Monitor.RefreshReliabilityAsync(CancellationToken.None);

        // a: 10 h observed less 3 h planned = 7 h, of which 6 h healthy (6 - 2 before the outage, 2 after it).
        Assert.Equal(6m / 7m, (await ReadNodeAsync(org, a)).Reliability!.Value, 6);
        Assert.Equal(1m, (await ReadNodeAsync(org, b)).Reliability);
        var read = await ListingsApp.ReadAsync<Cluster>(await client.GetAsync($"/v1/clusters/{cluster.Id}"), HttpStatusCode.OK);
        Assert.Equal(16m / 17m, read.Reliability!.Value, 6);
    }

    [Fact]
    public async Task Reliability_looks_back_30_days_only()
    {
        var (org, _, node) = await NodeAsync("rtx-4090", 4);
        await BeatAsync(org, node);
        app.Clock.Advance(TimeSpan.FromDays(10));
        await app.Monitor.MarkSilentNodesUnhealthyAsync(CancellationToken.None); // 10 days healthy, then down
        app.Clock.Advance(TimeSpan.FromDays(10));
        await BeatAsync(org, node); // 10 days down, then healthy
        app.Clock.Advance(TimeSpan.FromDays(15));
        await BeatAsync(org, node);

        await app.Monitor.RefreshReliabilityAsync(CancellationToken.None);

        // The window is the last 30 days: 5 of the first healthy days, 10 down, 15 healthy.
        Assert.Equal(20m / 30m, (await ReadNodeAsync(org, node)).Reliability!.Value, 5);
    }

    [Fact]
    public async Task Only_a_node_scoped_caller_of_the_nodes_own_org_may_heartbeat_and_refusals_write_nothing()
    {
        var (org, _, node) = await NodeAsync();
        var (otherOrg, _, otherNode) = await NodeAsync();
        var before = await app.SnapshotAsync();
        var body = ListingsApp.InventoryOf(node);

        var withoutNodeKey = await app.Provider(org).PostAsJsonAsync("/v1/agent/heartbeats", body);
        var foreignNode = await app.Agent(org, otherNode.Id).PostAsJsonAsync("/v1/agent/heartbeats", body);
        var unknownNode = await app.Agent(org, Guid.NewGuid()).PostAsJsonAsync("/v1/agent/heartbeats", body);
        var renter = app.Renter(org);
        renter.DefaultRequestHeaders.Add(Marketplace.ServiceDefaults.Web.Caller.NodeHeader, node.ID());
        var asRenter = await renter.PostAsJsonAsync("/v1/agent/heartbeats", body);

        Assert.EndsWith("/forbidden", (await ListingsApp.ReadAsync<Problem>(withoutNodeKey, HttpStatusCode.Forbidden)).Type);
        Assert.EndsWith("/forbidden", (await ListingsApp.ReadAsync<Problem>(asRenter, HttpStatusCode.Forbidden)).Type);
        Assert.EndsWith("/not-found", (await ListingsApp.ReadAsync<Problem>(foreignNode, HttpStatusCode.NotFound)).Type);
        Assert.EndsWith("/not-found", (await ListingsApp.ReadAsync<Problem>(unknownNode, HttpStatusCode.NotFound)).Type);
        Assert.Equal(before, await app.SnapshotAsync());
        Assert.Equal("unknown", (await ReadNodeAsync(otherOrg, otherNode)).Health);
    }

    public static TheoryData<string, string> BadHeartbeats => new()
    {
        { "inventory", """{"healthy":true}""" },
        { "inventory.accelerator_model", """{"inventory":{"accelerator_count":8,"gpu_memory_gb":80}}""" },
        { "inventory.accelerator_count", """{"inventory":{"accelerator_model":"h100-sxm","gpu_memory_gb":80}}""" },
        { "inventory.accelerator_count", """{"inventory":{"accelerator_model":"h100-sxm","accelerator_count":-1,"gpu_memory_gb":80}}""" },
        { "inventory.gpu_memory_gb", """{"inventory":{"accelerator_model":"h100-sxm","accelerator_count":8}}""" },
        { "inventory.ram_gb", """{"inventory":{"accelerator_model":"h100-sxm","accelerator_count":8,"gpu_memory_gb":80,"ram_gb":-2}}""" },
        { "message", $$"""{"inventory":{"accelerator_model":"h100-sxm","accelerator_count":8,"gpu_memory_gb":80},"message":"{{new string('x', 501)}}"}""" },
        { "malformed", """{"inventory":{"accelerator_model":"h100-sxm","accelerator_count":"eight"}}""" },
        { "malformed", """{"inventory":""" },
    };

    [Theory, MemberData(nameof(BadHeartbeats))]
    public async Task A_bad_heartbeat_is_rejected_with_a_problem_naming_the_field_and_nothing_is_written(string field, string json)
    {
        var (org, _, node) = await NodeAsync();
        var before = await app.SnapshotAsync();

        var response = await app.Agent(org, node.Id).PostAsync("/v1/agent/heartbeats",
            new StringContent(json, System.Text.Encoding.UTF8, "application/json"));

        Assert.Equal("application/problem+json", response.Content.Headers.ContentType?.MediaType);
        await ListingsApp.AssertRefusedAsync(response, field);
        Assert.Equal(before, await app.SnapshotAsync());
    }
}

internal static class NodeIds
{
    public static string ID(this Node node) => node.Id.ToString();
}
