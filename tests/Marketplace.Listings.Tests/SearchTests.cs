using System.Net;
using System.Text;
using CsCheck;
using Xunit;

namespace Marketplace.Listings.Tests;

/// <summary>Offers generated once on their own database; every query is checked against a brute-force filter of them.</summary>
public sealed class SearchFixture : ListingsApp
{
    public static readonly string[] Models = ["h100-sxm", "a100-80gb", "ascend-910b"];
    public static readonly (string Region, string Jurisdiction)[] Places = [("cn-east", "CN"), ("cn-north", "CN"), ("eu-west", "DE"), ("eu-west", "FR")];

    public List<Offer> Offers { get; } = [];

    public override async Task InitializeAsync()
    {
        await base.InitializeAsync();
        var random = new Random(20300101);
        var providers = new[] { Provider(Guid.NewGuid()), Provider(Guid.NewGuid()) };
        var clusters = new List<(HttpClient Client, Cluster Cluster)>();
        foreach (var (region, jurisdiction) in Places)
        {
            var client = providers[clusters.Count % 2];
            clusters.Add((client, await CreateClusterAsync(client, region, jurisdiction)));
        }
        for (var i = 0; i < 40; i++)
        {
            var (client, cluster) = clusters[random.Next(clusters.Count)];
            var model = Models[random.Next(Models.Length)];
            var nodes = new List<Guid>();
            for (var n = random.Next(1, 3); n > 0; n--) nodes.Add((await CreateNodeAsync(client, cluster.Id, model, random.Next(1, 9))).Id);
            var start = T0.AddHours(random.Next(-3, 12));
            var end = start.AddHours(random.Next(1, 12));
            if (end <= T0) end = T0.AddHours(1);
            Offers.Add(await PublishOfferAsync(client, cluster.Id, nodes, start, end, random.Next(100, 1000), random.Next(4) == 0 ? "USD" : "CNY"));
            // Several offers share a creation time, so ties are broken by id.
            if (random.Next(3) > 0) Clock.Advance(TimeSpan.FromSeconds(1));
        }
        foreach (var offer in Offers.Where((_, i) => i % 5 == 0).ToList())
        {
            var client = clusters.Single(c => c.Cluster.Id == offer.ClusterId).Client;
            Offers[Offers.IndexOf(offer)] = await ReadAsync<Offer>(await client.DeleteAsync($"/v1/offers/{offer.Id}"), HttpStatusCode.OK);
        }
        Clock.SetUtcNow(T0.AddHours(2)); // some windows have now ended
    }
}

public sealed record SearchQuery(string? Model, int? Place, bool ByRegionOnly, int? MinCount, string? Currency, long? MaxPrice,
    int? FromHour, int? ToHour, bool ByPrice, int Limit)
{
    public string ToQueryString()
    {
        var q = new StringBuilder("limit=" + Limit);
        if (Model is not null) q.Append("&accelerator_model=").Append(Model);
        if (Place is { } p) q.Append("&region=").Append(SearchFixture.Places[p].Region);
        if (Place is { } j && !ByRegionOnly) q.Append("&jurisdiction=").Append(SearchFixture.Places[j].Jurisdiction);
        if (MinCount is not null) q.Append("&min_count=").Append(MinCount);
        if (Currency is not null) q.Append("&currency=").Append(Currency);
        if (MaxPrice is not null) q.Append("&max_price=").Append(MaxPrice);
        if (FromHour is { } f) q.Append("&available_from=").Append(Uri.EscapeDataString(ListingsApp.T0.AddHours(f).ToString("O")));
        if (ToHour is { } t) q.Append("&available_to=").Append(Uri.EscapeDataString(ListingsApp.T0.AddHours(t).ToString("O")));
        if (ByPrice) q.Append("&sort=price");
        return q.ToString();
    }

    /// <summary>The specification, written the slow and obvious way.</summary>
    public IEnumerable<Offer> Filter(IEnumerable<Offer> offers, DateTimeOffset now)
    {
        var from = FromHour is { } f ? ListingsApp.T0.AddHours(f) : (DateTimeOffset?)null;
        var to = ToHour is { } t ? ListingsApp.T0.AddHours(t) : (DateTimeOffset?)null;
        var hits = offers.Where(o =>
            o.Status == "active" && o.WindowEnd > now
            && (Model is null || o.AcceleratorModel == Model)
            && (Place is not { } p || (o.Region == SearchFixture.Places[p].Region && (ByRegionOnly || o.Jurisdiction == SearchFixture.Places[p].Jurisdiction)))
            && (MinCount is null || o.AcceleratorCount >= MinCount)
            && (Currency is null || o.AskPerHour.Currency == Currency)
            && (MaxPrice is null || o.AskPerHour.Amount <= MaxPrice)
            && (from is null || (o.WindowStart <= from && o.WindowEnd > from))
            && (to is null || (o.WindowStart < to && o.WindowEnd >= to)));
        // PostgreSQL orders uuids by their bytes, which is the order of their lower-case text.
        return ByPrice
            ? hits.OrderBy(o => o.AskPerHour.Amount).ThenBy(o => o.Id.ToString(), StringComparer.Ordinal)
            : hits.OrderByDescending(o => o.CreatedAt).ThenByDescending(o => o.Id.ToString(), StringComparer.Ordinal);
    }
}

public sealed class SearchTests(SearchFixture app) : IClassFixture<SearchFixture>
{
    private static Gen<T?> Maybe<T>(Gen<T> gen) where T : struct =>
        Gen.Select(Gen.Int[0, 2], gen, (n, v) => n == 0 ? (T?)v : null);

    private static readonly Gen<SearchQuery> Queries =
        from model in Gen.Int[-1, SearchFixture.Models.Length - 1]
        from place in Maybe(Gen.Int[0, SearchFixture.Places.Length - 1])
        from regionOnly in Gen.Bool
        from minCount in Maybe(Gen.Int[1, 16])
        from currency in Gen.Int[0, 2]
        from maxPrice in Maybe(Gen.Long[100, 1000])
        from fromHour in Maybe(Gen.Int[-2, 20])
        from length in Gen.Int[1, 8]
        from hasTo in Gen.Bool
        from byPrice in Gen.Bool
        from limit in Gen.Int[1, 7]
        let cur = currency switch { 0 => "CNY", 1 => "USD", _ => null }
        select new SearchQuery(model < 0 ? null : SearchFixture.Models[model], place, regionOnly, minCount, cur,
            cur is null ? null : maxPrice, fromHour, hasTo ? (fromHour ?? 0) + length : null, byPrice && cur is not null, limit);

    [Fact]
    public void The_generated_offers_cover_the_cases_the_filters_distinguish()
    {
        Assert.Contains(app.Offers, o => o.Status == "withdrawn");
        Assert.Contains(app.Offers, o => o.Status == "active" && o.WindowEnd <= app.Clock.GetUtcNow());
        Assert.Contains(app.Offers, o => o.AskPerHour.Currency == "USD");
        Assert.True(app.Offers.GroupBy(o => o.CreatedAt).Any(g => g.Count() > 1), "no two offers share a creation time");
    }

    [Fact]
    public async Task Paging_through_any_search_returns_exactly_the_matching_offers_in_order()
    {
        var client = app.Renter(Guid.NewGuid());
        await Queries.SampleAsync(async query =>
        {
            var expected = query.Filter(app.Offers, app.Clock.GetUtcNow()).Select(o => o.Id).ToList();
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
        }, iter: 150, threads: 1, print: q => q.ToQueryString());
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
