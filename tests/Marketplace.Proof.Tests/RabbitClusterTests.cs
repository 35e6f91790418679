using System.Collections.Concurrent;
using System.Diagnostics;
using System.Net;
using System.Net.Http.Headers;
using System.Net.Http.Json;
using System.Net.Sockets;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using Dapper;
using Marketplace.Testing;
using Xunit;
using Xunit.Abstractions;

namespace Marketplace.Proof.Tests;

/// <summary>
/// The three-node cluster of <c>infra/rabbit-cluster.sh</c>, driven through the script (start, kill -9 a node) and read
/// through whichever node's management API answers.
/// </summary>
public sealed class RabbitCluster
{
    private static readonly string Script = Path.Combine(RepoPaths.Root, "infra", "rabbit-cluster.sh");
    private static int AmqpBase => int.Parse(TestServers.Env("MP_CLUSTER_AMQP_BASE", "25710"));
    private static int ManagementBase => int.Parse(TestServers.Env("MP_CLUSTER_MGMT_BASE", "25720"));
    public static readonly int[] Nodes = [1, 2, 3];

    private readonly HttpClient _http = new() { Timeout = TimeSpan.FromSeconds(10) };

    public RabbitCluster() =>
        _http.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue("Basic",
            Convert.ToBase64String(Encoding.UTF8.GetBytes($"{TestServers.RabbitUser}:{TestServers.RabbitPassword}")));

    public static string NodeName(int n) => $"mpc{n}@localhost";
    public static int AmqpPort(int n) => AmqpBase + n;
    public static int ManagementPort(int n) => ManagementBase + n;
    public static string AmqpEndpoint(int n) => $"127.0.0.1:{AmqpPort(n)}";

    /// <summary>Runs the script; its log lines go to <paramref name="output"/>.</summary>
    public static async Task<string> RunScriptAsync(ITestOutputHelper? output, params string[] args)
    {
        var psi = new ProcessStartInfo("bash", [Script, .. args]) { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        using var process = Process.Start(psi)!;
        var stdout = process.StandardOutput.ReadToEndAsync();
        var stderr = process.StandardError.ReadToEndAsync();
        // `start` after a kill took over ten minutes at a load average of 100-130 (every rabbitmqctl call is slow then).
        using var timeout = new CancellationTokenSource(TimeSpan.FromMinutes(int.Parse(TestServers.Env("MP_CLUSTER_SCRIPT_MINUTES", "30"))));
        await process.WaitForExitAsync(timeout.Token);
        var text = await stdout;
        foreach (var line in (await stderr).Split('\n', StringSplitOptions.RemoveEmptyEntries)) output?.WriteLine(line);
        if (process.ExitCode != 0) throw new InvalidOperationException($"rabbit-cluster.sh {string.Join(' ', args)} exited {process.ExitCode}: {await stderr}");
        return text;
    }

    /// <summary>How many of the three nodes the script sees running.</summary>
    public static async Task<int> RunningNodesAsync() =>
        (await RunScriptAsync(null, "status")).Split('\n').Count(l => l.StartsWith("mpc", StringComparison.Ordinal) && l.Contains(": running"));

    /// <summary>The running members of the cluster, as its nodes see it.</summary>
    public static async Task<string[]> MembersAsync() =>
        (await RunScriptAsync(null, "status")).Split('\n').FirstOrDefault(l => l.StartsWith("cluster members running:", StringComparison.Ordinal))?
            ["cluster members running:".Length..].Split(' ', StringSplitOptions.RemoveEmptyEntries) ?? [];

    /// <summary>GET on the management API of the first node that answers (a killed node does not).</summary>
    public async Task<JsonElement> GetAsync(string path)
    {
        Exception? last = null;
        foreach (var n in Nodes)
        {
            try
            {
                using var response = await _http.GetAsync($"http://127.0.0.1:{ManagementBase + n}/api/{path}");
                response.EnsureSuccessStatusCode();
                return await response.Content.ReadFromJsonAsync<JsonElement>();
            }
            catch (Exception ex) when (ex is HttpRequestException or TaskCanceledException) { last = ex; }
        }
        throw new InvalidOperationException($"no cluster node's management API answered {path}", last);
    }

    public async Task SendAsync(HttpMethod method, string path, object? body = null)
    {
        Exception? last = null;
        foreach (var n in Nodes)
        {
            try
            {
                using var request = new HttpRequestMessage(method, $"http://127.0.0.1:{ManagementBase + n}/api/{path}")
                {
                    Content = body is null ? null : JsonContent.Create(body),
                };
                using var response = await _http.SendAsync(request);
                response.EnsureSuccessStatusCode();
                return;
            }
            catch (Exception ex) when (ex is HttpRequestException or TaskCanceledException) { last = ex; }
        }
        throw new InvalidOperationException($"no cluster node's management API accepted {method} {path}", last);
    }

    public async Task<List<JsonElement>> QueuesAsync(string vhost) => [.. (await GetAsync($"queues/{vhost}")).EnumerateArray()];

    /// <summary>The vhost's client connections per node.</summary>
    public async Task<Dictionary<string, int>> ConnectionsByNodeAsync(string vhost) =>
        (await GetAsync($"vhosts/{vhost}/connections")).EnumerateArray()
            .GroupBy(c => c.GetProperty("node").GetString()!).ToDictionary(g => g.Key, g => g.Count());

    public static string Str(JsonElement e, string name) => e.TryGetProperty(name, out var v) && v.ValueKind == JsonValueKind.String ? v.GetString()! : "";
    public static long Num(JsonElement e, string name) => e.TryGetProperty(name, out var v) && v.ValueKind == JsonValueKind.Number ? v.GetInt64() : 0;
}

/// <summary>
/// The cluster (started when it is not running, stopped again if this fixture started it) and a marketplace on it: the
/// stack's own virtual host is made on the cluster (through node 1's management API), so its queue checks read the cluster.
/// </summary>
public sealed class RabbitClusterFixture : IAsyncLifetime
{
    public RabbitCluster Cluster { get; } = new();
    public MarketplaceStack Stack { get; private set; } = null!;
    public string VirtualHost => Stack.VirtualHost.Name;
    private bool _startedCluster;

    public async Task InitializeAsync()
    {
        _startedCluster = await RabbitCluster.RunningNodesAsync() < 3;
        await RabbitCluster.RunScriptAsync(null, "start");
        var settings = LoadProfile.StackSettings();
        settings["RabbitMq__QuorumQueues"] = "true";
        foreach (var n in RabbitCluster.Nodes) settings[$"RabbitMq__ClusterNodes__{n - 1}"] = RabbitCluster.AmqpEndpoint(n);
        var node1 = new ServerEndpoints(TestServers.PgPort, RabbitCluster.AmqpPort(1), RabbitCluster.ManagementPort(1));
        Stack = await MarketplaceStack.StartAsync(new StackOptions { Servers = node1, Settings = settings });
    }

    /// <summary>Brings back any node a test killed (a test that failed half-way may leave one or two down).</summary>
    public static async Task EnsureAllNodesAsync(ITestOutputHelper? output)
    {
        if (await RabbitCluster.RunningNodesAsync() < RabbitCluster.Nodes.Length) await RabbitCluster.RunScriptAsync(output, "start");
    }

    public async Task DisposeAsync()
    {
        // The vhost is removed through node 1: every node must be back first.
        await EnsureAllNodesAsync(null);
        if (Stack is not null) await Stack.DisposeAsync();
        if (_startedCluster) await RabbitCluster.RunScriptAsync(null, "stop");
    }
}

/// <summary>
/// Not in CI (about four minutes on two cores, most of it starting three RabbitMQ nodes): infra/test.sh leaves the
/// category out; <c>infra/rabbit-cluster.sh proof</c> runs it.
/// </summary>
[Trait("Category", Category)]
public sealed class RabbitClusterTests(RabbitClusterFixture fixture, ITestOutputHelper output) : IClassFixture<RabbitClusterFixture>
{
    public const string Category = "RabbitCluster";
    private const string Model = "h100-sxm";
    private const string Currency = "CNY";
    private const int Orders = 90;
    private const int KillAfter = 30;

    private async Task<HttpClient> OrgAsync(HttpClient admin, string name, string role)
    {
        var org = await Api.PostJsonAsync(admin, "/v1/orgs", new { name, roles = new[] { role } });
        var key = await Api.PostJsonAsync(admin, $"/v1/orgs/{org["id"]}/api-keys", new { name = "cluster" });
        return fixture.Stack.Client((string)key["key"]!);
    }

    [Fact]
    public async Task A_quorum_cluster_that_loses_a_node_under_load_loses_no_order_and_no_message()
    {
        await RabbitClusterFixture.EnsureAllNodesAsync(output);
        var stack = fixture.Stack;
        var cluster = fixture.Cluster;
        var vhost = fixture.VirtualHost;
        using var admin = stack.Client(MarketplaceStack.AdminKey);
        var provider = await OrgAsync(admin, "cluster provider", "provider");
        var renter = await OrgAsync(admin, "cluster renter", "renter");
        var finance = await OrgAsync(admin, "cluster finance", "finance");
        var providerCluster = await Api.PostJsonAsync(provider, "/v1/clusters", new { name = "quorum", region = "cn-east", jurisdiction = "CN" });
        var nodes = new List<string>();
        for (var i = 0; i < 6; i++)
            nodes.Add((string)(await Api.PostJsonAsync(provider, $"/v1/clusters/{providerCluster["id"]}/nodes",
                new { hostname = $"quorum-{i}", accelerator_model = Model, accelerator_count = 16 }))["id"]!);
        var now = DateTimeOffset.UtcNow;
        await Api.PostJsonAsync(provider, "/v1/offers", new
        {
            cluster_id = providerCluster["id"], node_ids = nodes, window_start = now.AddMinutes(-1), window_end = now.AddHours(2),
            ask_per_hour = new { amount = 1000, currency = Currency }, min_lease_seconds = ProofFixture.LeaseSeconds, interruptible_allowed = false,
        });
        await Api.PostJsonAsync(renter, "/v1/wallet/top-ups", new { amount = new { amount = 10_000_000, currency = Currency } }, Guid.NewGuid().ToString());
        await Eventually.True(async () => await Api.AvailableAsync(renter, Currency) >= 10_000_000, TimeSpan.FromSeconds(60), "the wallet to be funded");

        // Every consumer queue (and its _error queue) is a quorum queue replicated on all three nodes.
        var queues = (await cluster.QueuesAsync(vhost)).Where(q => !RabbitCluster.Str(q, "name").StartsWith("bus-", StringComparison.Ordinal)).ToList();
        Assert.True(queues.Count >= 12, $"only {queues.Count} queues in {vhost}");
        Assert.All(queues, q => Assert.Equal("quorum", RabbitCluster.Str(q, "type")));
        Assert.All(queues, q => Assert.Equal(3, q.TryGetProperty("members", out var m) ? m.GetArrayLength() : 0));

        // The victim is the node the services are connected to (and on which their queues were declared, so it leads them).
        var connections = await cluster.ConnectionsByNodeAsync(vhost);
        var victim = RabbitCluster.Nodes.OrderByDescending(n => connections.GetValueOrDefault(RabbitCluster.NodeName(n))).First();
        var leaders = queues.Count(q => RabbitCluster.Str(q, "leader") == RabbitCluster.NodeName(victim));
        output.WriteLine($"before the kill: connections per node {string.Join(", ", connections.Select(c => $"{c.Key} {c.Value}"))}; " +
                         $"{leaders} of {queues.Count} quorum queues led by {RabbitCluster.NodeName(victim)}");

        // 90 one-GPU orders at 10 per second for 96 GPUs; the node is killed with kill -9 after the thirtieth.
        var accepted = new ConcurrentBag<(string Id, bool AfterKill)>();
        var rejected = new ConcurrentBag<string>();
        var posts = new List<Task>();
        var clock = Stopwatch.StartNew();
        TimeSpan killedAt = default;
        for (var i = 0; i < Orders; i++)
        {
            var due = TimeSpan.FromMilliseconds(100 * i);
            if (due > clock.Elapsed) await Task.Delay(due - clock.Elapsed);
            if (i == KillAfter)
            {
                await RabbitCluster.RunScriptAsync(output, "kill", victim.ToString());
                killedAt = clock.Elapsed;
            }
            posts.Add(PlaceAsync(renter, i >= KillAfter, accepted, rejected));
        }
        await Task.WhenAll(posts);
        Assert.True(rejected.IsEmpty, $"{rejected.Count} orders were not accepted: {string.Join("; ", rejected.Take(5))}");
        Assert.Equal(Orders, accepted.Count);

        // Every order fills (there is room for all), with the node still down.
        var ids = accepted.Select(a => Guid.Parse(a.Id)).ToArray();
        using var db = stack.Database.OpenAdmin();
        await Eventually.True(async () => await db.ExecuteScalarAsync<long>(
            "SELECT count(*) FROM bidding.orders WHERE id = ANY(@ids) AND status = 'filled'", new { ids }) == Orders,
            TimeSpan.FromSeconds(180), "every order to fill");
        var settled = clock.Elapsed;
        var byStatus = await db.QueryAsync<(string Status, long Count)>(
            "SELECT status, count(*) FROM bidding.orders WHERE id = ANY(@ids) GROUP BY status", new { ids });
        output.WriteLine($"orders: {string.Join(", ", byStatus.Select(s => $"{s.Status} {s.Count}"))}; node killed at {killedAt.TotalSeconds:0.0} s, " +
                         $"every order filled at {settled.TotalSeconds:0.0} s");

        // Nothing done twice: one lease and one hold per order, no GPU booked twice at once.
        Assert.Equal(Orders, await db.ExecuteScalarAsync<long>("SELECT count(*) FROM scheduling.leases WHERE order_id = ANY(@ids)", new { ids }));
        Assert.Equal(0, await db.ExecuteScalarAsync<long>("""
            SELECT count(*) FROM scheduling.bookings a JOIN scheduling.bookings b
              ON a.slot_id = b.slot_id AND a.ctid <> b.ctid AND a.during && b.during
            """));
        await Eventually.True(async () => await db.ExecuteScalarAsync<long>(
            "SELECT count(*) FROM billing.holds h JOIN scheduling.leases l ON l.id = h.lease_id WHERE l.order_id = ANY(@ids)", new { ids }) == Orders,
            TimeSpan.FromSeconds(60), "a hold for every lease");
        Assert.Equal(Orders, await db.ExecuteScalarAsync<long>(
            "SELECT count(DISTINCT l.id) FROM billing.holds h JOIN scheduling.leases l ON l.id = h.lease_id WHERE l.order_id = ANY(@ids)", new { ids }));
        var latency = (await db.QueryAsync<(Guid Id, double Ms)>("""
            SELECT o.id, extract(epoch FROM l.created_at - o.created_at) * 1000 FROM bidding.orders o JOIN scheduling.leases l ON l.order_id = o.id
            WHERE o.id = ANY(@ids)
            """, new { ids })).ToDictionary(r => r.Id.ToString(), r => r.Ms);
        foreach (var phase in accepted.GroupBy(a => a.AfterKill).OrderBy(g => g.Key))
        {
            var ms = phase.Select(a => latency[a.Id]).Order().ToArray();
            output.WriteLine($"order accepted → lease scheduled, {ms.Length} orders placed {(phase.Key ? "after" : "before")} the kill: " +
                             $"p50 {ms[ms.Length / 2]:0} ms, p95 {ms[(int)Math.Ceiling(ms.Length * 0.95) - 1]:0} ms, max {ms[^1]:0} ms");
        }

        // Every message delivered: outboxes drained, every queue empty, nothing in _error.
        foreach (var schema in State.Schemas)
            await Eventually.True(async () => await db.ExecuteScalarAsync<long>($"SELECT count(*) FROM {schema}.outbox") == 0,
                TimeSpan.FromSeconds(60), $"{schema}'s outbox to drain");
        var trial = await Api.GetJsonAsync(finance, "/v1/ledger/trial-balance");
        Assert.Equal(true, (bool?)trial!["balanced"]);
        await Task.Delay(TimeSpan.FromSeconds(6)); // the management API's counts lag by up to five seconds
        List<JsonElement> after = [];
        await Eventually.True(async () =>
        {
            after = await cluster.QueuesAsync(vhost);
            return after.Where(q => !RabbitCluster.Str(q, "name").EndsWith("_error", StringComparison.Ordinal)).All(q => RabbitCluster.Num(q, "messages") == 0);
        }, TimeSpan.FromSeconds(60), "every consumer queue to be empty");
        var errors = after.Where(q => RabbitCluster.Str(q, "name").EndsWith("_error", StringComparison.Ordinal) && RabbitCluster.Num(q, "messages") > 0).ToList();
        Assert.True(errors.Count == 0, "messages in _error queues: " + string.Join(", ", errors.Select(e => $"{RabbitCluster.Str(e, "name")} {RabbitCluster.Num(e, "messages")}")));
        var moved = await cluster.ConnectionsByNodeAsync(vhost);
        output.WriteLine($"after the kill: connections per node {string.Join(", ", moved.Select(c => $"{c.Key} {c.Value}"))}; " +
                         $"quorum queue leaders {string.Join(", ", after.GroupBy(q => RabbitCluster.Str(q, "leader")).Select(g => $"{g.Key} {g.Count()}"))}");
        Assert.DoesNotContain(RabbitCluster.NodeName(victim), moved.Keys);
        Assert.True(moved.Values.Sum() > 0, "no service reconnected to the surviving nodes");

        // The killed node comes back with the script and rejoins its cluster.
        var restart = Stopwatch.StartNew();
        await RabbitCluster.RunScriptAsync(output, "start");
        Assert.Equal(RabbitCluster.Nodes.Select(RabbitCluster.NodeName).Order(), (await RabbitCluster.MembersAsync()).Order());
        output.WriteLine($"{RabbitCluster.NodeName(victim)} restarted and rejoined in {restart.Elapsed.TotalSeconds:0} s");
    }

    /// <summary>
    /// Two of three nodes lost: no quorum queue has a majority, and the last node pauses itself (pause_minority), so the
    /// services have no broker at all. Orders must still be accepted (or refused with a clear 503, never another 5xx or
    /// a stack trace), and once the nodes are back every accepted order is settled with nothing lost or done twice
    /// (<see cref="Invariants"/>: the same checks as the single-broker fault scenarios).
    /// </summary>
    [Fact]
    public async Task A_quorum_cluster_that_loses_two_nodes_under_load_still_takes_orders_and_loses_nothing_once_they_are_back()
    {
        await RabbitClusterFixture.EnsureAllNodesAsync(output);
        var stack = fixture.Stack;
        var cluster = fixture.Cluster;
        var vhost = fixture.VirtualHost;
        var rate = double.Parse(TestServers.Env("MP_CLUSTER_RATE", "10"), System.Globalization.CultureInfo.InvariantCulture);
        var downSeconds = int.Parse(TestServers.Env("MP_CLUSTER_DOWN_SECONDS", "30"));
        // Capacity for twice the orders of 150 s of load (FaultMarket offers twice what it is sized for): room for a slow restart.
        var market = await FaultMarket.CreateAsync(stack, "quorum-lost", (int)(rate * 150), spareNodes: 60);

        var clock = Stopwatch.StartNew();
        var stream = market.StartLoad(rate);
        IReadOnlyList<OrderStream.Placement> placements;
        DateTimeOffset quorumLost, back;
        try
        {
            await Task.Delay(TimeSpan.FromSeconds(20));

            // First the node the services are connected to; then, once they have moved, the node they moved to.
            var first = await BusiestNodeAsync(cluster, vhost, RabbitCluster.Nodes);
            await RabbitCluster.RunScriptAsync(output, "kill", first.ToString());
            var firstKilled = clock.Elapsed;
            var survivors = RabbitCluster.Nodes.Where(n => n != first).ToArray();
            await Eventually.True(async () => (await cluster.ConnectionsByNodeAsync(vhost)).Keys.Any(k => k != RabbitCluster.NodeName(first)),
                TimeSpan.FromSeconds(60), "the services to reconnect to a surviving node");
            var moved = clock.Elapsed;
            var second = await BusiestNodeAsync(cluster, vhost, survivors);
            await RabbitCluster.RunScriptAsync(output, "kill", second.ToString());
            quorumLost = DateTimeOffset.UtcNow;
            var secondKilled = clock.Elapsed;
            var last = survivors.Single(n => n != second);
            output.WriteLine($"{firstKilled.TotalSeconds,6:0.0} s: kill -9 {RabbitCluster.NodeName(first)}; services reconnected by {moved.TotalSeconds:0.0} s; " +
                             $"{secondKilled.TotalSeconds,6:0.0} s: kill -9 {RabbitCluster.NodeName(second)}: quorum lost, {RabbitCluster.NodeName(last)} alone");

            // The last node is a minority of one: it pauses and closes its listeners, so the services have no broker.
            await Eventually.True(async () => !await AnswersAsync(RabbitCluster.AmqpPort(last)), TimeSpan.FromSeconds(60),
                $"{RabbitCluster.NodeName(last)} to pause (pause_minority)");
            output.WriteLine($"{clock.Elapsed.TotalSeconds,6:0.0} s: {RabbitCluster.NodeName(last)} paused itself (its AMQP port is closed)");
            var remaining = TimeSpan.FromSeconds(downSeconds) - (clock.Elapsed - secondKilled);
            if (remaining > TimeSpan.Zero) await Task.Delay(remaining);

            var restartAt = clock.Elapsed;
            await RabbitCluster.RunScriptAsync(output, "start");
            back = DateTimeOffset.UtcNow;
            Assert.Equal(RabbitCluster.Nodes.Select(RabbitCluster.NodeName).Order(), (await RabbitCluster.MembersAsync()).Order());
            output.WriteLine($"{restartAt.TotalSeconds,6:0.0} s: both nodes started again; all three running members after " +
                             $"{(clock.Elapsed - restartAt).TotalSeconds:0.0} s (quorum lost for {(back - quorumLost).TotalSeconds:0.0} s)");

            // The load goes on a while on the recovered cluster, then stops once every order has a definite answer.
            await Task.Delay(TimeSpan.FromSeconds(20));
        }
        finally
        {
            // Also when a step above failed: the load must not go on placing orders in the background.
            placements = await stream.StopAsync();
        }
        output.WriteLine($"{clock.Elapsed.TotalSeconds,6:0.0} s: load stopped, every order answered");

        // While the quorum was lost: orders accepted (they wait in the outboxes), or refused with a clear 503.
        var acceptedWithoutQuorum = placements.Count(p => p.OrderId is not null && p.Answered > quorumLost && p.Answered < back);
        var answers = stream.Failures.Where(f => f.Status is not null).ToList();
        var transport = stream.Failures.Where(f => f.Status is null).ToList();
        output.WriteLine($"{placements.Count} orders, {acceptedWithoutQuorum} accepted while the quorum was lost; resent attempts: " +
                         string.Join(", ", answers.GroupBy(f => f.Status).Select(g => $"{g.Key} × {g.Count()}").Append($"no answer × {transport.Count}")));
        Assert.True(acceptedWithoutQuorum > 0, "no order was accepted while the quorum was lost");
        var unclear = answers.Where(f => f.Status != 503 || f.ContentType != "application/problem+json" || LooksLikeInternals(f.Text)).ToList();
        Assert.True(unclear.Count == 0, $"{unclear.Count} answers were not a clear 503: " +
                                        string.Join(" | ", unclear.Take(3).Select(f => $"{f.Status} {f.ContentType} {f.Text[..Math.Min(400, f.Text.Length)]}")));
        // The gateway never went down: a request may time out on a busy machine, but none may be refused or cut.
        Assert.True(transport.All(f => f.Text.Contains("Timeout", StringComparison.Ordinal)),
            "requests failed without an answer: " + string.Join(" | ", transport.Take(3).Select(f => f.Text)));

        // Nothing lost, nothing done twice, nothing in _error (read on the cluster).
        var outcome = await Invariants.AssertAsync(market, stream, placements, output);
        output.WriteLine($"{clock.Elapsed.TotalSeconds,6:0.0} s: settled; {outcome}");
        var queues = (await cluster.QueuesAsync(vhost)).Where(q => !RabbitCluster.Str(q, "name").StartsWith("bus-", StringComparison.Ordinal)).ToList();
        Assert.All(queues, q => Assert.Equal("quorum", RabbitCluster.Str(q, "type")));
        output.WriteLine($"quorum queue leaders after: {string.Join(", ", queues.GroupBy(q => RabbitCluster.Str(q, "leader")).Select(g => $"{g.Key} {g.Count()}"))}; " +
                         $"connections per node {string.Join(", ", (await cluster.ConnectionsByNodeAsync(vhost)).Select(c => $"{c.Key} {c.Value}"))}");
    }

    /// <summary>The candidate node with the most of the vhost's connections (the first one when none has any yet).</summary>
    private static async Task<int> BusiestNodeAsync(RabbitCluster cluster, string vhost, int[] candidates)
    {
        var connections = await cluster.ConnectionsByNodeAsync(vhost);
        return candidates.OrderByDescending(n => connections.GetValueOrDefault(RabbitCluster.NodeName(n))).First();
    }

    private static async Task<bool> AnswersAsync(int port)
    {
        using var client = new TcpClient();
        try
        {
            await client.ConnectAsync(IPAddress.Loopback, port).WaitAsync(TimeSpan.FromSeconds(2));
            return true;
        }
        catch (Exception ex) when (ex is SocketException or TimeoutException) { return false; }
    }

    /// <summary>A stack trace or an exception's name in an answer: what a client must never see.</summary>
    private static bool LooksLikeInternals(string text) =>
        text.Contains("Exception", StringComparison.Ordinal) || text.Contains("   at ", StringComparison.Ordinal);

    private static async Task PlaceAsync(HttpClient renter, bool afterKill, ConcurrentBag<(string, bool)> accepted, ConcurrentBag<string> rejected)
    {
        using var request = new HttpRequestMessage(HttpMethod.Post, "/v1/orders")
        {
            Content = JsonContent.Create(new
            {
                type = "on_demand", accelerator_model = Model, accelerator_count = 1, duration_seconds = ProofFixture.LeaseSeconds,
                max_price_per_hour = new { amount = 2000, currency = Currency },
            }),
        };
        request.Headers.Add("Idempotency-Key", Guid.NewGuid().ToString());
        try
        {
            using var response = await renter.SendAsync(request);
            var text = await response.Content.ReadAsStringAsync();
            if (response.IsSuccessStatusCode) accepted.Add(((string)JsonNode.Parse(text)!["id"]!, afterKill));
            else rejected.Add($"{(int)response.StatusCode} {text}");
        }
        catch (HttpRequestException ex) { rejected.Add(ex.Message); }
    }
}
