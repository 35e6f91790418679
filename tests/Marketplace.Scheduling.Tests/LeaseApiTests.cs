using System.Net;
using System.Net.Http.Json;
using System.Text.Json;
using Marketplace.Contracts;

namespace Marketplace.Scheduling.Tests;

public sealed class LeaseApiTests(SchedulingFixture f) : IClassFixture<SchedulingFixture>
{
    private async Task<(LeaseScheduled Lease, OrderMatched Match, NodeRegistered Node)> LeaseAsync(
        Guid? renter = null, Guid? provider = null, TimeSpan? startsIn = null)
    {
        var p = provider ?? Guid.NewGuid();
        var node = await f.RegisterNodeAsync(p, slots: 2);
        var start = f.Clock.GetUtcNow() + (startsIn ?? TimeSpan.FromHours(1));
        var match = f.Match(renter ?? Guid.NewGuid(), p, [node.NodeId], 2, start, start.AddHours(1));
        return (await f.ScheduleAsync(match), match, node);
    }

    private static async Task<JsonElement> JsonAsync(HttpResponseMessage response) =>
        await response.Content.ReadFromJsonAsync<JsonElement>();

    private static async Task AssertProblemAsync(HttpResponseMessage response, HttpStatusCode status, string typeSuffix)
    {
        Assert.Equal(status, response.StatusCode);
        Assert.Equal("application/problem+json", response.Content.Headers.ContentType?.MediaType);
        var problem = await JsonAsync(response);
        Assert.EndsWith("/problems/" + typeSuffix, problem.GetProperty("type").GetString(), StringComparison.Ordinal);
        Assert.False(string.IsNullOrWhiteSpace(problem.GetProperty("detail").GetString()));
    }

    [Fact]
    public async Task The_renter_and_the_provider_see_the_lease_with_its_slots()
    {
        var (lease, match, node) = await LeaseAsync();

        foreach (var client in new[] { f.Factory.ClientFor(match.RenterOrgId, "renter"), f.Factory.ClientFor(match.ProviderOrgId, "provider") })
        {
            var response = await client.GetAsync($"/v1/leases/{lease.LeaseId}");
            Assert.Equal(HttpStatusCode.OK, response.StatusCode);
            var json = await JsonAsync(response);
            Assert.Equal(lease.LeaseId, json.GetProperty("id").GetGuid());
            Assert.Equal(match.OrderId, json.GetProperty("order_id").GetGuid());
            Assert.Equal(match.RenterOrgId, json.GetProperty("renter_org_id").GetGuid());
            Assert.Equal(match.ProviderOrgId, json.GetProperty("provider_org_id").GetGuid());
            Assert.Equal("scheduled", json.GetProperty("status").GetString());
            Assert.Equal(JsonValueKind.Null, json.GetProperty("cause").ValueKind);
            Assert.Equal("h100-sxm", json.GetProperty("accelerator_model").GetString());
            Assert.Equal(2, json.GetProperty("accelerator_count").GetInt32());
            Assert.Equal(match.Start, json.GetProperty("start").GetDateTimeOffset());
            Assert.Equal(match.End, json.GetProperty("end").GetDateTimeOffset());
            Assert.Equal(JsonValueKind.Null, json.GetProperty("started_at").ValueKind);
            Assert.Equal(235, json.GetProperty("price_per_hour").GetProperty("amount").GetInt64());
            Assert.Equal("CNY", json.GetProperty("price_per_hour").GetProperty("currency").GetString());
            var slots = json.GetProperty("slots").EnumerateArray().ToList();
            Assert.Equal([0, 1], slots.Select(s => s.GetProperty("index").GetInt32()));
            Assert.All(slots, s => Assert.Equal(node.NodeId, s.GetProperty("node_id").GetGuid()));
            Assert.Equal(node.Slots.Select(s => s.SlotId), slots.Select(s => s.GetProperty("slot_id").GetGuid()));
        }
    }

    [Fact]
    public async Task Another_org_gets_404_for_a_lease_it_has_no_part_in()
    {
        var (lease, _, _) = await LeaseAsync();
        var stranger = Guid.NewGuid();

        await AssertProblemAsync(await f.Factory.ClientFor(stranger, "renter").GetAsync($"/v1/leases/{lease.LeaseId}"), HttpStatusCode.NotFound, "not-found");
        await AssertProblemAsync(await f.Factory.ClientFor(stranger, "provider").GetAsync($"/v1/leases/{lease.LeaseId}"), HttpStatusCode.NotFound, "not-found");
        var list = await JsonAsync(await f.Factory.ClientFor(stranger, "renter", "provider").GetAsync("/v1/leases"));
        Assert.Empty(list.GetProperty("data").EnumerateArray());
    }

    [Fact]
    public async Task A_provider_lists_only_the_leases_on_its_own_nodes_and_a_renter_only_its_own()
    {
        var provider = Guid.NewGuid();
        var renter = Guid.NewGuid();
        var mine = (await LeaseAsync(renter, provider)).Lease.LeaseId;
        var otherProvider = (await LeaseAsync(renter)).Lease.LeaseId;   // same renter, another provider's node
        var otherRenter = (await LeaseAsync(provider: provider)).Lease.LeaseId; // same provider, another renter

        var asProvider = await JsonAsync(await f.Factory.ClientFor(provider, "provider").GetAsync("/v1/leases"));
        var asRenter = await JsonAsync(await f.Factory.ClientFor(renter, "renter").GetAsync("/v1/leases"));

        Assert.Equal(new[] { mine, otherRenter }.Order(), asProvider.GetProperty("data").EnumerateArray().Select(l => l.GetProperty("id").GetGuid()).Order());
        Assert.Equal(new[] { mine, otherProvider }.Order(), asRenter.GetProperty("data").EnumerateArray().Select(l => l.GetProperty("id").GetGuid()).Order());
        await AssertProblemAsync(await f.Factory.ClientFor(provider, "provider").GetAsync($"/v1/leases/{otherProvider}"), HttpStatusCode.NotFound, "not-found");
    }

    [Fact]
    public async Task The_list_pages_through_the_renters_leases_with_a_cursor()
    {
        var renter = Guid.NewGuid();
        var leases = new List<Guid>();
        for (var i = 0; i < 3; i++) leases.Add((await LeaseAsync(renter)).Lease.LeaseId);
        await LeaseAsync(); // someone else's
        var client = f.Factory.ClientFor(renter, "renter");

        var seen = new List<Guid>();
        string? cursor = null;
        var pages = 0;
        do
        {
            var page = await JsonAsync(await client.GetAsync("/v1/leases?limit=2" + (cursor is null ? "" : "&cursor=" + cursor)));
            seen.AddRange(page.GetProperty("data").EnumerateArray().Select(l => l.GetProperty("id").GetGuid()));
            cursor = page.GetProperty("next_cursor").GetString();
            pages++;
        } while (cursor is not null && pages < 10);

        Assert.Equal(2, pages);
        Assert.Equal(leases.OrderBy(x => x), seen.OrderBy(x => x));
    }

    [Theory]
    [InlineData("/v1/leases/not-a-lease-id", "validation")]
    [InlineData("/v1/leases?cursor=garbage", "validation")]
    [InlineData("/v1/leases?limit=0", "validation")]
    [InlineData("/v1/leases?status=sleeping", "validation")]
    public async Task Bad_input_gets_a_problem(string path, string type)
    {
        await AssertProblemAsync(await f.Factory.ClientFor(Guid.NewGuid(), "renter").GetAsync(path), HttpStatusCode.BadRequest, type);
    }

    [Fact]
    public async Task The_renter_cancels_a_scheduled_lease_and_its_slots_are_free_again()
    {
        var (lease, match, node) = await LeaseAsync();

        var response = await f.Factory.ClientFor(match.RenterOrgId, "renter").PostAsync($"/v1/leases/{lease.LeaseId}/cancel", null);

        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        var json = await JsonAsync(response);
        Assert.Equal("cancelled", json.GetProperty("status").GetString());
        Assert.Equal("renter", json.GetProperty("cause").GetString());
        Assert.Equal("cancelled by the renter before it started", json.GetProperty("status_reason").GetString());
        var ended = await Eventually.Get(() => Task.FromResult(f.EventsOf<LeaseEnded>().FirstOrDefault(e => e.LeaseId == lease.LeaseId)), _ => true);
        Assert.Equal("cancelled", ended.Status);
        await f.ScheduleAsync(f.Match(Guid.NewGuid(), match.ProviderOrgId, [node.NodeId], 2, match.Start, match.End));

        // A second cancel is refused: the lease has ended.
        await AssertProblemAsync(await f.Factory.ClientFor(match.RenterOrgId, "renter").PostAsync($"/v1/leases/{lease.LeaseId}/cancel", null),
            HttpStatusCode.Conflict, "lease-ended");
    }

    [Fact]
    public async Task Cancelling_an_active_lease_ends_it_now_and_keeps_the_time_used()
    {
        var (lease, match, _) = await LeaseAsync(startsIn: TimeSpan.FromMinutes(-1)); // started a minute ago
        await f.AdvanceAndRunAsync(TimeSpan.Zero, async () => await f.StatusAsync(lease.LeaseId) == "active");
        f.Clock.Advance(TimeSpan.FromMinutes(5));

        var json = await JsonAsync(await f.Factory.ClientFor(match.RenterOrgId, "renter").PostAsync($"/v1/leases/{lease.LeaseId}/cancel", null));

        Assert.Equal("cancelled", json.GetProperty("status").GetString());
        Assert.Equal(f.Clock.GetUtcNow(), json.GetProperty("ended_at").GetDateTimeOffset());
        Assert.Equal(0, await f.ScalarAsync<long>(
            "SELECT count(*) FROM scheduling.bookings WHERE lease_id = @LeaseId AND upper(during) <> @now",
            new { lease.LeaseId, now = f.Clock.GetUtcNow() }));
    }

    [Fact]
    public async Task Only_the_renter_of_a_lease_can_cancel_it_and_a_refusal_changes_nothing()
    {
        var (lease, match, _) = await LeaseAsync();

        await AssertProblemAsync(await f.Factory.ClientFor(match.ProviderOrgId, "provider").PostAsync($"/v1/leases/{lease.LeaseId}/cancel", null),
            HttpStatusCode.Forbidden, "forbidden");
        await AssertProblemAsync(await f.Factory.ClientFor(Guid.NewGuid(), "renter").PostAsync($"/v1/leases/{lease.LeaseId}/cancel", null),
            HttpStatusCode.NotFound, "not-found");
        await AssertProblemAsync(await f.Factory.ClientFor(match.RenterOrgId, "renter").PostAsync("/v1/leases/42/cancel", null),
            HttpStatusCode.BadRequest, "validation");

        Assert.Equal("scheduled", await f.StatusAsync(lease.LeaseId));
        Assert.Equal(2, await f.ScalarAsync<long>(
            "SELECT count(*) FROM scheduling.due_work WHERE key = @key AND done_at IS NULL", new { key = lease.LeaseId.ToString() }));
    }
}
