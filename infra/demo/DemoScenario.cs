using System.Globalization;
using System.Text.Json.Nodes;

namespace Marketplace.Demo;

/// <summary>What the demo did, for the summary and for the end-to-end test that runs the same scenario.</summary>
public sealed record DemoResult(
    string ProviderOrgId, string RenterOrgId, string ClusterId, string OfferId, string OrderId, string LeaseId,
    string LeaseStatus, JsonNode Invoice, JsonNode Statement, JsonNode TrialBalance, JsonNode UnfilledOrder,
    long WalletAvailableAfter, string? TraceId);

/// <summary>
/// The thin path through the whole market, through the gateway only: organisations and keys, a provider's cluster,
/// nodes and offer, a renter's funded wallet and on-demand order, the lease placed on concrete GPUs, run and
/// completed, then finance's billing run with the invoice, the provider's statement and a balanced ledger.
/// </summary>
public sealed class DemoScenario(Uri gateway, string adminKey, TextWriter output)
{
    public const string Model = "h100-sxm";
    public const string Currency = "CNY";

    public async Task<DemoResult> RunAsync(int leaseSeconds, CancellationToken ct)
    {
        var run = DateTime.UtcNow.ToString("HHmmss", CultureInfo.InvariantCulture);
        using var admin = new Api(gateway, adminKey);

        Step("Organisations and API keys (keys are shown once)");
        var (provider, providerOrg) = await CreateOrgAsync(admin, $"Lotus Compute {run}", "provider", ct);
        var (renter, renterOrg) = await CreateOrgAsync(admin, $"Orbit AI {run}", "renter", ct);
        var (finance, _) = await CreateOrgAsync(admin, $"Marketplace Finance {run}", "finance", ct);
        using var _p = provider; using var _r = renter; using var _f = finance;

        Step("Provider lists capacity");
        var catalog = await provider.GetAsync("/v1/accelerators", ct);
        Say($"catalog: {catalog["data"]!.AsArray().Count} accelerator models, e.g. {string.Join(", ", catalog["data"]!.AsArray().Take(4).Select(a => a!["id"]))}");
        var cluster = await provider.PostAsync("/v1/clusters", new { name = "shanghai-a", region = "cn-east", jurisdiction = "CN" }, null, ct);
        var clusterId = (string)cluster["id"]!;
        var nodes = new List<string>();
        foreach (var host in new[] { "sh-a-gpu-01", "sh-a-gpu-02" })
        {
            var node = await provider.PostAsync($"/v1/clusters/{clusterId}/nodes",
                new { hostname = host, accelerator_model = Model, accelerator_count = 8 }, null, ct);
            nodes.Add((string)node["id"]!);
        }
        Say($"cluster {clusterId} (cn-east, CN) with {nodes.Count} nodes of 8 × {Model}");
        var now = DateTimeOffset.UtcNow;
        var offer = await provider.PostAsync("/v1/offers", new
        {
            cluster_id = clusterId,
            node_ids = nodes,
            window_start = now.AddMinutes(-1),
            window_end = now.AddHours(6),
            ask_per_hour = new { amount = 1500, currency = Currency },
            min_lease_seconds = leaseSeconds,
            interruptible_allowed = false,
        }, null, ct);
        var offerId = (string)offer["id"]!;
        Say($"offer {offerId}: {offer["accelerator_count"]} × {Model} for 6 h at {Price(offer["ask_per_hour"]!)}/GPU-hour");

        Step("Renter funds its wallet through Stripe");
        var topUp = await renter.PostAsync("/v1/wallet/top-ups", new { amount = new { amount = 500_000, currency = Currency } }, Guid.NewGuid().ToString(), ct);
        Say($"top-up {topUp["id"]}: PaymentIntent {topUp["payment_intent_id"]} {topUp["status"]}");
        var wallet = await renter.WaitForAsync("/v1/wallet", w => Available(w) >= 500_000, TimeSpan.FromSeconds(30), "the payment_intent.succeeded webhook to credit the wallet", ct);
        Say($"wallet: {Minor(Available(wallet))} available after the signed webhook");

        Step("Renter orders");
        // First an order whose max price is below every ask: it stays in the book and says why.
        var low = await renter.PostAsync("/v1/orders", new
        {
            type = "on_demand", accelerator_model = Model, accelerator_count = 8, duration_seconds = leaseSeconds,
            max_price_per_hour = new { amount = 1200, currency = Currency }, region = "cn-east",
        }, Guid.NewGuid().ToString(), ct);
        var unfilled = await renter.GetAsync($"/v1/orders/{low["id"]}", ct);
        Say($"order {low["id"]} at max {Price(low["max_price_per_hour"]!)}: {unfilled["status"]} — {unfilled["status_reason"]}");
        await renter.DeleteAsync($"/v1/orders/{low["id"]}", ct);

        var idempotencyKey = Guid.NewGuid().ToString();
        var orderRequest = new
        {
            type = "on_demand", accelerator_model = Model, accelerator_count = 8, duration_seconds = leaseSeconds,
            max_price_per_hour = new { amount = 1800, currency = Currency }, region = "cn-east",
        };
        var order = await renter.PostAsync("/v1/orders", orderRequest, idempotencyKey, ct);
        var retried = await renter.PostAsync("/v1/orders", orderRequest, idempotencyKey, ct);
        var orderId = (string)order["id"]!;
        Say($"order {orderId}: 8 × {Model} for {leaseSeconds} s at max {Price(order["max_price_per_hour"]!)} " +
            $"(retried with the same Idempotency-Key → same order: {(string)retried["id"]! == orderId})");
        var filled = await renter.WaitForAsync($"/v1/orders/{orderId}", o => (string?)o["status"] is "filled" or "cancelled",
            TimeSpan.FromSeconds(30), "the order to be matched and placed", ct);
        if ((string?)filled["status"] != "filled") throw new InvalidOperationException($"order not filled: {filled.ToJsonString()}");
        Say($"matched at {Price(filled["match"]!["price_per_hour"]!)} with offer {filled["match"]!["offer_id"]}");

        Step("Scheduling places and runs the lease");
        var leaseId = (string)filled["lease_id"]!;
        var lease = await renter.GetAsync($"/v1/leases/{leaseId}", ct);
        var slots = lease["slots"]!.AsArray();
        Say($"lease {leaseId}: {lease["status"]}, {slots.Count} GPU slots on node(s) {string.Join(", ", slots.Select(s => (string)s!["node_id"]!).Distinct())}");
        var held = await renter.GetAsync("/v1/wallet", ct);
        Say($"wallet: {Minor(Available(held))} available, {Minor(Held(held))} held for the lease's maximum cost");
        lease = await renter.WaitForAsync($"/v1/leases/{leaseId}", l => (string?)l["status"] is "active" or "completed" or "cancelled" or "failed",
            TimeSpan.FromSeconds(30), "the lease to start", ct);
        Say($"lease {lease["status"]} since {lease["started_at"]}");
        var providerView = await provider.GetAsync($"/v1/leases/{leaseId}", ct);
        Say($"the provider sees the same lease on its nodes: {providerView["status"]}");
        lease = await renter.WaitForAsync($"/v1/leases/{leaseId}", l => (string?)l["status"] is "completed" or "cancelled" or "failed",
            TimeSpan.FromSeconds(leaseSeconds + 60), "the lease to reach its end", ct);
        Say($"lease {lease["status"]} at {lease["ended_at"]} ({lease["status_reason"]})");

        Step("Finance closes the billing period");
        var period = DateTime.UtcNow.ToString("yyyy-MM-dd", CultureInfo.InvariantCulture);
        // Billing meters from the lease events, which reach it within milliseconds of the lease's end;
        // finance normally runs a period after it closed, the demo runs it right away.
        await Task.Delay(TimeSpan.FromSeconds(2), ct);
        var billingRun = await finance.PostAsync($"/v1/billing/periods/{period}/runs", new { }, null, ct);
        var again = await finance.PostAsync($"/v1/billing/periods/{period}/runs", new { }, null, ct);
        var invoice = (await renter.GetAsync("/v1/invoices", ct))["data"]!.AsArray().First(i => Total(i!) > 0)!;
        foreach (var line in invoice["lines"]!.AsArray())
            Say($"invoice {invoice["id"]}: lease {line!["lease_id"]}, {line["accelerator_count"]} × {line["accelerator_model"]} " +
                $"for {line["seconds"]} s at {Price(line["unit_price"]!)}/GPU-hour → {Price(line["amount"]!)}");
        Say($"invoice total {Price(invoice["total"]!)}");
        var statement = (await provider.GetAsync("/v1/statements", ct))["data"]!.AsArray().First()!;
        Say($"provider statement: gross {Price(statement["gross"]!)} − platform fee {Price(statement["platform_fee"]!)} − SLA credits {Price(statement["sla_credits"]!)} = net {Price(statement["net"]!)}");
        Say($"payout {statement["payout"]?["id"]}: {statement["payout"]?["status"]} (Stripe transfer {statement["payout"]?["transfer_id"]})");
        Say($"running the period again changed nothing: {SameIds(billingRun, again)}");
        var trial = await finance.GetAsync("/v1/ledger/trial-balance", ct);
        Say($"ledger: {trial["accounts"]!.AsArray().Count} accounts, balanced = {trial["balanced"]}");
        var walletAfter = await renter.GetAsync("/v1/wallet", ct);
        Say($"renter wallet after the run: {Minor(Available(walletAfter))} available, {Minor(Held(walletAfter))} held");

        return new DemoResult(providerOrg, renterOrg, clusterId, offerId, orderId, leaseId, (string)lease["status"]!,
            invoice, statement, trial, unfilled, Available(walletAfter), null);
    }

    private async Task<(Api Api, string OrgId)> CreateOrgAsync(Api admin, string name, string role, CancellationToken ct)
    {
        var org = await admin.PostAsync("/v1/orgs", new { name, roles = new[] { role } }, null, ct);
        var key = await admin.PostAsync($"/v1/orgs/{org["id"]}/api-keys", new { name = "demo" }, null, ct);
        var secret = (string)key["key"]!;
        Say($"{role,-8} {name} ({org["id"]}), key {secret[..Math.Min(12, secret.Length)]}…");
        return (new Api(gateway, secret), (string)org["id"]!);
    }

    private static bool SameIds(JsonNode a, JsonNode b) =>
        string.Join(",", a["invoices"]!.AsArray().Select(i => (string?)i!["id"])) == string.Join(",", b["invoices"]!.AsArray().Select(i => (string?)i!["id"]));

    private static long Available(JsonNode wallet) => Balance(wallet, "available");
    private static long Held(JsonNode wallet) => Balance(wallet, "held");
    private static long Balance(JsonNode wallet, string field) =>
        wallet["balances"]!.AsArray().Where(b => (string?)b!["currency"] == Currency).Select(b => (long)b![field]!["amount"]!).FirstOrDefault();
    private static long Total(JsonNode invoice) => (long)invoice["total"]!["amount"]!;

    private static string Minor(long amount) => (amount / 100m).ToString("0.00", CultureInfo.InvariantCulture) + " " + Currency;
    private static string Price(JsonNode money) =>
        ((long)money["amount"]! / 100m).ToString("0.00", CultureInfo.InvariantCulture) + " " + (string)money["currency"]!;

    private void Step(string title) => output.WriteLine($"\n== {title}");
    private void Say(string line) => output.WriteLine("   " + line);
}
