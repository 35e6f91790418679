using System.Net;
using System.Net.Http.Json;
using System.Security.Cryptography;
using System.Text;
using System.Text.Json.Nodes;
using Dapper;
using Marketplace.Testing;
using Xunit;
using Xunit.Abstractions;

namespace Marketplace.Proof.Tests;

/// <summary>Who may do what: roles, ownership, mass assignment, keys, webhooks and rate limits, through the gateway.</summary>
[Collection(ProofCollection.Name)]
public sealed class SecurityTests(ProofFixture fixture, ITestOutputHelper output)
{
    private World A => fixture.A;
    private World B => fixture.B;

    private static async Task<(int Status, string Body, HttpResponseMessage Response)> SendAsync(HttpClient client, string method, string path, JsonNode? body = null)
    {
        using var request = new HttpRequestMessage(new HttpMethod(method), path);
        if (body is not null) request.Content = new StringContent(body.ToJsonString(), Encoding.UTF8, "application/json");
        if (method == "POST") request.Headers.Add("Idempotency-Key", Guid.NewGuid().ToString());
        var response = await client.SendAsync(request);
        return ((int)response.StatusCode, await response.Content.ReadAsStringAsync(), response);
    }

    private static bool IsObjectRoute(Operation op) =>
        op.PathParams.Count > 0 && !op.Path.StartsWith("/v1/market/", StringComparison.Ordinal) && !op.Path.StartsWith("/v1/billing/periods/", StringComparison.Ordinal);

    private JsonNode? BodyFor(Operation op, Fuzzer fuzzer) => op.Key switch
    {
        "POST /v1/clusters/{id}/nodes" => new JsonObject { ["hostname"] = "intruder", ["accelerator_model"] = World.Model, ["accelerator_count"] = 8 },
        "POST /v1/orgs/{id}/api-keys" => new JsonObject { ["name"] = "intruder" },
        _ when op.Writes => op.BodySchema is null ? new JsonObject() : fuzzer.Example(op.BodySchema),
        _ => null,
    };

    [Fact]
    public async Task Every_route_answers_403_to_every_role_the_gateway_does_not_admit()
    {
        var document = await PublicDocument.GetAsync(fixture.Stack);
        var routes = GatewayRoute.Load();
        var fuzzer = new Fuzzer(document, (_, _) => Guid.NewGuid().ToString(), _ => null);
        var clients = new Dictionary<string, HttpClient> { ["renter"] = A.Renter, ["provider"] = A.Provider, ["finance"] = A.Finance, ["admin"] = fixture.Admin };
        var failures = new List<string>();
        var checkedCount = 0;
        foreach (var op in Operation.All(document).Where(o => !o.Anonymous))
        {
            var path = op.PathParams.Aggregate(op.Path, (p, param) => p.Replace("{" + param.Name + "}",
                param.Name == "model" ? World.Model : param.Name == "period" ? "2020-01" : Guid.NewGuid().ToString()));
            // The gateway's own organisation routes: creating one is for admins only (the rest is "admin or the org itself": 404).
            var admitted = op.Path.StartsWith("/v1/orgs", StringComparison.Ordinal)
                ? (op.Key == "POST /v1/orgs" ? ["admin"] : GatewayRoute.AllRoles)
                : GatewayRoute.For(routes, op.Method, op.Path) is { } route ? GatewayRoute.AllRoles.Where(route.Admits).ToArray() : null;
            if (admitted is null) { failures.Add($"{op.Key} is in the OpenAPI document but in no gateway route"); continue; }
            foreach (var role in GatewayRoute.AllRoles.Except(admitted))
            {
                var (status, body, response) = await SendAsync(clients[role], op.Method, path, BodyFor(op, fuzzer));
                checkedCount++;
                if (status != 403 || !Api.IsProblem(response) || !body.Contains("/problems/forbidden"))
                    failures.Add($"{op.Method} {path} as {role}: expected 403 forbidden problem, got {status} {body}");
                response.Dispose();
            }
        }
        output.WriteLine($"{checkedCount} (route, role) pairs answered 403");
        Assert.True(checkedCount >= 20, $"only {checkedCount} pairs checked");
        Assert.True(failures.Count == 0, string.Join("\n", failures));
    }

    [Fact]
    public async Task Every_object_route_answers_404_to_another_org_exactly_as_to_a_missing_object()
    {
        var document = await PublicDocument.GetAsync(fixture.Stack);
        var routes = GatewayRoute.Load();
        var fuzzer = new Fuzzer(document, (_, _) => Guid.NewGuid().ToString(), _ => null);
        string? Foreign(Operation op, Parameter p)
        {
            var name = p.Name.ToLowerInvariant();
            if (name.Contains("key")) return A.RenterKeyId;
            if (name.Contains("node")) return A.NodeId;
            return op.Path.Split('/')[2] switch
            {
                "orgs" => A.RenterOrgId,
                "clusters" => A.ClusterId,
                "offers" => A.OfferId,
                "orders" => A.OpenOrderId,
                "leases" => A.LeaseId,
                _ => null, // no object of A's of that kind (an invoice): checked as a missing id only
            };
        }
        var failures = new List<string>();
        var covered = new List<string>();
        foreach (var op in Operation.All(document).Where(o => !o.Anonymous && IsObjectRoute(o)))
        {
            var route = GatewayRoute.For(routes, op.Method, op.Path);
            // The accelerator catalog is the platform's, managed by admins: no organisation owns an object there.
            if (route is not null && route.Roles.Any() && route.Roles.All(r => r == "admin")) continue;
            // An active offer is a public listing (search shows it to every org), so reading one by id is public too;
            // changing or withdrawing it is checked here, and a withdrawn offer's privacy in the Listings tests.
            if (op.Method == "GET" && op.Path == "/v1/offers/{id}") continue;
            var role = op.Path.StartsWith("/v1/orgs", StringComparison.Ordinal) ? "renter" : route?.Roles.FirstOrDefault() ?? "renter";
            var intruder = B.ClientFor(role);
            var foreignPath = op.PathParams.Aggregate(op.Path, (p, param) => p.Replace("{" + param.Name + "}", Foreign(op, param) ?? Guid.NewGuid().ToString()));
            var missingPath = op.PathParams.Aggregate(op.Path, (p, param) => p.Replace("{" + param.Name + "}", Guid.NewGuid().ToString()));
            var body = BodyFor(op, fuzzer);
            var (foreign, foreignBody, r1) = await SendAsync(intruder, op.Method, foreignPath, body);
            var (missing, _, r2) = await SendAsync(intruder, op.Method, missingPath, body);
            // Another org's object must be refused exactly like a missing one (no existence leak): 404, or the same 4xx
            // when validation or a role check refuses the request before the object is looked up.
            if (foreign is < 400 or >= 500 || !Api.IsProblem(r1) || missing != foreign)
                failures.Add($"{op.Method} {foreignPath} as B's {role}: {foreign} {foreignBody} (a missing id: {missing})");
            if (foreign != 404) output.WriteLine($"{op.Key}: refused with {foreign} before any lookup, as for a missing id");
            covered.Add($"{op.Key}{(op.PathParams.All(p => Foreign(op, p) is not null) ? "" : " (missing id only)")}");
            r1.Dispose(); r2.Dispose();
        }
        output.WriteLine("object routes: " + string.Join("; ", covered));
        Assert.True(covered.Count >= 8, $"only {covered.Count} object routes: {string.Join(", ", covered)}");
        Assert.True(failures.Count == 0, string.Join("\n", failures));

        // A's objects are as they were.
        Assert.Equal("open", (string?)(await Api.GetJsonAsync(A.Renter, $"/v1/orders/{A.OpenOrderId}"))!["status"]);
        Assert.Equal("active", (string?)(await Api.GetJsonAsync(A.Renter, $"/v1/leases/{A.LeaseId}"))!["status"]);
        var cluster = await Api.GetJsonAsync(A.Provider, $"/v1/clusters/{A.ClusterId}");
        Assert.Single(cluster!["nodes"]!.AsArray());
        using var spare = fixture.Stack.Client(A.RenterKey);
        Assert.Equal(HttpStatusCode.OK, (await spare.GetAsync("/v1/wallet")).StatusCode);
        var offers = await Api.GetJsonAsync(A.Renter, $"/v1/offers?accelerator_model={World.Model}&limit=100");
        Assert.Contains(offers!["data"]!.AsArray(), o => (string?)o!["id"] == A.OfferId && (string?)o["status"] == "active");
    }

    [Fact]
    public async Task Fields_a_caller_may_not_set_are_ignored_when_creating()
    {
        var chosenId = Guid.NewGuid().ToString();
        var cluster = await Api.PostJsonAsync(A.Provider, "/v1/clusters", new
        {
            name = "mass", region = "eu-west", jurisdiction = "DE", id = chosenId, provider_org_id = B.ProviderOrgId, created_at = "2001-01-01T00:00:00Z",
        });
        Assert.Equal(A.ProviderOrgId, (string?)cluster["provider_org_id"]);
        Assert.NotEqual(chosenId, (string?)cluster["id"]);
        Assert.NotEqual(2001, DateTimeOffset.Parse((string)cluster["created_at"]!).Year);

        var node = await Api.PostJsonAsync(A.Provider, $"/v1/clusters/{cluster["id"]}/nodes", new
        {
            hostname = "mass-01", accelerator_model = World.Model, accelerator_count = 2, cluster_id = B.ClusterId, id = chosenId,
            slots = new[] { new { id = chosenId, index = 7 } },
        });
        Assert.Equal((string?)cluster["id"], (string?)node["cluster_id"]);
        Assert.Equal(2, node["slots"]!.AsArray().Count);

        var now = DateTimeOffset.UtcNow;
        var offer = await Api.PostJsonAsync(A.Provider, "/v1/offers", new
        {
            cluster_id = cluster["id"], node_ids = new[] { node["id"] }, window_start = now, window_end = now.AddHours(1),
            ask_per_hour = new { amount = 100_000, currency = World.Currency }, min_lease_seconds = ProofFixture.LeaseSeconds, interruptible_allowed = false,
            provider_org_id = B.ProviderOrgId, status = "withdrawn", accelerator_count = 999, region = "mars", jurisdiction = "XX", price = 1,
        });
        Assert.Equal(A.ProviderOrgId, (string?)offer["provider_org_id"]);
        Assert.Equal("active", (string?)offer["status"]);
        Assert.Equal(2, (int)offer["accelerator_count"]!);
        Assert.Equal("eu-west", (string?)offer["region"]);
        Assert.Equal(100_000, (long)offer["ask_per_hour"]!["amount"]!);

        // A model nobody offers, so the order rests: its status and lease are the server's, whatever was sent.
        var order = await Api.PostJsonAsync(A.Renter, "/v1/orders", new
        {
            type = "on_demand", accelerator_model = "a100-80gb", accelerator_count = 1, duration_seconds = ProofFixture.LeaseSeconds,
            max_price_per_hour = new { amount = 100, currency = World.Currency },
            renter_org_id = B.RenterOrgId, status = "filled", lease_id = Guid.NewGuid(), id = chosenId, price = 1,
            match = new { offer_id = A.OfferId, price_per_hour = new { amount = 1, currency = World.Currency } },
        }, Guid.NewGuid().ToString());
        Assert.Equal(A.RenterOrgId, (string?)order["renter_org_id"]);
        Assert.NotEqual(chosenId, (string?)order["id"]);
        var stored = await Api.GetJsonAsync(A.Renter, $"/v1/orders/{order["id"]}");
        Assert.Equal("open", (string?)stored!["status"]);
        Assert.Null(stored["lease_id"]);
        Assert.Null(stored["match"]);
        await Api.GetJsonAsync(A.Renter, $"/v1/orders/{order["id"]}");
        using var cancel = await A.Renter.DeleteAsync($"/v1/orders/{order["id"]}");
        Assert.True(cancel.IsSuccessStatusCode);

        var org = await Api.PostJsonAsync(fixture.Admin, "/v1/orgs", new { name = "mass org", roles = new[] { "renter" }, id = chosenId, created_at = "2001-01-01T00:00:00Z" });
        Assert.NotEqual(chosenId, (string?)org["id"]);
        var key = await Api.PostJsonAsync(fixture.Admin, $"/v1/orgs/{org["id"]}/api-keys", new { name = "mass", key = "mk_chosen_secretsecretsecret", prefix = "chosen", org_id = A.RenterOrgId });
        lock (fixture.Keys) fixture.Keys.Add((string)key["key"]!);
        Assert.NotEqual("mk_chosen_secretsecretsecret", (string?)key["key"]);
        Assert.NotEqual("chosen", (string?)key["prefix"]);
        using var chosen = fixture.Stack.Client("mk_chosen_secretsecretsecret");
        Assert.Equal(HttpStatusCode.Unauthorized, (await chosen.GetAsync("/v1/wallet")).StatusCode);
    }

    [Fact]
    public async Task Api_keys_are_never_logged_and_stored_only_as_hashes()
    {
        // Every key has been used by now (the worlds were built with them); use each once more, and a wrong one.
        string[] keys;
        lock (fixture.Keys) keys = [.. fixture.Keys];
        foreach (var key in keys.Take(20))
        {
            using var client = fixture.Stack.Client(key);
            await client.GetAsync("/v1/accelerators");
        }
        using (var wrong = fixture.Stack.Client(keys[^1] + "x")) await wrong.GetAsync("/v1/accelerators");

        var secrets = keys.Select(k => k[(k.IndexOf('_', 3) + 1)..]).ToList();
        foreach (var project in MarketplaceStack.ServiceProjects)
        {
            var log = fixture.Stack.ReadLog(project);
            Assert.True(log.Length > 0, $"{project} wrote no log");
            foreach (var secret in secrets)
                Assert.False(log.Contains(secret, StringComparison.Ordinal), $"{project}'s log contains the secret of an API key ({secret[..4]}…)");
        }

        using var db = fixture.Stack.Database.OpenAdmin();
        var rows = (await db.QueryAsync<(string Prefix, byte[] Hash, string Text)>(
            "SELECT prefix, secret_hash, row_to_json(k)::text FROM gateway.api_keys k")).ToList();
        Assert.True(rows.Count >= keys.Length - 1, $"{rows.Count} key rows for {keys.Length} keys");
        foreach (var (prefix, hash, text) in rows)
            foreach (var secret in secrets)
                Assert.False(text.Contains(secret, StringComparison.Ordinal), $"api_keys row {prefix} holds a clear secret");
        foreach (var key in keys.Where(k => k != MarketplaceStack.AdminKey))
        {
            var prefix = key[3..key.IndexOf('_', 3)];
            var secret = key[(key.IndexOf('_', 3) + 1)..];
            var row = rows.Single(r => r.Prefix == prefix);
            Assert.Equal(SHA256.HashData(Encoding.UTF8.GetBytes(secret)), row.Hash);
        }
    }

    private static string Sign(string payload, string secret, long unixTime) =>
        $"t={unixTime},v1={Convert.ToHexStringLower(HMACSHA256.HashData(Encoding.UTF8.GetBytes(secret), Encoding.UTF8.GetBytes($"{unixTime}.{payload}")))}";

    private static string Event(string eventId, string paymentIntent, long amount, string? topUpId) => new JsonObject
    {
        ["id"] = eventId, ["object"] = "event", ["api_version"] = "2025-01-27.acacia", ["created"] = DateTimeOffset.UtcNow.ToUnixTimeSeconds(),
        ["livemode"] = false, ["pending_webhooks"] = 1, ["type"] = "payment_intent.succeeded",
        ["data"] = new JsonObject
        {
            ["object"] = new JsonObject
            {
                ["id"] = paymentIntent, ["object"] = "payment_intent", ["amount"] = amount, ["amount_received"] = amount, ["currency"] = "eur",
                ["status"] = "succeeded", ["livemode"] = false,
                ["metadata"] = topUpId is null ? new JsonObject() : new JsonObject { ["top_up_id"] = topUpId },
            },
        },
    }.ToJsonString();

    private async Task<(int Status, string Body)> DeliverAsync(string payload, string? signature)
    {
        using var anonymous = fixture.Stack.Client();
        using var request = new HttpRequestMessage(HttpMethod.Post, "/v1/webhooks/stripe") { Content = new StringContent(payload, Encoding.UTF8, "application/json") };
        if (signature is not null) request.Headers.TryAddWithoutValidation("Stripe-Signature", signature);
        using var response = await anonymous.SendAsync(request);
        return ((int)response.StatusCode, await response.Content.ReadAsStringAsync());
    }

    [Fact]
    public async Task Forged_stale_and_replayed_stripe_webhooks_credit_nothing()
    {
        var (renter, _, _) = await fixture.OrgAsync("webhook renter", "renter");
        var topUp = await Api.PostJsonAsync(renter, "/v1/wallet/top-ups", new { amount = new { amount = 5000, currency = World.Currency } }, Guid.NewGuid().ToString());
        await Eventually.True(async () => await Api.AvailableAsync(renter, World.Currency) == 5000, TimeSpan.FromSeconds(30), "the genuine webhook to credit");
        var pi = (string)topUp["payment_intent_id"]!;
        var now = DateTimeOffset.UtcNow.ToUnixTimeSeconds();

        // Forged: signed with another secret, for a payment intent that never existed, and for the real one.
        var forged = Event("evt_forged_" + Guid.NewGuid().ToString("N"), "pi_forged", 1_000_000, Guid.NewGuid().ToString());
        var forgedReal = Event("evt_forged_" + Guid.NewGuid().ToString("N"), pi, 1_000_000, (string)topUp["id"]!);
        foreach (var (payload, signature, what) in new[]
        {
            (forged, Sign(forged, "whsec_not_the_secret", now), "another secret"),
            (forgedReal, Sign(forgedReal, "whsec_not_the_secret", now), "another secret, real intent"),
            (forgedReal, (string?)null, "no signature"),
            (forgedReal, "t=1,v1=deadbeef", "garbage signature"),
            (forgedReal, Sign(forgedReal, MarketplaceStack.StripeWebhookSecret, now - 3600), "signed an hour ago"),
            (forgedReal.Replace("1000000", "2000000"), Sign(forgedReal, MarketplaceStack.StripeWebhookSecret, now), "body changed after signing"),
        })
        {
            var (status, body) = await DeliverAsync(payload, signature);
            Assert.True(status == 400 && body.Contains("invalid-webhook-signature"), $"{what}: {status} {body}");
        }

        // Replayed: one authentic event delivered three times, byte for byte; and a second event for the same payment.
        var authentic = Event("evt_replay_" + Guid.NewGuid().ToString("N"), pi, 5000, (string)topUp["id"]!);
        var header = Sign(authentic, MarketplaceStack.StripeWebhookSecret, now);
        for (var i = 0; i < 3; i++)
        {
            var (status, body) = await DeliverAsync(authentic, header);
            Assert.True(status == 200, $"delivery {i}: {status} {body}");
            if (i > 0) Assert.Contains("\"duplicate\":true", body);
        }
        var another = Event("evt_again_" + Guid.NewGuid().ToString("N"), pi, 5000, (string)topUp["id"]!);
        Assert.Equal(200, (await DeliverAsync(another, Sign(another, MarketplaceStack.StripeWebhookSecret, now))).Status);

        await Task.Delay(500);
        Assert.Equal(5000, await Api.AvailableAsync(renter, World.Currency));
    }

    [Fact]
    public async Task Flooding_one_key_is_answered_429_with_retry_after_and_other_keys_are_unaffected()
    {
        var (flooder, org, _) = await fixture.OrgAsync("flooder", "renter");
        var other = await fixture.ExtraKeyAsync(org);
        var statuses = new System.Collections.Concurrent.ConcurrentBag<(int Status, string? RetryAfter, string Body)>();
        // A route the key's role may not call: the gateway answers it itself, so the flood costs the services nothing.
        await Parallel.ForEachAsync(Enumerable.Range(0, ProofFixture.Burst * 8), new ParallelOptions { MaxDegreeOfParallelism = 32 }, async (_, ct) =>
        {
            using var response = await flooder.PostAsync("/v1/clusters", JsonContent.Create(new { }), ct);
            statuses.Add(((int)response.StatusCode, response.Headers.RetryAfter?.ToString(), await response.Content.ReadAsStringAsync(ct)));
        });
        var limited = statuses.Where(s => s.Status == 429).ToList();
        output.WriteLine($"{statuses.Count} requests: {string.Join(", ", statuses.GroupBy(s => s.Status).Select(g => $"{g.Key}×{g.Count()}"))}");
        Assert.NotEmpty(limited);
        Assert.All(limited, s =>
        {
            Assert.True(int.TryParse(s.RetryAfter, out var seconds) && seconds >= 1, $"Retry-After: {s.RetryAfter}");
            Assert.Contains("/problems/rate-limited", s.Body);
        });
        Assert.All(statuses.Where(s => s.Status != 429), s => Assert.Equal(403, s.Status));

        using var otherResponse = await other.GetAsync("/v1/accelerators");
        Assert.Equal(HttpStatusCode.OK, otherResponse.StatusCode);
        await Task.Delay(TimeSpan.FromSeconds(int.Parse(limited[0].RetryAfter!) + 1));
        using var again = await flooder.GetAsync("/v1/accelerators");
        Assert.Equal(HttpStatusCode.OK, again.StatusCode);
    }
}
