using System.Collections.Concurrent;
using System.Globalization;
using System.Net.Http.Headers;
using System.Net.Http.Json;
using System.Text.Json.Nodes;

namespace Marketplace.AgentSim;

/// <summary>
/// Provider agents for a whole fleet: registers clusters and nodes through the gateway with the provider's key, makes one
/// node-scoped key per node, then heartbeats every node with the inventory it "sees" until cancelled. Usable from the demo:
/// <c>await sim.RegisterAsync(ct)</c>, publish offers on <see cref="Nodes"/>, then <c>_ = sim.RunAsync(ct)</c>.
/// </summary>
public sealed class AgentSimulator(AgentSimOptions options, TextWriter? log = null) : IDisposable
{
    private readonly HttpClient _http = new() { BaseAddress = options.Gateway, Timeout = TimeSpan.FromSeconds(30) };
    private readonly List<SimulatedNode> _nodes = [];
    private readonly List<Guid> _clusters = [];
    private long _beats, _failures;
    private readonly ConcurrentDictionary<Guid, bool> _failed = new();
    private readonly ConcurrentDictionary<Guid, bool> _silent = new();

    public IReadOnlyList<SimulatedNode> Nodes => _nodes;
    public IReadOnlyList<Guid> ClusterIds => _clusters;
    public Guid? ProviderOrgId { get; private set; }
    public long HeartbeatsSent => Interlocked.Read(ref _beats);
    public long HeartbeatsFailed => Interlocked.Read(ref _failures);

    /// <summary>Registers the clusters, nodes and node keys (once; a second call returns the same nodes).</summary>
    public async Task<IReadOnlyList<SimulatedNode>> RegisterAsync(CancellationToken ct)
    {
        if (_nodes.Count > 0) return _nodes;
        var memory = new Dictionary<string, int>();
        foreach (var a in (await SendAsync(HttpMethod.Get, "/v1/accelerators", null, options.ProviderKey, ct))["data"]!.AsArray())
            memory[(string)a!["id"]!] = (int)a["memory_gb"]!;
        foreach (var entry in options.Fleet.Where(e => !memory.ContainsKey(e.Model)))
            throw new InvalidOperationException($"The catalog has no {entry.Model}; it has {string.Join(", ", memory.Keys.Order())}.");

        var plan = new List<(int Cluster, FleetEntry Entry, int Index)>();
        for (var c = 0; c < options.Clusters; c++)
            foreach (var entry in options.Fleet)
                for (var i = 0; i < entry.Nodes; i++) plan.Add((c, entry, i));
        var total = plan.Count;
        var mismatched = new HashSet<int>(Enumerable.Range(0, Math.Min(options.Mismatched, total)));
        var dead = new HashSet<int>(Enumerable.Range(total - Math.Min(options.Dead, total), Math.Min(options.Dead, total)));

        var suffix = Guid.NewGuid().ToString("N")[..6];
        for (var c = 0; c < options.Clusters; c++)
        {
            var cluster = await SendAsync(HttpMethod.Post, "/v1/clusters", new
            {
                name = options.Clusters == 1 ? options.ClusterName : $"{options.ClusterName}-{c:D4}",
                region = options.Region, jurisdiction = options.Jurisdiction, fabric = options.Fabric, fabric_gbps = options.FabricGbps,
                datacenter_tier = 3,
                compliance = options.Compliance.Select(a => new
                {
                    kind = a.Kind, level = a.Level, evidence_ref = $"sim://{a.Kind}/{suffix}", expires_at = DateTimeOffset.UtcNow.AddYears(1),
                }),
            }, options.ProviderKey, ct);
            _clusters.Add((Guid)cluster["id"]!);
            ProviderOrgId = (Guid)cluster["provider_org_id"]!;
        }

        var registered = new ConcurrentDictionary<int, SimulatedNode>();
        await Parallel.ForEachAsync(Enumerable.Range(0, total), new ParallelOptions { MaxDegreeOfParallelism = options.Concurrency, CancellationToken = ct },
            async (n, token) =>
            {
                var (c, entry, i) = plan[n];
                var hostname = $"{entry.Model}-{i:D3}.c{c:D4}.{suffix}.sim";
                var node = await SendAsync(HttpMethod.Post, $"/v1/clusters/{_clusters[c]}/nodes", new
                {
                    hostname, accelerator_model = entry.Model, accelerator_count = entry.AcceleratorsPerNode,
                    cpu_cores = 128, ram_gb = 2048, disk_gb = 15000,
                    nvlink_domain = $"rack-{i / 4:D2}",
                }, options.ProviderKey, token);
                var nodeId = (Guid)node["id"]!;
                var key = await SendAsync(HttpMethod.Post, $"/v1/orgs/{ProviderOrgId}/api-keys",
                    new { name = "agent " + hostname[..Math.Min(hostname.Length, 90)], node_id = nodeId }, options.ProviderKey, token);
                registered[n] = new SimulatedNode(nodeId, _clusters[c], hostname, entry.Model, entry.AcceleratorsPerNode, memory[entry.Model],
                    (string)key["key"]!, mismatched.Contains(n), dead.Contains(n));
            });
        _nodes.AddRange(registered.OrderBy(r => r.Key).Select(r => r.Value));
        log?.WriteLine($"registered {_clusters.Count} cluster(s) with {_nodes.Count} nodes " +
            $"({string.Join(", ", options.Fleet.Select(e => $"{e.Nodes}×{e.AcceleratorsPerNode} {e.Model}"))} each); " +
            $"{mismatched.Count} will misreport, {dead.Count} will fall silent");
        return _nodes;
    }

    /// <summary>One heartbeat from every node that is alive (a dead node sends only its first).</summary>
    public Task HeartbeatOnceAsync(bool first, CancellationToken ct) =>
        HeartbeatAsync(_nodes.Where(n => first || !n.Dead), ct);

    private async Task HeartbeatAsync(IEnumerable<SimulatedNode> nodes, CancellationToken ct) =>
        await Parallel.ForEachAsync(nodes.Where(n => !_silent.ContainsKey(n.NodeId)), new ParallelOptions { MaxDegreeOfParallelism = options.Concurrency, CancellationToken = ct },
            async (node, token) =>
            {
                try
                {
                    await SendAsync(HttpMethod.Post, "/v1/agent/heartbeats", new
                    {
                        inventory = new
                        {
                            accelerator_model = node.Model,
                            accelerator_count = node.Mismatched ? node.AcceleratorCount - 1 : node.AcceleratorCount,
                            gpu_memory_gb = node.GpuMemoryGb, cpu_cores = 128, ram_gb = 2048, disk_gb = 15000,
                        },
                        healthy = !_failed.ContainsKey(node.NodeId),
                    }, node.AgentKey, token);
                    Interlocked.Increment(ref _beats);
                }
                catch (Exception ex) when (ex is HttpRequestException or SimulatorException or TaskCanceledException && !token.IsCancellationRequested)
                {
                    // An agent keeps going when the platform is briefly unreachable; the node may be marked unhealthy meanwhile.
                    Interlocked.Increment(ref _failures);
                    log?.WriteLine($"heartbeat of {node.Hostname} failed: {ex.Message}");
                }
            });

    /// <summary>The node's agent goes silent (power or network lost): it sends no more heartbeats.</summary>
    public void SilenceNode(Guid nodeId) => _silent[nodeId] = true;

    /// <summary>
    /// The node's hardware fails: from now on its agent reports it unhealthy, starting with a heartbeat sent at once.
    /// </summary>
    public async Task FailNodeAsync(Guid nodeId, CancellationToken ct)
    {
        var node = _nodes.Single(n => n.NodeId == nodeId);
        _failed[nodeId] = true;
        await SendAsync(HttpMethod.Post, "/v1/agent/heartbeats", new
        {
            inventory = new
            {
                accelerator_model = node.Model, accelerator_count = node.AcceleratorCount,
                gpu_memory_gb = node.GpuMemoryGb, cpu_cores = 128, ram_gb = 2048, disk_gb = 15000,
            },
            healthy = false,
            message = "GPU fell off the bus (Xid 79)",
        }, node.AgentKey, ct);
    }

    /// <summary>
    /// Registers (if not done yet), heartbeats every node at once, then each node every interval until
    /// <paramref name="ct"/> is cancelled. After the first round each node keeps a phase of its own, spread evenly over
    /// the interval, as agents that booted at different times do (<see cref="AgentSimOptions.Lockstep"/>: all at once).
    /// </summary>
    public async Task RunAsync(CancellationToken ct)
    {
        await RegisterAsync(ct);
        var interval = options.HeartbeatInterval;
        var alive = _nodes.Where(n => !n.Dead).ToList();
        var start = DateTimeOffset.UtcNow;
        try
        {
            await HeartbeatOnceAsync(first: true, ct);
            log?.WriteLine($"heartbeating {alive.Count} nodes every {interval.TotalSeconds.ToString(CultureInfo.InvariantCulture)} s" +
                (options.Lockstep ? ", all at once" : ", spread over the interval"));
            // Node i of n is due at start + (k + (i + 1) / n) × interval (k = 0, 1, ...: never later than an interval after the
            // first round); a tick sends every node that is due, so a slow round delays the next ones instead of skipping them.
            var due = alive.Select((_, i) => start + interval * (options.Lockstep ? 1 : (i + 1.0) / alive.Count)).ToArray();
            var slices = options.Lockstep ? 1 : Math.Clamp(alive.Count, 1, 50);
            using var timer = new PeriodicTimer(interval / slices);
            while (await timer.WaitForNextTickAsync(ct))
            {
                var now = DateTimeOffset.UtcNow;
                var batch = Enumerable.Range(0, alive.Count).Where(i => due[i] <= now).ToList();
                foreach (var i in batch) due[i] += interval;
                if (batch.Count > 0) await HeartbeatAsync(batch.Select(i => alive[i]), ct);
            }
        }
        catch (OperationCanceledException) when (ct.IsCancellationRequested)
        {
        }
    }

    private async Task<JsonNode> SendAsync(HttpMethod method, string path, object? body, string key, CancellationToken ct)
    {
        using var request = new HttpRequestMessage(method, path) { Content = body is null ? null : JsonContent.Create(body) };
        request.Headers.Authorization = new AuthenticationHeaderValue("Bearer", key);
        using var response = await _http.SendAsync(request, ct);
        var text = await response.Content.ReadAsStringAsync(ct);
        if (!response.IsSuccessStatusCode) throw new SimulatorException($"{method} {path} → {(int)response.StatusCode}: {text}");
        return JsonNode.Parse(text)!;
    }

    public void Dispose() => _http.Dispose();
}

public sealed class SimulatorException(string message) : Exception(message);
