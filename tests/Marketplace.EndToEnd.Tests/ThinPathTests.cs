using Xunit;
using System.Text.Json.Nodes;
using Dapper;
using Marketplace.Demo;
using Xunit.Abstractions;

namespace Marketplace.EndToEnd.Tests;

[Collection(StackCollection.Name)]
public sealed class ThinPathTests(StackFixture fixture, ITestOutputHelper log)
{
    [Fact]
    public async Task A_renter_order_is_matched_placed_run_invoiced_and_paid_out_through_the_gateway()
    {
        var output = new StringWriter();
        DemoResult result;
        try
        {
            result = await new DemoScenario(fixture.Stack.GatewayUrl, Testing.MarketplaceStack.AdminKey, output)
                .RunAsync(StackFixture.LeaseSeconds, CancellationToken.None);
        }
        finally
        {
            log.WriteLine(output.ToString()); // what the demo printed, as infra/up.sh shows it
        }

        Assert.Equal("completed", result.LeaseStatus);
        Assert.Equal("open", (string?)result.UnfilledOrder["status"]);
        Assert.Contains("15.00", (string?)result.UnfilledOrder["status_reason"] ?? "");

        // Every node of the mixed fleet heartbeated and matched its declared inventory.
        var nodes = result.Fleet!["nodes"]!.AsArray();
        Assert.Contains(nodes, n => (string?)n!["accelerator_model"] == "h100-sxm");
        Assert.Contains(nodes, n => (string?)n!["accelerator_model"] == "ascend-910b");
        Assert.All(nodes, n => Assert.Equal(true, (bool?)n!["verified"]));

        // The node failure was recorded as downtime, the lease finished on another node, and the renter was credited.
        var downtime = result.Lease!["downtime"]!.AsArray();
        Assert.NotEmpty(downtime);
        Assert.Equal("provider", (string?)downtime[0]!["cause"]);
        Assert.True(result.SlaCredits > 0, "an SLA credit for the downtime");

        // The 16-GPU gang ran on two whole nodes (8 + 8) of one NVLink domain and fabric.
        Assert.Equal("completed", (string?)result.GangLease!["status"]);
        var gangNodes = result.GangLease["slots"]!.AsArray().GroupBy(s => (string)s!["node_id"]!).ToList();
        Assert.Equal([8, 8], gangNodes.Select(g => g.Count()));
        var domains = nodes.Where(n => gangNodes.Any(g => g.Key == (string?)n!["id"])).Select(n => (string?)n!["nvlink_domain"]).Distinct();
        Assert.Single(domains);

        // The interruptible lease got notice, then ended as preempted (cause market) exactly when the notice ran out,
        // and the displacing on-demand lease ran on its slots from that moment.
        var preempted = result.PreemptedLease!;
        var displacing = result.DisplacingLease!;
        Assert.Equal(("preempted", "market"), ((string?)preempted["status"], (string?)preempted["cause"]));
        Assert.Equal((DateTimeOffset)preempted["preempt_at"]!, (DateTimeOffset)preempted["ended_at"]!);
        Assert.Equal((DateTimeOffset)preempted["ended_at"]!, (DateTimeOffset)displacing["start"]!);
        Assert.Contains("displaced by a higher-priority on_demand order", (string?)preempted["status_reason"] ?? "");
        Assert.Equal(SlotIds(preempted), SlotIds(displacing));
        Assert.Equal("completed", (string?)displacing["status"]);

        // Invoice, statement and wallet agree to the minor unit, and the ledger balances.
        var total = (long)result.Invoice["total"]!["amount"]!;
        var lines = result.Invoice["lines"]!.AsArray();
        Assert.Equal(result.LeaseCount, lines.Count);
        Assert.All(lines, l => Assert.True((long)l!["amount"]!["amount"]! > 0));
        var gross = (long)result.Statement["gross"]!["amount"]!;
        var fee = (long)result.Statement["platform_fee"]!["amount"]!;
        var credits = (long)result.Statement["sla_credits"]!["amount"]!;
        var net = (long)result.Statement["net"]!["amount"]!;
        Assert.Equal(gross - fee - credits, net);
        Assert.Equal(credits, result.SlaCredits);
        // The provider onboarded its Stripe Connect account in the demo, so its net went out as a transfer.
        Assert.Equal("paid", (string?)result.Statement["payout"]?["status"]);
        Assert.StartsWith("tr_", (string?)result.Statement["payout"]?["transfer_id"] ?? "");
        Assert.Equal(true, (bool?)result.TrialBalance["balanced"]);
        Assert.Equal(500_000 - total, result.WalletAvailableAfter);

        // No GPU slot is booked twice, and every outbox was drained.
        using var db = fixture.Stack.Database.OpenAdmin();
        Assert.Equal(0, await db.ExecuteScalarAsync<long>("""
            SELECT count(*) FROM scheduling.bookings a JOIN scheduling.bookings b
              ON a.slot_id = b.slot_id AND a.ctid <> b.ctid AND a.during && b.during
            """));
        foreach (var schema in new[] { "listings", "bidding", "scheduling", "billing" })
            await Testing.Eventually.True(async () => await db.ExecuteScalarAsync<long>($"SELECT count(*) FROM {schema}.outbox") == 0,
                what: $"{schema}'s outbox to drain");
    }

    [Fact]
    public async Task One_request_is_traced_across_services_through_the_bus()
    {
        using var admin = fixture.Stack.Client(Testing.MarketplaceStack.AdminKey);
        var org = await PostJson(admin, "/v1/orgs", new { name = "trace provider", roles = new[] { "provider" } });
        var key = await PostJson(admin, $"/v1/orgs/{org["id"]}/api-keys", new { name = "t" });
        using var provider = fixture.Stack.Client((string)key["key"]!);
        var cluster = await PostJson(provider, "/v1/clusters", new { name = "trace", region = "cn-north", jurisdiction = "CN" });

        using var response = await provider.PostAsync($"/v1/clusters/{cluster["id"]}/nodes",
            System.Net.Http.Json.JsonContent.Create(new { hostname = "trace-01", accelerator_model = "ascend-910b", accelerator_count = 8 }));
        response.EnsureSuccessStatusCode();
        var traceId = response.Headers.GetValues("X-Trace-Id").Single();

        // The gateway forwarded the request to Listings, which wrote NodeRegistered to its outbox; the relay published
        // it later, and Scheduling consumed it: all in the trace the gateway started.
        await Testing.Eventually.True(() => Task.FromResult(ConsumedInTrace(fixture.Stack.ReadLog("Scheduling"), traceId)),
            what: $"Scheduling to consume NodeRegistered in trace {traceId}");
    }

    private static IEnumerable<string> SlotIds(JsonNode lease) =>
        lease["slots"]!.AsArray().Select(s => (string)s!["slot_id"]!).Order();

    private static bool ConsumedInTrace(string log, string traceId) =>
        log.Split('\n').Any(line => line.Contains(traceId) && line.Contains("Consumed NodeRegistered"));

    internal static async Task<JsonNode> PostJson(HttpClient client, string path, object body)
    {
        using var response = await client.PostAsync(path, System.Net.Http.Json.JsonContent.Create(body));
        var text = await response.Content.ReadAsStringAsync();
        Assert.True(response.IsSuccessStatusCode, $"POST {path} → {(int)response.StatusCode}: {text}");
        return JsonNode.Parse(text)!;
    }
}
