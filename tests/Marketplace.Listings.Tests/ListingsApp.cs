using System.Collections.Concurrent;
using System.Net;
using System.Net.Http.Json;
using System.Text.Json;
using Dapper;
using MassTransit;
using Marketplace.Contracts;
using Marketplace.Listings.Health;
using Marketplace.ServiceDefaults.Web;
using Microsoft.Extensions.Hosting;
using Marketplace.ServiceDefaults.Hosting;
using Marketplace.Testing;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Time.Testing;
using Xunit;

namespace Marketplace.Listings.Tests;

/// <summary>
/// The Listings service on its own database and virtual host, a fake clock, and a probe queue bound to the events it
/// publishes (what another service would receive).
/// </summary>
public class ListingsApp : IAsyncLifetime
{
    public static readonly DateTimeOffset T0 = new(2030, 1, 1, 0, 0, 0, TimeSpan.Zero);
    public const int MinLeaseSeconds = 60;
    public const int HeartbeatTimeoutSeconds = 30;

    public static readonly JsonSerializerOptions Json = CreateJson();

    private TestDatabase? _db;
    private TestVirtualHost? _vhost;
    private ServiceFactory<Program>? _factory;
    private HostReceiveEndpointHandle? _probe;

    public FakeTimeProvider Clock { get; } = new(T0);
    public ConcurrentQueue<object> Received { get; } = new();
    public ServiceFactory<Program> Factory => _factory ?? throw new InvalidOperationException("not started");
    public TestDatabase Database => _db ?? throw new InvalidOperationException("not started");

    protected virtual void ConfigureServices(IServiceCollection services) { }

    public virtual async Task InitializeAsync()
    {
        _db = await TestDatabase.CreateAsync();
        _vhost = await TestVirtualHost.CreateAsync();
        _factory = new ServiceFactory<Program>("listings", _db, _vhost, services =>
        {
            services.AddSingleton<TimeProvider>(Clock);
            // Tests run the health monitor themselves, at the instants they choose.
            services.Remove(services.Single(d => d.ServiceType == typeof(IHostedService) && d.ImplementationType == typeof(NodeHealthMonitorLoop)));
            ConfigureServices(services);
        }, new Dictionary<string, string?>
        {
            ["Market:MinLeaseSeconds"] = MinLeaseSeconds.ToString(),
            ["Listings:HeartbeatTimeoutSeconds"] = HeartbeatTimeoutSeconds.ToString(),
        });
        _ = _factory.Server; // starts the host: migrations, bus, relay

        _probe = await Factory.Services.GetRequiredService<IBus>().ConnectProbeAsync("listings-test-probe", e =>
        {
            e.Handler<NodeRegistered>(ctx => Record(ctx.Message));
            e.Handler<OfferPublished>(ctx => Record(ctx.Message));
            e.Handler<OfferWithdrawn>(ctx => Record(ctx.Message));
            e.Handler<NodeHealthChanged>(ctx => Record(ctx.Message));
            e.Handler<NodeMaintenanceScheduled>(ctx => Record(ctx.Message));
            e.Handler<NodeMaintenanceCancelled>(ctx => Record(ctx.Message));
            e.Handler<AcceleratorModelChanged>(ctx => Record(ctx.Message));
        });
    }

    private Task Record(object message)
    {
        Received.Enqueue(message);
        return Task.CompletedTask;
    }

    public async Task DisposeAsync()
    {
        if (_probe is not null) await _probe.StopAsync();
        if (_factory is not null) await _factory.DisposeAsync();
        if (_vhost is not null) await _vhost.DisposeAsync();
        if (_db is not null) await _db.DisposeAsync();
    }

    public HttpClient Provider(Guid org) => Factory.ClientFor(org, "provider");
    public HttpClient Renter(Guid org) => Factory.ClientFor(org, "renter");
    public HttpClient Admin(Guid org) => Factory.ClientFor(org, "admin");
    public NodeHealthMonitor Monitor => Factory.Services.GetRequiredService<NodeHealthMonitor>();

    /// <summary>A node's agent, as the gateway relays a node-scoped key of <paramref name="org"/> for <paramref name="node"/>.</summary>
    public HttpClient Agent(Guid org, Guid node)
    {
        var client = Factory.ClientFor(org, "provider");
        client.DefaultRequestHeaders.Add(Caller.NodeHeader, node.ToString());
        return client;
    }

    /// <summary>The inventory a node was registered with, as its agent would report it.</summary>
    public static object InventoryOf(Node node, int? count = null, string? model = null) => new
    {
        inventory = new { accelerator_model = model ?? node.AcceleratorModel, accelerator_count = count ?? node.AcceleratorCount, gpu_memory_gb = node.GpuMemoryGb },
    };

    public async Task<T> Latest<T>(Func<T, bool> match, string what) where T : class =>
        await Eventually.Get(() => Task.FromResult(Received.OfType<T>().LastOrDefault(match)), _ => true, what: what);

    public static async Task<T> ReadAsync<T>(HttpResponseMessage response, HttpStatusCode expected)
    {
        var body = await response.Content.ReadAsStringAsync();
        Assert.True(response.StatusCode == expected, $"expected {expected}, got {(int)response.StatusCode}: {body}");
        return JsonSerializer.Deserialize<T>(body, Json)!;
    }

    public async Task<Cluster> CreateClusterAsync(HttpClient client, string region = "cn-east", string jurisdiction = "CN") =>
        await ReadAsync<Cluster>(await client.PostAsJsonAsync("/v1/clusters",
            new { name = "cluster " + Guid.NewGuid().ToString("N")[..6], region, jurisdiction }), HttpStatusCode.Created);

    public async Task<Node> CreateNodeAsync(HttpClient client, Guid clusterId, string model = "h100-sxm", int count = 8, string? hostname = null) =>
        await ReadAsync<Node>(await client.PostAsJsonAsync($"/v1/clusters/{clusterId}/nodes",
            new { hostname = hostname ?? "gpu-" + Guid.NewGuid().ToString("N")[..8], accelerator_model = model, accelerator_count = count }),
            HttpStatusCode.Created);

    public static object OfferBody(Guid clusterId, IEnumerable<Guid> nodeIds, DateTimeOffset start, DateTimeOffset end,
        long amount = 235, string currency = "CNY", int minLease = MinLeaseSeconds, bool interruptible = false) =>
        new
        {
            cluster_id = clusterId, node_ids = nodeIds.ToArray(), window_start = start, window_end = end,
            ask_per_hour = new { amount, currency }, min_lease_seconds = minLease, interruptible_allowed = interruptible,
        };

    public async Task<Offer> PublishOfferAsync(HttpClient client, Guid clusterId, IEnumerable<Guid> nodeIds, DateTimeOffset start,
        DateTimeOffset end, long amount = 235, string currency = "CNY") =>
        await ReadAsync<Offer>(await client.PostAsJsonAsync("/v1/offers", OfferBody(clusterId, nodeIds, start, end, amount, currency)),
            HttpStatusCode.Created);

    /// <summary>Every row count of the schema plus the outbox sequence (which moves on every outbox insert, relayed or not).</summary>
    /// <summary>A 400 problem that names <paramref name="field"/> ("malformed": an unreadable body).</summary>
    public static async Task AssertRefusedAsync(HttpResponseMessage response, string field)
    {
        var problem = await ReadAsync<Problem>(response, HttpStatusCode.BadRequest);
        if (field == "malformed") Assert.EndsWith("/malformed-request", problem.Type);
        else Assert.Contains(field + ":", problem.Detail);
    }

    public async Task<Snapshot> SnapshotAsync()
    {
        await using var c = Database.OpenAdmin();
        return await c.QuerySingleAsync<Snapshot>("""
            SELECT (SELECT count(*) FROM listings.clusters) AS clusters,
                   (SELECT count(*) FROM listings.nodes) AS nodes,
                   (SELECT count(*) FROM listings.gpu_slots) AS slots,
                   (SELECT count(*) FROM listings.offers) AS offers,
                   (SELECT count(*) FROM listings.offers WHERE status = 'active') AS activeoffers,
                   (SELECT count(*) FROM listings.offer_slots) AS offerslots,
                   (SELECT count(*) FROM listings.cluster_attestations) AS attestations,
                   (SELECT coalesce(md5(string_agg(a::text, ',' ORDER BY a.cluster_id, a.kind)), '') FROM listings.cluster_attestations a) AS attestationshash,
                   (SELECT count(*) FROM listings.node_maintenance) AS maintenance,
                   (SELECT count(*) FROM listings.node_health_periods) AS healthperiods,
                   (SELECT coalesce(md5(string_agg(n::text, ',' ORDER BY n.id)), '') FROM listings.nodes n) AS nodeshash,
                   (SELECT coalesce(md5(string_agg(o::text, ',' ORDER BY o.id)), '') FROM listings.offers o) AS offershash,
                   (SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM listings.outbox_id_seq) AS outboxseq
            """);
    }

    private static JsonSerializerOptions CreateJson()
    {
        var o = new JsonSerializerOptions(JsonSerializerDefaults.Web);
        ServiceDefaultsExtensions.ConfigureApiJson(o);
        return o;
    }
}

public sealed record Snapshot(long Clusters, long Nodes, long Slots, long Offers, long ActiveOffers, long OfferSlots, long Attestations, string AttestationsHash,
    long Maintenance, long HealthPeriods, string NodesHash, string OffersHash, long OutboxSeq);

// The API's shapes as a client reads them.
public sealed record Cluster(Guid Id, Guid ProviderOrgId, string Name, string Region, string Jurisdiction, DateTimeOffset CreatedAt, Node[]? Nodes,
    string Fabric = "", int FabricGbps = 0, int? DatacenterTier = null, Attestation[]? Compliance = null, decimal? Reliability = null, int NodeCount = 0);
public sealed record Attestation(string Kind, int? Level, string EvidenceRef, DateTimeOffset ExpiresAt);
public sealed record Node(Guid Id, Guid ClusterId, string Hostname, string AcceleratorModel, int AcceleratorCount, Slot[] Slots, DateTimeOffset CreatedAt,
    int GpuMemoryGb = 0, string Health = "", bool Verified = false, string? StatusReason = null, DateTimeOffset? LastHeartbeatAt = null,
    decimal? Reliability = null, Maintenance[]? Maintenance = null, int? CpuCores = null, int? RamGb = null, string? NvlinkDomain = null,
    string? HealthReason = null, string? VerificationReason = null);
public sealed record Slot(Guid Id, int Index, int? NvlinkIsland = null);
public sealed record Maintenance(Guid Id, Guid NodeId, DateTimeOffset Start, DateTimeOffset End, string? Reason, DateTimeOffset? CancelledAt);
public sealed record Offer(Guid Id, Guid ProviderOrgId, Guid ClusterId, Guid[] NodeIds, string AcceleratorModel, string Region,
    string Jurisdiction, int AcceleratorCount, DateTimeOffset WindowStart, DateTimeOffset WindowEnd, Money AskPerHour,
    int MinLeaseSeconds, bool InterruptibleAllowed, string Status, DateTimeOffset CreatedAt,
    TimeWindow[]? Windows = null, Money? InterruptibleFloorPerHour = null, int PreemptionNoticeSeconds = 0, string SlaLevel = "",
    int NodeCount = 0, int PerNode = 0, string Fabric = "", int FabricGbps = 0, bool Verified = false, decimal? Reliability = null,
    DateTimeOffset? UpdatedAt = null, OfferedSlot[]? Slots = null);
public sealed record OfferedSlot(Guid Id, Guid NodeId, int Index, int? NvlinkIsland);
public sealed record Page<T>(T[] Data, string? NextCursor);
public sealed record Problem(string Type, string Title, int Status, string? Detail);
public sealed record AcceleratorInfo(string Id, string Vendor, string Name, int MemoryGb, decimal? Bf16Tflops, string Interconnect);
