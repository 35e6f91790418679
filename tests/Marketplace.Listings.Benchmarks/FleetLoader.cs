using Npgsql;
using NpgsqlTypes;

namespace Marketplace.Listings.Benchmarks;

/// <summary>
/// Loads a synthetic market with binary COPY: clusters across regions and jurisdictions with fabrics and attestations, nodes
/// of every catalog model, offers of 1-4 nodes (some with two windows, some withdrawn), and some maintenance.
/// Slots and the offers' slot claims (offer_slots) are not loaded: search and the reliability recompute never read them;
/// only publishing or changing an offer does.
/// </summary>
internal static class FleetLoader
{
    public static readonly string[] Models =
        ["h100-sxm", "h100-pcie", "h200", "b200", "a100-80gb", "a100-40gb", "l40s", "rtx-4090", "mi300x", "ascend-910b", "kunlun-r200", "mlu370", "dcu-z100"];
    private static readonly Dictionary<string, int> Memory = new()
    {
        ["h100-sxm"] = 80, ["h100-pcie"] = 80, ["h200"] = 141, ["b200"] = 180, ["a100-80gb"] = 80, ["a100-40gb"] = 40, ["l40s"] = 48,
        ["rtx-4090"] = 24, ["mi300x"] = 192, ["ascend-910b"] = 64, ["kunlun-r200"] = 32, ["mlu370"] = 48, ["dcu-z100"] = 32,
    };
    public static readonly (string Region, string Jurisdiction)[] Places =
    [
        ("cn-east", "CN"), ("cn-north", "CN"), ("cn-south", "CN"), ("cn-west", "CN"), ("eu-west", "DE"), ("eu-west", "FR"),
        ("eu-north", "SE"), ("us-east", "US"), ("us-west", "US"), ("ap-southeast", "SG"), ("ap-northeast", "JP"), ("me-central", "AE"),
    ];
    private static readonly string[] Fabrics = ["infiniband", "roce", "ethernet"];
    private static readonly int[] Gbps = [100, 200, 400, 800];

    public sealed record Loaded(int Clusters, int Nodes, int Offers, int ActiveOffers);

    public static async Task<Loaded> LoadAsync(NpgsqlConnection c, int clusters, int nodesPerCluster, DateTimeOffset now, int seed)
    {
        var random = new Random(seed);
        var created = now.AddDays(-40).UtcDateTime;
        var clusterRows = new List<(Guid Id, Guid Org, int Place, string Fabric, int Gbps, int? Ppm)>();
        for (var i = 0; i < clusters; i++)
            clusterRows.Add((Guid.CreateVersion7(), Guid.CreateVersion7(), random.Next(Places.Length), Fabrics[random.Next(3)], Gbps[random.Next(4)],
                random.Next(10) == 0 ? null : 950_000 + random.Next(50_001)));

        await using (var w = await c.BeginBinaryImportAsync(
            "COPY listings.clusters (id, provider_org_id, name, region, jurisdiction, fabric, fabric_gbps, datacenter_tier, reliability_ppm, created_at) FROM STDIN (FORMAT BINARY)"))
        {
            foreach (var (cl, i) in clusterRows.Select((x, i) => (x, i)))
            {
                await w.StartRowAsync();
                await w.WriteAsync(cl.Id); await w.WriteAsync(cl.Org); await w.WriteAsync("bench-" + i);
                await w.WriteAsync(Places[cl.Place].Region); await w.WriteAsync(Places[cl.Place].Jurisdiction);
                await w.WriteAsync(cl.Fabric); await w.WriteAsync(cl.Gbps, NpgsqlDbType.Integer); await w.WriteAsync(1 + random.Next(4), NpgsqlDbType.Integer);
                if (cl.Ppm is { } p) await w.WriteAsync(p, NpgsqlDbType.Integer); else await w.WriteNullAsync();
                await w.WriteAsync(created, NpgsqlDbType.TimestampTz);
            }
            await w.CompleteAsync();
        }

        await using (var w = await c.BeginBinaryImportAsync(
            "COPY listings.cluster_attestations (cluster_id, kind, level, evidence_ref, expires_at) FROM STDIN (FORMAT BINARY)"))
        {
            foreach (var cl in clusterRows)
                foreach (var kind in new[] { "data-residency", "iso27001", "mlps", "soc2" }.Where(_ => random.Next(2) == 0))
                {
                    await w.StartRowAsync();
                    await w.WriteAsync(cl.Id); await w.WriteAsync(kind);
                    if (kind == "mlps") await w.WriteAsync(2 + random.Next(3), NpgsqlDbType.Integer); else await w.WriteNullAsync();
                    await w.WriteAsync("bench://" + kind);
                    // One in ten has expired.
                    await w.WriteAsync(now.AddDays(random.Next(10) == 0 ? -5 : 200).UtcDateTime, NpgsqlDbType.TimestampTz);
                }
            await w.CompleteAsync();
        }

        var nodes = new List<(Guid Id, int Cluster, string Model, int Count, int? Ppm, bool Ready)>();
        foreach (var (cl, ci) in clusterRows.Select((x, i) => (x, i)))
        {
            // A cluster is mostly one model, as real ones are.
            var model = Models[random.Next(Models.Length)];
            for (var n = 0; n < nodesPerCluster; n++)
                nodes.Add((Guid.CreateVersion7(), ci, random.Next(10) == 0 ? Models[random.Next(Models.Length)] : model,
                    new[] { 8, 8, 8, 4, 2, 1 }[random.Next(6)], cl.Ppm is null ? null : Math.Min(1_000_000, cl.Ppm.Value + random.Next(-20_000, 20_000)),
                    random.Next(10) > 0));
        }
        await using (var w = await c.BeginBinaryImportAsync("""
            COPY listings.nodes (id, cluster_id, hostname, accelerator_model, accelerator_count, created_at, gpu_memory_gb, cpu_cores, ram_gb,
                                 disk_gb, nvlink_domain, health, verified, last_heartbeat_at, reliability_ppm) FROM STDIN (FORMAT BINARY)
            """))
        {
            foreach (var (n, i) in nodes.Select((x, i) => (x, i)))
            {
                await w.StartRowAsync();
                await w.WriteAsync(n.Id); await w.WriteAsync(clusterRows[n.Cluster].Id); await w.WriteAsync($"node-{i}");
                await w.WriteAsync(n.Model); await w.WriteAsync(n.Count, NpgsqlDbType.Integer); await w.WriteAsync(created, NpgsqlDbType.TimestampTz);
                await w.WriteAsync(Memory[n.Model], NpgsqlDbType.Integer); await w.WriteAsync(128, NpgsqlDbType.Integer);
                await w.WriteAsync(2048, NpgsqlDbType.Integer); await w.WriteAsync(15000, NpgsqlDbType.Integer); await w.WriteAsync($"rack-{i % 9}");
                await w.WriteAsync(n.Ready ? "healthy" : "unhealthy"); await w.WriteAsync(n.Ready);
                await w.WriteAsync(now.UtcDateTime, NpgsqlDbType.TimestampTz);
                if (n.Ppm is { } p) await w.WriteAsync(p, NpgsqlDbType.Integer); else await w.WriteNullAsync();
            }
            await w.CompleteAsync();
        }

        // Offers: consecutive nodes of one cluster and model, 1-4 at a time.
        var offers = 0;
        var active = 0;
        var maintenance = new List<(Guid Node, DateTime From, DateTime To)>();
        await using (var w = await c.BeginBinaryImportAsync("""
            COPY listings.offers (id, provider_org_id, cluster_id, node_ids, accelerator_model, region, jurisdiction, accelerator_count,
                                  window_start, window_end, windows, ask_amount, ask_currency, min_lease_seconds, interruptible_allowed,
                                  interruptible_floor_amount, preemption_notice_seconds, sla_level, node_count, per_node, fabric, fabric_gbps,
                                  ready, reliability_ppm, status, created_at, withdrawn_at) FROM STDIN (FORMAT BINARY)
            """))
        {
            var i = 0;
            while (i < nodes.Count)
            {
                var group = new List<int> { i };
                var take = 1 + random.Next(4);
                while (group.Count < take && i + group.Count < nodes.Count && nodes[i + group.Count].Cluster == nodes[i].Cluster
                       && nodes[i + group.Count].Model == nodes[i].Model) group.Add(i + group.Count);
                i += group.Count;
                var cl = clusterRows[nodes[group[0]].Cluster];
                var model = nodes[group[0]].Model;
                var start = now.AddHours(random.Next(-48, 48)).UtcDateTime;
                var windows = new List<NpgsqlRange<DateTime>> { new(start, true, start.AddHours(4 + random.Next(200)), false) };
                if (random.Next(4) == 0)
                {
                    var s2 = windows[0].UpperBound.AddHours(1 + random.Next(24));
                    windows.Add(new NpgsqlRange<DateTime>(s2, true, s2.AddHours(4 + random.Next(100)), false));
                }
                var withdrawn = random.Next(10) == 0;
                var currency = random.Next(5) == 0 ? "USD" : "CNY";
                var ask = 100 + random.Next(4000);
                var interruptible = random.Next(2) == 0;
                var id = Guid.CreateVersion7();
                var ppms = group.Select(g => nodes[g].Ppm).ToList();
                await w.StartRowAsync();
                await w.WriteAsync(id); await w.WriteAsync(cl.Org); await w.WriteAsync(cl.Id);
                await w.WriteAsync(group.Select(g => nodes[g].Id).ToArray()); await w.WriteAsync(model);
                await w.WriteAsync(Places[cl.Place].Region); await w.WriteAsync(Places[cl.Place].Jurisdiction);
                await w.WriteAsync(group.Sum(g => nodes[g].Count), NpgsqlDbType.Integer);
                await w.WriteAsync(windows[0].LowerBound, NpgsqlDbType.TimestampTz); await w.WriteAsync(windows[^1].UpperBound, NpgsqlDbType.TimestampTz);
                await w.WriteAsync(windows.ToArray(), NpgsqlDbType.TimestampTzMultirange);
                await w.WriteAsync((long)ask, NpgsqlDbType.Bigint); await w.WriteAsync(currency); await w.WriteAsync(3600, NpgsqlDbType.Integer);
                await w.WriteAsync(interruptible);
                if (interruptible) await w.WriteAsync((long)(ask / 2), NpgsqlDbType.Bigint); else await w.WriteNullAsync();
                await w.WriteAsync(interruptible ? 300 : 0, NpgsqlDbType.Integer);
                await w.WriteAsync(new[] { "none", "standard", "standard", "premium" }[random.Next(4)]);
                await w.WriteAsync(group.Count, NpgsqlDbType.Integer); await w.WriteAsync(group.Min(g => nodes[g].Count), NpgsqlDbType.Integer);
                await w.WriteAsync(cl.Fabric); await w.WriteAsync(cl.Gbps, NpgsqlDbType.Integer);
                await w.WriteAsync(group.All(g => nodes[g].Ready));
                if (ppms.All(p => p is not null)) await w.WriteAsync((int)ppms.Average(p => p!.Value), NpgsqlDbType.Integer); else await w.WriteNullAsync();
                await w.WriteAsync(withdrawn ? "withdrawn" : "active");
                await w.WriteAsync(created.AddSeconds(offers), NpgsqlDbType.TimestampTz);
                if (withdrawn) await w.WriteAsync(now.UtcDateTime, NpgsqlDbType.TimestampTz); else await w.WriteNullAsync();
                offers++;
                if (withdrawn) continue;
                active++;
                if (random.Next(20) == 0)
                {
                    var from = now.AddHours(random.Next(0, 72)).UtcDateTime;
                    maintenance.Add((nodes[group[0]].Id, from, from.AddHours(2 + random.Next(6))));
                }
            }
            await w.CompleteAsync();
        }
        await using (var w = await c.BeginBinaryImportAsync("COPY listings.node_maintenance (id, node_id, during, reason, created_at) FROM STDIN (FORMAT BINARY)"))
        {
            foreach (var (node, from, to) in maintenance)
            {
                await w.StartRowAsync();
                await w.WriteAsync(Guid.CreateVersion7()); await w.WriteAsync(node);
                await w.WriteAsync(new NpgsqlRange<DateTime>(from, true, to, false), NpgsqlDbType.TimestampTzRange);
                await w.WriteAsync("bench"); await w.WriteAsync(now.UtcDateTime, NpgsqlDbType.TimestampTz);
            }
            await w.CompleteAsync();
        }
        await using (var analyze = new NpgsqlCommand("ANALYZE", c)) await analyze.ExecuteNonQueryAsync();
        return new Loaded(clusters, nodes.Count, offers, active);
    }
}
