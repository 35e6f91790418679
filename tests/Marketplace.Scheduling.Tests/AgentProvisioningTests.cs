using System.Net;
using System.Net.Http.Json;
using System.Text.Json;
using Marketplace.Contracts;
using Marketplace.ServiceDefaults.Web;

namespace Marketplace.Scheduling.Tests;

/// <summary>The service with Scheduling:RequireAgentAck on: leases provision through node agents.</summary>
public sealed class AgentFixture : SchedulingFixture
{
    protected override IDictionary<string, string?>? Settings => new Dictionary<string, string?>
    {
        ["Scheduling:RequireAgentAck"] = "true",
        ["Scheduling:ProvisioningTimeoutSeconds"] = "60",
    };
}

public sealed class AgentProvisioningTests(AgentFixture f) : IClassFixture<AgentFixture>
{
    private HttpClient Agent(NodeRegistered node)
    {
        var client = f.Factory.ClientFor(node.ProviderOrgId, "provider");
        client.DefaultRequestHeaders.Add(Caller.NodeHeader, node.NodeId.ToString());
        return client;
    }

    private static async Task<List<JsonElement>> AssignmentsAsync(HttpClient agent)
    {
        var page = await agent.GetFromJsonAsync<JsonElement>("/v1/agent/assignments");
        return page.GetProperty("data").EnumerateArray().ToList();
    }

    private static Task<HttpResponseMessage> AckAsync(HttpClient agent, JsonElement assignment, string status) =>
        agent.PostAsJsonAsync($"/v1/agent/assignments/{assignment.GetProperty("id").GetGuid()}/ack", new { status });

    private async Task<(LeaseScheduled Lease, OrderMatched Match)> ProvisioningLeaseAsync(Guid provider, Guid cluster, params NodeRegistered[] nodes)
    {
        var start = f.Clock.GetUtcNow().AddMinutes(1);
        var match = f.Match(Guid.NewGuid(), provider, nodes.Select(n => n.NodeId), nodes.Sum(n => n.Slots.Count), start, start.AddHours(1));
        var lease = await f.ScheduleAsync(match);
        await f.Factory.ClientFor(match.RenterOrgId, "renter").PatchAsJsonAsync($"/v1/leases/{lease.LeaseId}",
            new { ssh_public_key = "ssh-ed25519 AAAAkey renter@example", container_image = "nvcr.io/nvidia/pytorch:24.05-py3" });
        await f.AdvanceAndRunAsync(TimeSpan.FromMinutes(1), async () => await f.StatusAsync(lease.LeaseId) == "provisioning");
        return (lease, match);
    }

    [Fact]
    public async Task A_lease_is_active_once_every_agent_acknowledged_its_start_and_started_at_is_the_last_ack()
    {
        var provider = Guid.NewGuid();
        var cluster = Guid.NewGuid();
        var a = await f.RegisterNodeAsync(provider, 8, cluster: cluster, nvlinkDomain: "rack", fabric: "ib");
        var b = await f.RegisterNodeAsync(provider, 8, cluster: cluster, nvlinkDomain: "rack", fabric: "ib");
        var (lease, match) = await ProvisioningLeaseAsync(provider, cluster, a, b);

        var forA = Assert.Single(await AssignmentsAsync(Agent(a)));
        Assert.Equal(("start", lease.LeaseId), (forA.GetProperty("action").GetString(), forA.GetProperty("lease_id").GetGuid()));
        Assert.Equal("ssh-ed25519 AAAAkey renter@example", forA.GetProperty("ssh_public_key").GetString());
        Assert.Equal("nvcr.io/nvidia/pytorch:24.05-py3", forA.GetProperty("container_image").GetString());
        Assert.Equal(8, forA.GetProperty("slots").GetArrayLength());

        f.Clock.Advance(TimeSpan.FromSeconds(5));
        Assert.Equal(HttpStatusCode.OK, (await AckAsync(Agent(a), forA, "running")).StatusCode);
        Assert.Equal("provisioning", await f.StatusAsync(lease.LeaseId));
        Assert.Empty(await AssignmentsAsync(Agent(a)));

        f.Clock.Advance(TimeSpan.FromSeconds(5));
        var forB = Assert.Single(await AssignmentsAsync(Agent(b)));
        Assert.Equal(HttpStatusCode.OK, (await AckAsync(Agent(b), forB, "running")).StatusCode);
        Assert.Equal("active", await f.StatusAsync(lease.LeaseId));
        var started = await f.EventAsync<LeaseStarted>(e => e.LeaseId == lease.LeaseId);
        Assert.Equal(match.Start.AddSeconds(10), started.At);

        // At the end each agent gets a stop instruction.
        await f.AdvanceAndRunAsync(TimeSpan.FromHours(1), async () => await f.StatusAsync(lease.LeaseId) == "completed");
        var stop = Assert.Single(await AssignmentsAsync(Agent(a)));
        Assert.Equal("stop", stop.GetProperty("action").GetString());
        Assert.Equal(HttpStatusCode.OK, (await AckAsync(Agent(a), stop, "stopped")).StatusCode);
    }

    [Fact]
    public async Task An_agent_that_does_not_acknowledge_in_time_loses_the_lease_to_other_capacity()
    {
        var provider = Guid.NewGuid();
        var cluster = Guid.NewGuid();
        var silent = await f.RegisterNodeAsync(provider, 4, cluster: cluster);
        var spare = await f.RegisterNodeAsync(provider, 4, cluster: cluster);
        var (lease, match) = await ProvisioningLeaseAsync(provider, cluster, silent);
        var ignored = Assert.Single(await AssignmentsAsync(Agent(silent)));

        await f.AdvanceAndRunAsync(TimeSpan.FromSeconds(60), async () => (await AssignmentsAsync(Agent(spare))).Count == 1);

        Assert.Equal("provisioning", await f.StatusAsync(lease.LeaseId));
        Assert.Empty(await AssignmentsAsync(Agent(silent)));
        await AssertProblemAsync(await AckAsync(Agent(silent), ignored, "running"), HttpStatusCode.Conflict, "assignment-settled");
        var replacement = Assert.Single(await AssignmentsAsync(Agent(spare)));
        Assert.Equal(HttpStatusCode.OK, (await AckAsync(Agent(spare), replacement, "running")).StatusCode);
        Assert.Equal("active", await f.StatusAsync(lease.LeaseId));
        var json = await f.Factory.ClientFor(match.RenterOrgId, "renter").GetFromJsonAsync<JsonElement>($"/v1/leases/{lease.LeaseId}");
        Assert.All(json.GetProperty("slots").EnumerateArray(), s => Assert.Equal(spare.NodeId, s.GetProperty("node_id").GetGuid()));
        Assert.Equal(0, await f.OverlappingBookingsAsync());
    }

    [Fact]
    public async Task A_failed_start_with_no_other_capacity_ends_the_lease_as_failed_by_the_provider()
    {
        var provider = Guid.NewGuid();
        var cluster = Guid.NewGuid();
        var node = await f.RegisterNodeAsync(provider, 2, cluster: cluster);
        var (lease, _) = await ProvisioningLeaseAsync(provider, cluster, node);

        var assignment = Assert.Single(await AssignmentsAsync(Agent(node)));
        var response = await Agent(node).PostAsJsonAsync($"/v1/agent/assignments/{assignment.GetProperty("id").GetGuid()}/ack",
            new { status = "failed", detail = "image pull failed" });

        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        Assert.Equal("failed", await f.StatusAsync(lease.LeaseId));
        var ended = await f.EventAsync<LeaseEnded>(e => e.LeaseId == lease.LeaseId);
        Assert.Equal(("failed", "provider"), (ended.Status, ended.Cause));
        Assert.Contains("image pull failed", ended.Reason, StringComparison.Ordinal);
        Assert.DoesNotContain(f.EventsOf<LeaseStarted>(), e => e.LeaseId == lease.LeaseId);
        Assert.True(ended.NeverRan);
    }

    [Fact]
    public async Task Only_a_node_scoped_key_of_the_nodes_owner_reads_or_acknowledges_its_assignments()
    {
        var provider = Guid.NewGuid();
        var cluster = Guid.NewGuid();
        var node = await f.RegisterNodeAsync(provider, 1, cluster: cluster);
        var (lease, _) = await ProvisioningLeaseAsync(provider, cluster, node);
        var assignment = Assert.Single(await AssignmentsAsync(Agent(node)));

        await AssertProblemAsync(await f.Factory.ClientFor(provider, "provider").GetAsync("/v1/agent/assignments"), HttpStatusCode.Forbidden, "forbidden");
        var stranger = f.Factory.ClientFor(Guid.NewGuid(), "provider");
        stranger.DefaultRequestHeaders.Add(Caller.NodeHeader, node.NodeId.ToString());
        await AssertProblemAsync(await stranger.GetAsync("/v1/agent/assignments"), HttpStatusCode.NotFound, "not-found");
        await AssertProblemAsync(await AckAsync(stranger, assignment, "running"), HttpStatusCode.NotFound, "not-found");
        await AssertProblemAsync(await AckAsync(Agent(node), assignment, "stopped"), HttpStatusCode.BadRequest, "validation");
        await AssertProblemAsync(await Agent(node).PostAsJsonAsync("/v1/agent/assignments/x/ack", new { status = "running" }),
            HttpStatusCode.BadRequest, "validation");

        Assert.Equal("provisioning", await f.StatusAsync(lease.LeaseId));
        Assert.Equal(0, await f.ScalarAsync<long>("SELECT count(*) FROM scheduling.assignments WHERE lease_id = @LeaseId AND acked_at IS NOT NULL", lease));
    }

    private static async Task AssertProblemAsync(HttpResponseMessage response, HttpStatusCode status, string typeSuffix)
    {
        Assert.Equal(status, response.StatusCode);
        Assert.Equal("application/problem+json", response.Content.Headers.ContentType?.MediaType);
        var problem = await response.Content.ReadFromJsonAsync<JsonElement>();
        Assert.EndsWith("/problems/" + typeSuffix, problem.GetProperty("type").GetString(), StringComparison.Ordinal);
    }
}
