using System.Text.Json.Nodes;

namespace Marketplace.Proof.Tests;

/// <summary>
/// The fuzzer's own organisations and objects, apart from worlds A and B: its orders ask for a model nobody offers, so
/// whatever it manages to create rests in the book and sets off nothing later; its org routes aim at a throwaway org.
/// Several keys per role, because rate limits are per key.
/// </summary>
internal sealed class FuzzWorld
{
    public const string OrderModel = "a100-80gb";
    public const string NodeModel = "ascend-910b";

    private readonly Dictionary<string, HttpClient[]> _clients = new();
    private readonly HttpClient _anonymous;
    private int _next;
    private string _cluster = "", _node = "", _offer = "", _order = "", _victimOrg = "", _victimKey = "";

    private FuzzWorld(HttpClient anonymous) => _anonymous = anonymous;

    public static async Task<FuzzWorld> CreateAsync(ProofFixture f)
    {
        var w = new FuzzWorld(f.Stack.Client());
        foreach (var role in GatewayRoute.AllRoles)
        {
            var (client, org, _) = await f.OrgAsync($"fuzz {role}", role);
            var clients = new List<HttpClient> { client };
            for (var i = 0; i < 3; i++) clients.Add(await f.ExtraKeyAsync(org));
            w._clients[role] = [.. clients];
        }
        var provider = w._clients["provider"][0];
        var cluster = await Api.PostJsonAsync(provider, "/v1/clusters", new { name = "fuzz", region = "ap-south", jurisdiction = "IN" });
        w._cluster = (string)cluster["id"]!;
        var node = await Api.PostJsonAsync(provider, $"/v1/clusters/{w._cluster}/nodes", new { hostname = "fuzz-01", accelerator_model = NodeModel, accelerator_count = 8 });
        w._node = (string)node["id"]!;
        var now = DateTimeOffset.UtcNow;
        var offer = await Api.PostJsonAsync(provider, "/v1/offers", new
        {
            cluster_id = w._cluster, node_ids = new[] { w._node }, window_start = now, window_end = now.AddHours(4),
            ask_per_hour = new { amount = 100, currency = "EUR" }, min_lease_seconds = ProofFixture.LeaseSeconds, interruptible_allowed = false,
        });
        w._offer = (string)offer["id"]!;
        var order = await Api.PostJsonAsync(w._clients["renter"][0], "/v1/orders", w.Order(), Guid.NewGuid().ToString());
        w._order = (string)order["id"]!;
        var (_, victim, _) = await f.OrgAsync("fuzz victim", "renter");
        _ = await f.ExtraKeyAsync(victim);
        w._victimOrg = victim;
        var key = await Api.PostJsonAsync(f.Admin, $"/v1/orgs/{victim}/api-keys", new { name = "to be revoked by the fuzzer" });
        lock (f.Keys) f.Keys.Add((string)key["key"]!);
        w._victimKey = (string)key["id"]!;
        return w;
    }

    private JsonObject Order() => new()
    {
        ["type"] = "on_demand", ["accelerator_model"] = OrderModel, ["accelerator_count"] = 1, ["duration_seconds"] = ProofFixture.LeaseSeconds,
        ["max_price_per_hour"] = new JsonObject { ["amount"] = 100, ["currency"] = "EUR" }, ["region"] = "ap-south", ["time_in_force"] = "gtc",
    };

    /// <summary>The key the fuzzer uses for an operation: a role the gateway admits on it (round robin over that role's keys).</summary>
    public HttpClient ClientFor(Operation op, IReadOnlyList<GatewayRoute> routes)
    {
        if (op.Anonymous) return _anonymous;
        var role = op.Path.StartsWith("/v1/orgs", StringComparison.Ordinal) ? "admin"
            : GatewayRoute.For(routes, op.Method, op.Path) is { Roles.Length: > 0 } r ? r.Roles[0] : "renter";
        var clients = _clients[role];
        return clients[(int)((uint)Interlocked.Increment(ref _next) % clients.Length)];
    }

    public string PathValue(Operation op, Parameter p)
    {
        var path = op.Path;
        var name = p.Name.ToLowerInvariant();
        if (name.Contains("key")) return _victimKey;
        if (name.Contains("node")) return _node;
        if (name == "model") return OrderModel;
        if (name == "period") return "2020-01";
        if (path.StartsWith("/v1/orgs", StringComparison.Ordinal)) return _victimOrg;
        if (path.StartsWith("/v1/clusters", StringComparison.Ordinal)) return _cluster;
        if (path.StartsWith("/v1/offers", StringComparison.Ordinal)) return _offer;
        if (path.StartsWith("/v1/orders", StringComparison.Ordinal)) return _order;
        return Guid.NewGuid().ToString();
    }

    public JsonObject? Baseline(Operation op)
    {
        var now = DateTimeOffset.UtcNow;
        return op.Key switch
        {
            "POST /v1/orgs" => new JsonObject { ["name"] = "fuzzed org", ["roles"] = new JsonArray("renter") },
            "POST /v1/orgs/{id}/api-keys" => new JsonObject { ["name"] = "fuzzed key" },
            "POST /v1/clusters" => new JsonObject { ["name"] = "fuzzed", ["region"] = "ap-south", ["jurisdiction"] = "IN" },
            "POST /v1/clusters/{id}/nodes" => new JsonObject { ["hostname"] = "fuzzed", ["accelerator_model"] = NodeModel, ["accelerator_count"] = 8 },
            "POST /v1/offers" => new JsonObject
            {
                ["cluster_id"] = _cluster, ["node_ids"] = new JsonArray(_node), ["window_start"] = now.ToString("O"), ["window_end"] = now.AddHours(2).ToString("O"),
                ["ask_per_hour"] = new JsonObject { ["amount"] = 100, ["currency"] = "EUR" }, ["min_lease_seconds"] = ProofFixture.LeaseSeconds,
                ["interruptible_allowed"] = false,
            },
            "POST /v1/orders" => Order(),
            "POST /v1/wallet/top-ups" => new JsonObject { ["amount"] = new JsonObject { ["amount"] = 1000, ["currency"] = "EUR" } },
            // Unsigned, so never authentic: the fuzzer attacks the parsing in front of the signature check.
            "POST /v1/webhooks/stripe" => new JsonObject
            {
                ["id"] = "evt_fuzz", ["object"] = "event", ["type"] = "payment_intent.succeeded",
                ["data"] = new JsonObject { ["object"] = new JsonObject { ["id"] = "pi_fuzz", ["object"] = "payment_intent", ["amount"] = 1000, ["currency"] = "eur" } },
            },
            _ => null,
        };
    }
}
