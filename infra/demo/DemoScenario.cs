using System.Globalization;
using System.Text.Json.Nodes;
using Marketplace.AgentSim;
using Marketplace.FinanceCli;
using Spectre.Console;

namespace Marketplace.Demo;

/// <summary>What the demo did, for the summary and for the end-to-end test that runs the same scenario.</summary>
public sealed record DemoResult(
    string ProviderOrgId, string RenterOrgId, string ClusterId, string OfferId, string OrderId, string LeaseId,
    string LeaseStatus, JsonNode Invoice, JsonNode Statement, JsonNode TrialBalance, JsonNode UnfilledOrder,
    long WalletAvailableAfter, string? TraceId)
{
    public JsonNode? Lease { get; init; }
    public long SlaCredits { get; init; }
    public JsonNode? Prices { get; init; }
    public JsonNode? Fleet { get; init; }

    /// <summary>The 16-GPU gang lease (2 × 8 in one fabric), as it ended.</summary>
    public JsonNode? GangLease { get; init; }

    /// <summary>The interruptible lease an on-demand order displaced, as it ended, and the displacing lease.</summary>
    public JsonNode? PreemptedLease { get; init; }
    public JsonNode? DisplacingLease { get; init; }

    /// <summary>Every lease the demo ran.</summary>
    public int LeaseCount { get; init; }
}

/// <summary>
/// The thin path through the whole market, through the gateway only: organisations and keys, a provider's cluster,
/// nodes and offer, a renter's funded wallet and on-demand order, the lease placed on concrete GPUs, run and
/// completed, a 16-GPU gang on two whole nodes of one fabric, an interruptible lease displaced by an on-demand order
/// (notice first, then preempted), a node failure replaced mid-lease, then finance's billing run with the invoice,
/// the provider's statement and a balanced ledger.
/// </summary>
public sealed class DemoScenario(Uri gateway, string adminKey, TextWriter output)
{
    public const string Model = "h100-sxm";
    public const string AscendModel = "ascend-910b";
    public const string Currency = "CNY";

    public async Task<DemoResult> RunAsync(int leaseSeconds, CancellationToken ct)
    {
        var run = DateTime.UtcNow.ToString("HHmmss", CultureInfo.InvariantCulture);
        // A region of this run's own (group "cn"): every order pins it, so offers left in a long-lived database by earlier
        // runs or load tests never take the demo's orders.
        var region = $"cn-east-{run}";
        using var admin = new Api(gateway, adminKey);

        Step("Organisations and API keys (keys are shown once)");
        var (provider, providerOrg, providerKey) = await CreateOrgAsync(admin, $"Lotus Compute {run}", "provider", ct);
        var (renter, renterOrg, _) = await CreateOrgAsync(admin, $"Orbit AI {run}", "renter", ct);
        var (finance, _, financeKey) = await CreateOrgAsync(admin, $"Marketplace Finance {run}", "finance", ct);
        using var _p = provider; using var _r = renter; using var _f = finance;

        Step("Provider registers a mixed fleet through its node agents");
        var catalog = await provider.GetAsync("/v1/accelerators", ct);
        Say($"catalog: {catalog["data"]!.AsArray().Count} accelerator models, e.g. {string.Join(", ", catalog["data"]!.AsArray().Take(5).Select(a => a!["id"]))}");
        using var agents = new AgentSimulator(new AgentSimOptions
        {
            Gateway = gateway, ProviderKey = providerKey, ClusterName = "shanghai-a", Region = region, Jurisdiction = "CN",
            Fabric = "infiniband", FabricGbps = 400, Compliance = [("data-residency", null), ("mlps", 3)],
            // Four H100 nodes: 8 GPUs for the on-demand lease, 16 for the gang (two whole nodes), one spare for the failure.
            Fleet = [new FleetEntry(Model, 4), new FleetEntry(AscendModel, 2)], HeartbeatInterval = TimeSpan.FromSeconds(2),
        });
        var fleet = await agents.RegisterAsync(ct);
        using var agentsStop = CancellationTokenSource.CreateLinkedTokenSource(ct);
        var heartbeats = agents.RunAsync(agentsStop.Token);
        var clusterId = agents.ClusterIds[0].ToString();
        var cluster = await provider.WaitForAsync($"/v1/clusters/{clusterId}",
            c => c["nodes"]!.AsArray().All(n => (string?)n!["health"] == "healthy"), TimeSpan.FromSeconds(30), "every node's first heartbeat", ct);
        foreach (var node in cluster["nodes"]!.AsArray())
            Say($"node {node!["hostname"]}: {node["accelerator_count"]} × {node["accelerator_model"]}, {node["health"]}, verified = {node["verified"]}");
        Say($"cluster {clusterId}: {region} (CN), InfiniBand 400 Gb/s, data residency + MLPS level 3; agents heartbeat every 2 s");

        var now = DateTimeOffset.UtcNow;
        var h100Nodes = fleet.Where(n => n.Model == Model).Select(n => n.NodeId).ToList();
        var offer = await provider.PostAsync("/v1/offers", new
        {
            cluster_id = clusterId, node_ids = h100Nodes, window_start = now.AddMinutes(-1), window_end = now.AddHours(6),
            ask_per_hour = new { amount = 1500, currency = Currency }, min_lease_seconds = leaseSeconds,
            interruptible_allowed = false, sla_level = "standard",
        }, Guid.NewGuid().ToString(), ct); // a key, so a cut-off request can be resent safely
        var offerId = (string)offer["id"]!;
        Say($"offer {offerId}: {offer["accelerator_count"]} × {Model} for 6 h at {Price(offer["ask_per_hour"]!)}/GPU-hour, SLA standard");
        var ascendOffer = await provider.PostAsync("/v1/offers", new
        {
            cluster_id = clusterId, node_ids = fleet.Where(n => n.Model == AscendModel).Select(n => n.NodeId), window_start = now.AddMinutes(-1),
            window_end = now.AddHours(6), ask_per_hour = new { amount = 900, currency = Currency }, min_lease_seconds = leaseSeconds,
            interruptible_allowed = true, interruptible_floor_per_hour = new { amount = 500, currency = Currency }, preemption_notice_seconds = 20,
        }, Guid.NewGuid().ToString(), ct);
        Say($"offer {ascendOffer["id"]}: {ascendOffer["accelerator_count"]} × {AscendModel} at {Price(ascendOffer["ask_per_hour"]!)}/GPU-hour, interruptible from 5.00 CNY with 20 s notice");

        Step("Provider connects its Stripe payout account (Stripe Connect onboarding)");
        var payoutAccount = await provider.PostAsync("/v1/payout-accounts", new { country = "CN", email = "payouts@lotus.example" }, Guid.NewGuid().ToString(), ct);
        using (var browser = new HttpClient(new HttpClientHandler { AllowAutoRedirect = false }))
            (await browser.GetAsync((string)payoutAccount["onboarding"]!["url"]!, ct)).Dispose(); // stands for completing Stripe's onboarding form
        var payoutsEnabled = await provider.WaitForAsync($"/v1/payout-accounts/{payoutAccount["id"]}", a => (bool?)a["payouts_enabled"] == true,
            TimeSpan.FromSeconds(30), "Stripe's account.updated webhook to enable payouts", ct);
        Say($"payout account {payoutsEnabled["stripe_account_id"]}: {payoutsEnabled["status"]} (signed account.updated webhook from Stripe)");

        Step("Renter searches and funds its wallet through Stripe");
        var found = await renter.GetAsync($"/v1/offers?accelerator_model={Model}&region={region}&per_node=8&fabric=infiniband&jurisdiction=CN&compliance=data-residency&currency={Currency}&max_price=1600&sort=price", ct);
        Say($"search {Model}, 8 per node, InfiniBand, CN, data residency, ≤ 16.00 CNY/h: {found["data"]!.AsArray().Count} offer(s), best {Price(found["data"]![0]!["ask_per_hour"]!)}");
        var topUp = await renter.PostAsync("/v1/wallet/top-ups", new { amount = new { amount = 500_000, currency = Currency } }, Guid.NewGuid().ToString(), ct);
        Say($"top-up {topUp["id"]}: PaymentIntent {topUp["payment_intent_id"]} {topUp["status"]}");
        var wallet = await renter.WaitForAsync("/v1/wallet", w => Available(w) >= 500_000, TimeSpan.FromSeconds(30), "the payment_intent.succeeded webhook to credit the wallet", ct);
        Say($"wallet: {Minor(Available(wallet))} available after the signed webhook");

        Step("Renter orders: on demand, a 16-GPU gang, reserved and interruptible");
        // First an order whose max price is below every ask: it stays in the book and says why, and what would work.
        var low = await renter.PostAsync("/v1/orders", new
        {
            type = "on_demand", accelerator_model = Model, accelerator_count = 8, duration_seconds = leaseSeconds,
            max_price_per_hour = new { amount = 1200, currency = Currency }, region,
        }, Guid.NewGuid().ToString(), ct);
        var unfilled = await renter.GetAsync($"/v1/orders/{low["id"]}", ct);
        Say($"order {low["id"]} at max {Price(low["max_price_per_hour"]!)}: {unfilled["status"]} — {unfilled["status_reason"]}");
        foreach (var alternative in unfilled["alternatives"]?.AsArray().Take(2) ?? [])
            Say($"   alternative: {alternative}");
        await renter.DeleteAsync($"/v1/orders/{low["id"]}", ct);

        var idempotencyKey = Guid.NewGuid().ToString();
        var orderRequest = new
        {
            type = "on_demand", accelerator_model = Model, accelerator_count = 8, duration_seconds = leaseSeconds,
            max_price_per_hour = new { amount = 1800, currency = Currency }, region,
        };
        var order = await renter.PostAsync("/v1/orders", orderRequest, idempotencyKey, ct);
        var retried = await renter.PostAsync("/v1/orders", orderRequest, idempotencyKey, ct);
        var orderId = (string)order["id"]!;
        Say($"on-demand order {orderId}: 8 × {Model} for {leaseSeconds} s at max {Price(order["max_price_per_hour"]!)} " +
            $"(retried with the same Idempotency-Key → same order: {(string)retried["id"]! == orderId})");
        var gang = await renter.PostAsync("/v1/orders", new
        {
            type = "on_demand", accelerator_model = Model, accelerator_count = 16, duration_seconds = leaseSeconds,
            max_price_per_hour = new { amount = 1800, currency = Currency }, region,
        }, Guid.NewGuid().ToString(), ct);
        Say($"gang order {gang["id"]}: 16 × {Model} as one job (more than one node holds) for {leaseSeconds} s");
        var reserved = await renter.PostAsync("/v1/orders", new
        {
            type = "reserved", accelerator_model = AscendModel, accelerator_count = 8, duration_seconds = leaseSeconds,
            earliest_start = DateTimeOffset.UtcNow.AddSeconds(15), latest_end = DateTimeOffset.UtcNow.AddMinutes(10),
            max_price_per_hour = new { amount = 1000, currency = Currency }, region,
        }, Guid.NewGuid().ToString(), ct);
        var interruptible = await renter.PostAsync("/v1/orders", new
        {
            type = "interruptible", accelerator_model = AscendModel, accelerator_count = 8, duration_seconds = leaseSeconds,
            bid_per_hour = new { amount = 700, currency = Currency }, region,
        }, Guid.NewGuid().ToString(), ct);

        var filled = await WaitFilledAsync(renter, orderId, ct);
        Say($"on demand: matched at {Price(filled["match"]!["price_per_hour"]!)} with offer {filled["match"]!["offer_id"]}");
        var gangFilled = await WaitFilledAsync(renter, (string)gang["id"]!, ct);
        Say($"gang:      matched at {Price(gangFilled["match"]!["price_per_hour"]!)} with offer {gangFilled["match"]!["offer_id"]}");
        var reservedFilled = await WaitFilledAsync(renter, (string)reserved["id"]!, ct);
        Say($"reserved:  8 × {AscendModel} from {reservedFilled["match"]!["start"]} at {Price(reservedFilled["match"]!["price_per_hour"]!)}");
        var interruptibleFilled = await WaitFilledAsync(renter, (string)interruptible["id"]!, ct);
        Say($"interruptible: bid {Price(interruptible["max_price_per_hour"] ?? interruptible["bid_per_hour"]!)}, trades at {Price(interruptibleFilled["match"]!["price_per_hour"]!)} (never below the provider's floor)");
        var prices = await renter.GetAsync($"/v1/market/{Model}/prices?currency={Currency}", ct);
        Say($"price index {Model}: last trade {Price(prices["last_trade"]?["price_per_hour"])}, best ask {Price(prices["best_ask"])}, " +
            $"best bid {Price(prices["best_bid"])}, 1 h VWAP {Price(prices["vwap_1h"])}");

        Step("Scheduling places and runs the leases");
        var leaseId = (string)filled["lease_id"]!;
        var lease = await renter.WaitForAsync($"/v1/leases/{leaseId}", l => (string?)l["status"] is "active" or "completed" or "cancelled" or "failed",
            TimeSpan.FromSeconds(30), "the lease to start", ct);
        var firstNode = (string)lease["slots"]![0]!["node_id"]!;
        Say($"lease {leaseId}: {lease["status"]} since {lease["started_at"]}, {lease["slots"]!.AsArray().Count} GPU slots on node {firstNode}");
        var held = await renter.GetAsync("/v1/wallet", ct);
        Say($"wallet: {Minor(Available(held))} available, {Minor(Held(held))} held for the leases' maximum cost");
        var providerView = await provider.GetAsync($"/v1/leases/{leaseId}", ct);
        Say($"the provider sees the same lease on its nodes: {providerView["status"]}");

        var gangLeaseId = (string)gangFilled["lease_id"]!;
        var gangLease = await renter.WaitForAsync($"/v1/leases/{gangLeaseId}", l => (string?)l["status"] is "active" or "completed" or "cancelled" or "failed",
            TimeSpan.FromSeconds(30), "the gang lease to start", ct);
        var nodesById = cluster["nodes"]!.AsArray().ToDictionary(n => (string)n!["id"]!, n => n!);
        var gangNodes = gangLease["slots"]!.AsArray().GroupBy(s => (string)s!["node_id"]!).ToList();
        Say($"gang lease {gangLeaseId}: {gangLease["status"]}, {gangLease["slots"]!.AsArray().Count} GPUs as {gangNodes.Count} × " +
            $"{string.Join(" + ", gangNodes.Select(g => g.Count()).Distinct())} on whole nodes " +
            $"{string.Join(" and ", gangNodes.Select(g => nodesById.TryGetValue(g.Key, out var n) ? (string)n["hostname"]! : g.Key))}");
        Say($"   one NVLink domain ({string.Join(", ", gangNodes.Select(g => nodesById.TryGetValue(g.Key, out var n) ? (string?)n["nvlink_domain"] : null).Distinct())}) " +
            "in one InfiniBand fabric: a gang never spans two fabrics");

        Step("An on-demand order displaces the interruptible lease: notice first, then preemption");
        var interruptibleLeaseId = (string)interruptibleFilled["lease_id"]!;
        var displacing = await renter.PostAsync("/v1/orders", new
        {
            type = "on_demand", accelerator_model = AscendModel, accelerator_count = 8, duration_seconds = leaseSeconds,
            max_price_per_hour = new { amount = 1000, currency = Currency }, region,
        }, Guid.NewGuid().ToString(), ct);
        Say($"on-demand order {displacing["id"]}: 8 × {AscendModel} now; every {AscendModel} is taken (reserved + interruptible), " +
            "so it displaces the lowest interruptible bid");
        var noticed = await renter.WaitForAsync($"/v1/leases/{interruptibleLeaseId}", l => l["preempt_at"] is not null || (string?)l["status"] is "completed" or "cancelled" or "failed" or "preempted",
            TimeSpan.FromSeconds(30), "the interruptible lease's preemption notice", ct);
        var displacedOrder = await renter.GetAsync($"/v1/orders/{interruptible["id"]}", ct);
        Say($"notice: interruptible lease {interruptibleLeaseId} ({noticed["status"]}) is given notice (PreemptionNoticeGiven): " +
            $"it keeps running until {noticed["preempt_at"]}, then ends");
        Say($"   its order says: {displacedOrder["status_reason"]}");
        if ((string?)displacedOrder["requeued_as"] is { } requeued)
        {
            // Left in the book, it would be filled as soon as an accelerator comes back (when the reserved lease ends) and
            // run past the billing period the demo closes.
            var cancelled = await renter.DeleteAsync($"/v1/orders/{requeued}", ct);
            Say($"   the renter no longer needs it and cancels the requeued order {requeued}: {cancelled["status"]}");
        }
        var displacingFilled = await WaitFilledAsync(renter, (string)displacing["id"]!, ct);
        var displacingLeaseId = (string)displacingFilled["lease_id"]!;
        var displacingLease = await renter.GetAsync($"/v1/leases/{displacingLeaseId}", ct);
        Say($"the on-demand order is filled: lease {displacingLeaseId} {displacingLease["status"]} from {displacingLease["start"]} " +
            $"on the same {displacingLease["slots"]!.AsArray().Count} {AscendModel} slots");

        Step("A node fails mid-lease: the lease moves to a spare node and the downtime is recorded");
        await Task.Delay(TimeSpan.FromSeconds(2), ct); // the lease has run a few seconds (the preemption step took the rest)
        agents.SilenceNode(Guid.Parse(firstNode));
        Say($"node {firstNode}: power lost, its agent falls silent; Listings notices when the heartbeat timeout passes");
        lease = await renter.WaitForAsync($"/v1/leases/{leaseId}", l => l["downtime"]?.AsArray().Count > 0 && (string?)l["status"] != "scheduled",
            TimeSpan.FromSeconds(30), "the lease to be moved off the failed node", ct);
        var downtime = lease["downtime"]![0]!;
        Say($"lease {leaseId}: {lease["status"]} on node {lease["slots"]![0]!["node_id"]} — downtime {downtime["start"]} → {downtime["end"]} ({downtime["reason"]}, cause {downtime["cause"]})");

        Step("The notice runs out: the interruptible lease ends as preempted, cause market");
        var preempted = await renter.WaitForAsync($"/v1/leases/{interruptibleLeaseId}", l => (string?)l["status"] is "completed" or "cancelled" or "failed" or "preempted",
            TimeSpan.FromSeconds(60), "the interruptible lease to be preempted", ct);
        Say($"lease {interruptibleLeaseId}: {preempted["status"]} at {preempted["ended_at"]}, cause {preempted["cause"]} ({preempted["status_reason"]})");
        Say($"lease {displacingLeaseId} took over its slots at {displacingLease["start"]}");

        Step("Every lease reaches its end");
        var leaseIds = new[] { leaseId, gangLeaseId, (string)reservedFilled["lease_id"]!, interruptibleLeaseId, displacingLeaseId };
        var endedLeases = new Dictionary<string, JsonNode>();
        foreach (var id in leaseIds)
        {
            var ended = await renter.WaitForAsync($"/v1/leases/{id}", l => (string?)l["status"] is "completed" or "cancelled" or "failed" or "preempted",
                TimeSpan.FromSeconds(leaseSeconds + 90), $"lease {id} to reach its end", ct);
            Say($"lease {id} ({ended["accelerator_count"]} × {ended["accelerator_model"]}): {ended["status"]} at {ended["ended_at"]} ({ended["status_reason"]})");
            endedLeases[id] = ended;
        }
        lease = endedLeases[leaseId];
        await agentsStop.CancelAsync();
        await heartbeats;

        Step("Finance closes the billing period with the finance CLI");
        var period = DateTime.UtcNow.ToString("yyyy-MM-dd", CultureInfo.InvariantCulture);
        // Billing meters from the lease events, which reach it within milliseconds of the lease's end;
        // finance normally runs a period after it closed, the demo runs it right away.
        await Task.Delay(TimeSpan.FromSeconds(2), ct);
        using var financeClient = new FinanceClient(gateway.ToString(), financeKey);
        var console = AnsiConsole.Create(new AnsiConsoleSettings { Out = new AnsiConsoleOutput(output), Interactive = InteractionSupport.No, Ansi = AnsiSupport.No });
        console.Profile.Width = 140; // ids and account names fit on one line even when the output is not a terminal
        var summary = await new FinanceConsole(financeClient, console).RunAsync(period, ct);
        var again = await finance.PostAsync($"/v1/billing/periods/{period}/runs", new { }, null, ct);
        var invoice = (await renter.GetAsync("/v1/invoices", ct))["data"]!.AsArray().First()!;
        var statement = (await provider.GetAsync("/v1/statements", ct))["data"]!.AsArray().First()!;
        Say($"SLA credits paid automatically for the downtime: {Minor(summary.SlaCredits)}");
        Say($"running the period again changed nothing: {SameIds(summary.Run, again)}");
        var trial = await finance.GetAsync("/v1/ledger/trial-balance", ct);
        Say($"ledger: {trial["accounts"]!.AsArray().Count} accounts, balanced = {trial["balanced"]}");
        var walletAfter = await renter.GetAsync("/v1/wallet", ct);
        Say($"renter wallet after the run: {Minor(Available(walletAfter))} available, {Minor(Held(walletAfter))} held");

        return new DemoResult(providerOrg, renterOrg, clusterId, offerId, orderId, leaseId, (string)lease["status"]!,
            invoice, statement, trial, unfilled, Available(walletAfter), null)
        {
            Lease = lease, SlaCredits = summary.SlaCredits, Prices = prices, Fleet = cluster, GangLease = endedLeases[gangLeaseId],
            PreemptedLease = endedLeases[interruptibleLeaseId], DisplacingLease = endedLeases[displacingLeaseId], LeaseCount = leaseIds.Length,
        };
    }

    private static async Task<JsonNode> WaitFilledAsync(Api renter, string orderId, CancellationToken ct)
    {
        var order = await renter.WaitForAsync($"/v1/orders/{orderId}", o => (string?)o["status"] is "filled" or "cancelled",
            TimeSpan.FromSeconds(30), $"order {orderId} to be matched and placed", ct);
        return (string?)order["status"] == "filled" ? order : throw new InvalidOperationException($"order not filled: {order.ToJsonString()}");
    }

    private async Task<(Api Api, string OrgId, string Key)> CreateOrgAsync(Api admin, string name, string role, CancellationToken ct)
    {
        var org = await admin.PostAsync("/v1/orgs", new { name, roles = new[] { role } }, null, ct);
        var key = await admin.PostAsync($"/v1/orgs/{org["id"]}/api-keys", new { name = "demo" }, null, ct);
        var secret = (string)key["key"]!;
        Say($"{role,-8} {name} ({org["id"]}), key {secret[..Math.Min(12, secret.Length)]}…");
        return (new Api(gateway, secret), (string)org["id"]!, secret);
    }

    private static bool SameIds(JsonNode a, JsonNode b) =>
        string.Join(",", a["invoices"]!.AsArray().Select(i => (string?)i!["id"])) == string.Join(",", b["invoices"]!.AsArray().Select(i => (string?)i!["id"]));

    private static long Available(JsonNode wallet) => Balance(wallet, "available");
    private static long Held(JsonNode wallet) => Balance(wallet, "held");
    private static long Balance(JsonNode wallet, string field) =>
        wallet["balances"]!.AsArray().Where(b => (string?)b!["currency"] == Currency).Select(b => (long)b![field]!["amount"]!).FirstOrDefault();
    private static long Total(JsonNode invoice) => (long)invoice["total"]!["amount"]!;

    private static string Minor(long amount) => (amount / 100m).ToString("0.00", CultureInfo.InvariantCulture) + " " + Currency;
    private static string Price(JsonNode? money) => money is null ? "—" :
        ((long)money["amount"]! / 100m).ToString("0.00", CultureInfo.InvariantCulture) + " " + (string)money["currency"]!;

    private void Step(string title) => output.WriteLine($"\n== {title}");
    private void Say(string line) => output.WriteLine("   " + line);
}
