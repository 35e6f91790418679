using System.Net;
using System.Net.Http.Json;
using System.Text;
using CsCheck;
using Dapper;
using Marketplace.Contracts;
using Xunit;

namespace Marketplace.Listings.Tests;

/// <summary>Offers generated once on their own database; every query is checked against a brute-force filter of them.</summary>
public sealed class SearchFixture : ListingsApp
{
    public static readonly string[] Models = ["h100-sxm", "a100-80gb", "ascend-910b", "l40s"];
    public static readonly Dictionary<string, string> Interconnects = new()
    {
        ["h100-sxm"] = "nvlink4", ["a100-80gb"] = "nvlink3", ["ascend-910b"] = "hccs", ["l40s"] = "pcie4",
    };
    public static readonly (string Region, string Jurisdiction, string Fabric, int Gbps)[] Places =
        [("cn-east", "CN", "infiniband", 400), ("cn-north", "CN", "roce", 200), ("eu-west", "DE", "ethernet", 100), ("eu-west", "FR", "infiniband", 800)];
    public static readonly string[] ComplianceTokens = ["data-residency", "iso27001", "soc2", "mlps", "mlps-2", "mlps-3"];

    /// <summary>Attestations per place: kind, MLPS level, hours after T0 when it expires (some expire before the searches).</summary>
    private static readonly (string Kind, int? Level, int ExpiresHours)[][] Attestations =
    [
        [("mlps", 3, 9000), ("data-residency", null, 9000)],
        [("mlps", 2, 1), ("data-residency", null, 9000)],
        [("iso27001", null, 9000), ("soc2", null, 9000)],
        [("iso27001", null, 1)],
    ];

    public List<Offer> Offers { get; } = [];
    /// <summary>What each offer sells, as the generator asked for it: accelerators in all, the fewest on a node, nodes.</summary>
    public Dictionary<Guid, (int Count, int PerNode, int Nodes)> Shapes { get; } = [];
    public Dictionary<Guid, int> PlaceOfCluster { get; } = [];
    /// <summary>Active maintenance windows per node.</summary>
    public Dictionary<Guid, List<TimeWindow>> MaintenanceOf { get; } = [];

    public override async Task InitializeAsync()
    {
        await base.InitializeAsync();
        var random = new Random(20300101);
        var providers = new[] { Guid.NewGuid(), Guid.NewGuid() };
        var clusters = new List<(Guid Org, Cluster Cluster)>();
        for (var p = 0; p < Places.Length; p++)
        {
            var (region, jurisdiction, fabric, gbps) = Places[p];
            var org = providers[p % 2];
            var cluster = await ReadAsync<Cluster>(await Provider(org).PostAsJsonAsync("/v1/clusters", new
            {
                name = "c" + p, region, jurisdiction, fabric, fabric_gbps = gbps,
                compliance = Attestations[p].Select(a => new { kind = a.Kind, level = a.Level, evidence_ref = "ev-" + p, expires_at = T0.AddHours(a.ExpiresHours) }),
            }), HttpStatusCode.Created);
            clusters.Add((org, cluster));
            PlaceOfCluster[cluster.Id] = p;
        }
        for (var i = 0; i < 48; i++)
        {
            var (org, cluster) = clusters[random.Next(clusters.Count)];
            var client = Provider(org);
            var model = Models[random.Next(Models.Length)];
            var nodes = new List<Guid>();
            var counts = new List<int>();
            for (var n = random.Next(1, 4); n > 0; n--)
            {
                counts.Add(random.Next(1, 9));
                nodes.Add((await CreateNodeAsync(client, cluster.Id, model, counts[^1])).Id);
            }
            var start = T0.AddHours(random.Next(-3, 12));
            var end = start.AddHours(random.Next(1, 12));
            if (end <= T0) end = T0.AddHours(1);
            if (i == 1) (start, end) = (T0.AddHours(-3), T0.AddHours(1)); // one that is over by the time of the searches
            object[] windows = random.Next(3) == 0 && i != 1
                ? [new { start, end }, new { start = end.AddHours(random.Next(1, 4)), end = end.AddHours(random.Next(5, 9)) }]
                : [new { start, end }];
            // A third offer part of their nodes; the generator, not the service, says what each offer's count and shape are.
            var gpus = random.Next(3) == 0 ? counts.Select(c => random.Next(1, c + 1)).ToArray() : null;
            Offers.Add(await PublishAsync(client, cluster.Id, nodes, gpus ?? counts.ToArray(), gpus is not null, windows, random));
            // Sometimes the rest of a node goes in a second offer for the same windows (two active offers on one node).
            if (gpus is [var part] && part < counts[0] && random.Next(2) == 0)
                Offers.Add(await PublishAsync(client, cluster.Id, nodes, [counts[0] - part], true, windows, random));
            if (random.Next(4) == 0)
            {
                var node = nodes[random.Next(nodes.Count)];
                var from = T0.AddHours(random.Next(0, 20));
                var window = new TimeWindow(from, from.AddHours(random.Next(1, 4)));
                await ReadAsync<Maintenance>(await client.PostAsJsonAsync($"/v1/clusters/{cluster.Id}/nodes/{node}/maintenance",
                    new { start = window.Start, end = window.End }), HttpStatusCode.Created);
                MaintenanceOf[node] = [window];
            }
            // Several offers share a creation time, so ties are broken by id.
            if (random.Next(3) > 0) Clock.Advance(TimeSpan.FromSeconds(1));
        }
        foreach (var offer in Offers.Where((_, i) => i % 5 == 0).ToList())
        {
            var org = clusters.Single(c => c.Cluster.Id == offer.ClusterId).Org;
            Offers[Offers.IndexOf(offer)] = await ReadAsync<Offer>(await Provider(org).DeleteAsync($"/v1/offers/{offer.Id}"), HttpStatusCode.OK);
        }

        // Health is the monitor's business (tested in AgentTests); here the stored scores are simply given, some tied, some none.
        await using (var c = Database.OpenAdmin())
            for (var i = 0; i < Offers.Count; i++)
            {
                int? ppm = random.Next(5) == 0 ? null : new[] { 900_000, 990_000, 999_000, 1_000_000 }[random.Next(4)] - random.Next(2) * 5_000;
                var ready = random.Next(2) == 0;
                await c.ExecuteAsync("UPDATE listings.offers SET reliability_ppm = @ppm, ready = @ready WHERE id = @id", new { ppm, ready, id = Offers[i].Id });
                Offers[i] = Offers[i] with { Reliability = ppm / 1_000_000m, Verified = ready };
            }
        Clock.SetUtcNow(T0.AddHours(2)); // some windows have now ended, and some attestations expired
    }

    private async Task<Offer> PublishAsync(HttpClient client, Guid clusterId, List<Guid> nodes, int[] gpus, bool partial, object[] windows, Random random)
    {
        var body = new Dictionary<string, object?>
        {
            ["cluster_id"] = clusterId, ["windows"] = windows,
            ["ask_per_hour"] = new { amount = random.Next(100, 1000), currency = random.Next(4) == 0 ? "USD" : "CNY" },
            ["min_lease_seconds"] = MinLeaseSeconds, ["interruptible_allowed"] = random.Next(2) == 0,
            ["sla_level"] = new[] { "none", "standard", "premium" }[random.Next(3)],
        };
        if (partial) body["nodes"] = nodes.Select((n, k) => new { node_id = n, gpus = gpus[k] }).ToArray();
        else body["node_ids"] = nodes;
        var offer = await ReadAsync<Offer>(await client.PostAsJsonAsync("/v1/offers", body), HttpStatusCode.Created);
        Shapes[offer.Id] = (gpus.Sum(), gpus.Min(), nodes.Count);
        return offer;
    }
}

public sealed record SearchQuery
{
    public string? Model { get; init; }
    public int? Place { get; init; }
    public bool ByRegionOnly { get; init; }
    public int? MinCount { get; init; }
    public int? PerNode { get; init; }
    public int? MinNodes { get; init; }
    public string? Fabric { get; init; }
    public int? MinFabricGbps { get; init; }
    public string? Interconnect { get; init; }
    public string[] Compliance { get; init; } = [];
    public decimal? MinReliability { get; init; }
    public bool? Verified { get; init; }
    public bool? Interruptible { get; init; }
    public string? SlaLevel { get; init; }
    public string? Currency { get; init; }
    public long? MaxPrice { get; init; }
    public int? FromHour { get; init; }
    public int? ToHour { get; init; }
    public string Sort { get; init; } = "created_at";
    public int Limit { get; init; }

    public string ToQueryString()
    {
        var q = new StringBuilder("limit=" + Limit);
        void Add(string name, object? value)
        {
            if (value is null) return;
            var text = value is bool b ? (b ? "true" : "false") : Convert.ToString(value, System.Globalization.CultureInfo.InvariantCulture)!;
            q.Append('&').Append(name).Append('=').Append(Uri.EscapeDataString(text));
        }
        Add("accelerator_model", Model);
        if (Place is { } p) Add("region", SearchFixture.Places[p].Region);
        if (Place is { } j && !ByRegionOnly) Add("jurisdiction", SearchFixture.Places[j].Jurisdiction);
        Add("min_count", MinCount);
        Add("per_node", PerNode);
        Add("min_nodes", MinNodes);
        Add("fabric", Fabric);
        Add("min_fabric_gbps", MinFabricGbps);
        Add("interconnect", Interconnect);
        if (Compliance.Length > 0) Add("compliance", string.Join(',', Compliance));
        Add("min_reliability", MinReliability);
        Add("verified", Verified);
        Add("interruptible", Interruptible);
        Add("sla_level", SlaLevel);
        Add("currency", Currency);
        Add("max_price", MaxPrice);
        if (FromHour is { } f) Add("available_from", ListingsApp.T0.AddHours(f).ToString("O"));
        if (ToHour is { } t) Add("available_to", ListingsApp.T0.AddHours(t).ToString("O"));
        if (Sort != "created_at") Add("sort", Sort);
        return q.ToString();
    }

    /// <summary>The specification, written the slow and obvious way.</summary>
    public IEnumerable<Offer> Filter(SearchFixture data, DateTimeOffset now)
    {
        var from = FromHour is { } f ? ListingsApp.T0.AddHours(f) : (DateTimeOffset?)null;
        var to = ToHour is { } t ? ListingsApp.T0.AddHours(t) : (DateTimeOffset?)null;
        var tick = TimeSpan.FromTicks(10);
        (DateTimeOffset From, DateTimeOffset To)? wanted = (from, to) switch
        {
            ({ } a, { } b) => (a, b),
            ({ } a, null) => (a, a + tick),
            (null, { } b) => (b - tick, b),
            _ => null,
        };
        bool Holds(Offer o, string token)
        {
            var place = data.PlaceOfCluster[o.ClusterId];
            var (kind, level) = token.StartsWith("mlps-") ? ("mlps", int.Parse(token[5..])) : (token, 0);
            var held = Attestations(place).Where(a => a.Kind == kind && a.ExpiresAt > now);
            return held.Any(a => a.Level is null || a.Level >= level);
        }
        var hits = data.Offers.Where(o =>
            o.Status == "active" && o.WindowEnd > now
            && (Model is null || o.AcceleratorModel == Model)
            && (Place is not { } p || (o.Region == SearchFixture.Places[p].Region && (ByRegionOnly || o.Jurisdiction == SearchFixture.Places[p].Jurisdiction)))
            && (MinCount is null || data.Shapes[o.Id].Count >= MinCount)
            && (PerNode is null || data.Shapes[o.Id].PerNode >= PerNode)
            && (MinNodes is null || data.Shapes[o.Id].Nodes >= MinNodes)
            && (Fabric is null || SearchFixture.Places[data.PlaceOfCluster[o.ClusterId]].Fabric == Fabric)
            && (MinFabricGbps is null || SearchFixture.Places[data.PlaceOfCluster[o.ClusterId]].Gbps >= MinFabricGbps)
            && (Interconnect is null || SearchFixture.Interconnects[o.AcceleratorModel].StartsWith(Interconnect))
            && Compliance.All(c => Holds(o, c))
            && (MinReliability is null || o.Reliability >= MinReliability)
            && (Verified is null || o.Verified == Verified)
            && (Interruptible is null || o.InterruptibleAllowed == Interruptible)
            && (SlaLevel is null || o.SlaLevel == SlaLevel)
            && (Currency is null || o.AskPerHour.Currency == Currency)
            && (MaxPrice is null || o.AskPerHour.Amount <= MaxPrice)
            && (wanted is not { } w || (o.Windows!.Any(x => x.Start <= w.From && x.End >= w.To)
                && !o.NodeIds.Any(n => data.MaintenanceOf.TryGetValue(n, out var ms) && ms.Any(m => m.Start < w.To && w.From < m.End)))));
        // PostgreSQL orders uuids by their bytes, which is the order of their lower-case text.
        return Sort switch
        {
            "price" => hits.OrderBy(o => o.AskPerHour.Amount).ThenBy(o => o.Id.ToString(), StringComparer.Ordinal),
            "reliability" => hits.OrderByDescending(o => o.Reliability ?? -1m).ThenByDescending(o => o.Id.ToString(), StringComparer.Ordinal),
            _ => hits.OrderByDescending(o => o.CreatedAt).ThenByDescending(o => o.Id.ToString(), StringComparer.Ordinal),
        };
    }

    private static IEnumerable<(string Kind, int? Level, DateTimeOffset ExpiresAt)> Attestations(int place) => place switch
    {
        0 => [("mlps", 3, ListingsApp.T0.AddHours(9000)), ("data-residency", null, ListingsApp.T0.AddHours(9000))],
        1 => [("mlps", 2, ListingsApp.T0.AddHours(1)), ("data-residency", null, ListingsApp.T0.AddHours(9000))],
        2 => [("iso27001", null, ListingsApp.T0.AddHours(9000)), ("soc2", null, ListingsApp.T0.AddHours(9000))],
        _ => [("iso27001", null, ListingsApp.T0.AddHours(1))],
    };
}

public sealed class SearchTests(SearchFixture app) : IClassFixture<SearchFixture>
{
    private static Gen<T?> Maybe<T>(Gen<T> gen) where T : struct =>
        Gen.Select(Gen.Int[0, 2], gen, (n, v) => n == 0 ? (T?)v : null);

    private static Gen<T?> MaybeOf<T>(params T[] values) where T : class =>
        Gen.Int[-values.Length, values.Length - 1].Select(i => i < 0 ? null : values[i]);

    private static readonly Gen<SearchQuery> Queries =
        from model in MaybeOf(SearchFixture.Models)
        from place in Maybe(Gen.Int[0, SearchFixture.Places.Length - 1])
        from regionOnly in Gen.Bool
        from minCount in Maybe(Gen.Int[1, 16])
        from perNode in Maybe(Gen.Int[1, 8])
        from minNodes in Maybe(Gen.Int[1, 3])
        from fabric in MaybeOf("infiniband", "roce", "ethernet")
        from gbps in Maybe(Gen.Int[0, 900])
        from interconnect in MaybeOf("nvlink", "nvlink4", "hccs", "pcie")
        from compliance in Gen.Int[0, SearchFixture.ComplianceTokens.Length - 1].Array[0, 2]
        from minReliability in Maybe(Gen.Int[0, 3].Select(i => new[] { 0.9m, 0.985m, 0.99m, 1m }[i]))
        from verified in Maybe(Gen.Bool)
        from interruptible in Maybe(Gen.Bool)
        from sla in MaybeOf("none", "standard", "premium")
        from currency in MaybeOf("CNY", "USD")
        from maxPrice in Maybe(Gen.Long[100, 1000])
        from fromHour in Maybe(Gen.Int[-2, 26])
        from length in Gen.Int[1, 8]
        from hasTo in Gen.Bool
        from sort in Gen.Int[0, 2]
        from limit in Gen.Int[1, 7]
        // Most filters stay off in most queries, so that results are not usually empty.
        from sparse in Gen.Int[0, 3]
        select new SearchQuery
        {
            Model = model, Place = place, ByRegionOnly = regionOnly, MinCount = minCount,
            PerNode = sparse == 0 ? perNode : null, MinNodes = sparse == 0 ? minNodes : null, Fabric = sparse == 1 ? fabric : null,
            MinFabricGbps = sparse == 1 ? gbps : null, Interconnect = sparse == 2 ? interconnect : null,
            Compliance = sparse == 3 ? compliance.Distinct().Select(i => SearchFixture.ComplianceTokens[i]).ToArray() : [],
            MinReliability = sparse == 2 ? minReliability : null, Verified = sparse == 3 ? verified : null,
            Interruptible = sparse == 0 ? interruptible : null, SlaLevel = sparse == 1 ? sla : null,
            Currency = currency, MaxPrice = currency is null ? null : maxPrice, FromHour = fromHour,
            ToHour = hasTo ? (fromHour ?? 0) + length : null,
            Sort = sort == 1 && currency is not null ? "price" : sort == 2 ? "reliability" : "created_at", Limit = limit,
        };

    [Fact]
    public void The_generated_offers_cover_the_cases_the_filters_distinguish()
    {
        Assert.Contains(app.Offers, o => o.Status == "withdrawn");
        Assert.Contains(app.Offers, o => o.Status == "active" && o.WindowEnd <= app.Clock.GetUtcNow());
        Assert.Contains(app.Offers, o => o.AskPerHour.Currency == "USD");
        Assert.Contains(app.Offers, o => o.Windows!.Length == 2);
        Assert.Contains(app.Offers, o => o.Reliability is null);
        Assert.True(app.Offers.Where(o => o.Reliability is not null).GroupBy(o => o.Reliability).Any(g => g.Count() > 1), "no tie in reliability");
        Assert.NotEmpty(app.MaintenanceOf);
        Assert.Contains(app.Offers, o => o.Slots is not null && o.NodeIds.Length > 1);
        Assert.True(app.Offers.Where(o => o.Status == "active").SelectMany(o => o.NodeIds).GroupBy(n => n).Any(g => g.Count() > 1),
            "no node is in two active offers");
        Assert.True(app.Offers.GroupBy(o => o.CreatedAt).Any(g => g.Count() > 1), "no two offers share a creation time");
    }

    [Fact]
    public async Task Paging_through_any_search_returns_exactly_the_matching_offers_in_order()
    {
        var client = app.Renter(Guid.NewGuid());
        var nonEmpty = 0;
        await Queries.SampleAsync(async query =>
        {
            var expected = query.Filter(app, app.Clock.GetUtcNow()).Select(o => o.Id).ToList();
            var actual = new List<Guid>();
            string? cursor = null;
            for (var pages = 0; pages <= expected.Count; pages++)
            {
                var url = "/v1/offers?" + query.ToQueryString() + (cursor is null ? "" : "&cursor=" + cursor);
                var page = await ListingsApp.ReadAsync<Page<Offer>>(await client.GetAsync(url), HttpStatusCode.OK);
                Assert.True(page.Data.Length <= query.Limit);
                actual.AddRange(page.Data.Select(o => o.Id));
                if ((cursor = page.NextCursor) is null) break;
            }
            Assert.Null(cursor);
            Assert.Equal(expected, actual);
            if (expected.Count > 0) Interlocked.Increment(ref nonEmpty);
        }, iter: 200, threads: 1, print: q => q.ToQueryString());
        Assert.True(nonEmpty > 40, $"only {nonEmpty} of 200 generated searches found anything; the generator tests too little");
    }

    [Fact]
    public async Task Price_sort_lists_the_cheapest_ask_first()
    {
        var page = await ListingsApp.ReadAsync<Page<Offer>>(
            await app.Renter(Guid.NewGuid()).GetAsync("/v1/offers?currency=CNY&sort=price&limit=100"), HttpStatusCode.OK);

        Assert.NotEmpty(page.Data);
        Assert.Equal(page.Data.Select(o => o.AskPerHour.Amount).Order(), page.Data.Select(o => o.AskPerHour.Amount));
        Assert.All(page.Data, o => Assert.Equal("CNY", o.AskPerHour.Currency));
    }
}
