using System.Net;
using System.Net.Http.Json;
using Xunit;

namespace Marketplace.Listings.Tests;

/// <summary>Attestations added, renewed and removed after a cluster's registration.</summary>
public sealed class AttestationTests(ListingsApp app) : IClassFixture<ListingsApp>
{
    private async Task<(HttpClient Client, Cluster Cluster, Offer Offer, string Region)> ClusterWithOfferAsync()
    {
        var client = app.Provider(Guid.NewGuid());
        var region = "att-" + Guid.NewGuid().ToString("N")[..8];
        var cluster = await app.CreateClusterAsync(client, region, "CN");
        var node = await app.CreateNodeAsync(client, cluster.Id, "ascend-910b", 8);
        var now = app.Clock.GetUtcNow();
        var offer = await app.PublishOfferAsync(client, cluster.Id, [node.Id], now.AddHours(1), now.AddDays(30));
        return (client, cluster, offer, region);
    }

    private async Task<Guid[]> FoundAsync(HttpClient client, string region, string compliance) =>
        (await ListingsApp.ReadAsync<Page<Offer>>(await client.GetAsync($"/v1/offers?region={region}&compliance={compliance}&limit=100"), HttpStatusCode.OK))
            .Data.Select(o => o.Id).ToArray();

    [Fact]
    public async Task Adding_renewing_and_removing_an_attestation_changes_what_search_finds_at_once()
    {
        var (client, cluster, offer, region) = await ClusterWithOfferAsync();
        var now = app.Clock.GetUtcNow();
        Assert.Empty(await FoundAsync(client, region, "iso27001"));

        var added = await ListingsApp.ReadAsync<Attestation>(await client.PutAsJsonAsync($"/v1/clusters/{cluster.Id}/attestations/iso27001",
            new { evidence_ref = " https://example.com/iso.pdf ", expires_at = now.AddDays(365) }), HttpStatusCode.OK);
        Assert.Equal(("iso27001", (int?)null, "https://example.com/iso.pdf"), (added.Kind, added.Level, added.EvidenceRef));
        Assert.Equal([offer.Id], await FoundAsync(client, region, "iso27001"));

        // MLPS level 2 does not satisfy mlps-3; the renewal at level 3 does, and replaces (does not add) the attestation.
        await ListingsApp.ReadAsync<Attestation>(await client.PutAsJsonAsync($"/v1/clusters/{cluster.Id}/attestations/mlps",
            new { level = 2, evidence_ref = "MLPS-2", expires_at = now.AddDays(30) }), HttpStatusCode.OK);
        Assert.Empty(await FoundAsync(client, region, "mlps-3"));
        await ListingsApp.ReadAsync<Attestation>(await client.PutAsJsonAsync($"/v1/clusters/{cluster.Id}/attestations/mlps",
            new { level = 3, evidence_ref = "MLPS-3", expires_at = now.AddDays(60) }), HttpStatusCode.OK);
        Assert.Equal([offer.Id], await FoundAsync(client, region, "mlps-3,iso27001"));
        var read = await ListingsApp.ReadAsync<Cluster>(await client.GetAsync($"/v1/clusters/{cluster.Id}"), HttpStatusCode.OK);
        Assert.Equal([("iso27001", (int?)null, "https://example.com/iso.pdf"), ("mlps", 3, "MLPS-3")],
            read.Compliance!.Select(a => (a.Kind, a.Level, a.EvidenceRef)));
        Assert.Equal(now.AddDays(60), read.Compliance!.Single(a => a.Kind == "mlps").ExpiresAt);

        Assert.Equal(HttpStatusCode.NoContent, (await client.DeleteAsync($"/v1/clusters/{cluster.Id}/attestations/iso27001")).StatusCode);
        Assert.Empty(await FoundAsync(client, region, "iso27001"));
        Assert.Equal([offer.Id], await FoundAsync(client, region, "mlps-3"));
        Assert.EndsWith("/not-found", (await ListingsApp.ReadAsync<Problem>(
            await client.DeleteAsync($"/v1/clusters/{cluster.Id}/attestations/iso27001"), HttpStatusCode.NotFound)).Type);
    }

    [Fact]
    public async Task An_attestation_that_expired_counts_again_once_it_is_renewed()
    {
        var (client, cluster, offer, region) = await ClusterWithOfferAsync();
        var now = app.Clock.GetUtcNow();
        await ListingsApp.ReadAsync<Attestation>(await client.PutAsJsonAsync($"/v1/clusters/{cluster.Id}/attestations/soc2",
            new { evidence_ref = "SOC2-2030", expires_at = now.AddMinutes(10) }), HttpStatusCode.OK);
        Assert.Equal([offer.Id], await FoundAsync(client, region, "soc2"));

        app.Clock.Advance(TimeSpan.FromMinutes(11));
        Assert.Empty(await FoundAsync(client, region, "soc2"));
        await ListingsApp.ReadAsync<Attestation>(await client.PutAsJsonAsync($"/v1/clusters/{cluster.Id}/attestations/soc2",
            new { evidence_ref = "SOC2-2031", expires_at = app.Clock.GetUtcNow().AddDays(365) }), HttpStatusCode.OK);

        Assert.Equal([offer.Id], await FoundAsync(client, region, "soc2"));
    }

    [Fact]
    public async Task Another_provider_gets_a_404_on_a_foreign_clusters_attestations_and_nothing_changes()
    {
        var (owner, cluster, _, _) = await ClusterWithOfferAsync();
        var now = app.Clock.GetUtcNow();
        await ListingsApp.ReadAsync<Attestation>(await owner.PutAsJsonAsync($"/v1/clusters/{cluster.Id}/attestations/soc2",
            new { evidence_ref = "SOC2", expires_at = now.AddDays(30) }), HttpStatusCode.OK);
        var stranger = app.Provider(Guid.NewGuid());
        var before = await app.SnapshotAsync();

        var responses = new[]
        {
            await stranger.PutAsJsonAsync($"/v1/clusters/{cluster.Id}/attestations/soc2", new { evidence_ref = "FAKE", expires_at = now.AddDays(900) }),
            await stranger.PutAsJsonAsync($"/v1/clusters/{cluster.Id}/attestations/iso27001", new { evidence_ref = "FAKE", expires_at = now.AddDays(900) }),
            await stranger.DeleteAsync($"/v1/clusters/{cluster.Id}/attestations/soc2"),
            // Bad input on a foreign cluster is a 404 too: nothing tells a stranger the cluster exists.
            await stranger.PutAsJsonAsync($"/v1/clusters/{cluster.Id}/attestations/pci", new { evidence_ref = "FAKE", expires_at = now.AddDays(900) }),
            await owner.PutAsJsonAsync($"/v1/clusters/{Guid.NewGuid()}/attestations/soc2", new { evidence_ref = "X", expires_at = now.AddDays(900) }),
        };

        foreach (var response in responses)
            Assert.EndsWith("/not-found", (await ListingsApp.ReadAsync<Problem>(response, HttpStatusCode.NotFound)).Type);
        Assert.Equal(before, await app.SnapshotAsync());
        var renter = app.Renter(Guid.NewGuid());
        Assert.Equal(HttpStatusCode.Forbidden, (await renter.DeleteAsync($"/v1/clusters/{cluster.Id}/attestations/soc2")).StatusCode);
        Assert.Equal(before, await app.SnapshotAsync());
    }

    public static TheoryData<string, string, string> BadAttestations => new()
    {
        { "pci", """{"evidence_ref":"x","expires_at":"2031-01-01T00:00:00Z"}""", "kind" },
        { "ISO27001", """{"evidence_ref":"x","expires_at":"2031-01-01T00:00:00Z"}""", "kind" },
        { "mlps", """{"evidence_ref":"x","expires_at":"2031-01-01T00:00:00Z"}""", "level" },
        { "mlps", """{"level":6,"evidence_ref":"x","expires_at":"2031-01-01T00:00:00Z"}""", "level" },
        { "soc2", """{"level":2,"evidence_ref":"x","expires_at":"2031-01-01T00:00:00Z"}""", "level" },
        { "soc2", """{"expires_at":"2031-01-01T00:00:00Z"}""", "evidence_ref" },
        { "soc2", """{"evidence_ref":"   ","expires_at":"2031-01-01T00:00:00Z"}""", "evidence_ref" },
        { "soc2", "{\"evidence_ref\":\"" + new string('x', 501) + "\",\"expires_at\":\"2031-01-01T00:00:00Z\"}", "evidence_ref" },
        { "soc2", """{"evidence_ref":"x"}""", "expires_at" },
        { "soc2", """{"evidence_ref":"x","expires_at":"2029-12-31T00:00:00Z"}""", "expires_at" },
        { "soc2", """{"evidence_ref":"x","expires_at":"next year"}""", "malformed" },
    };

    [Theory, MemberData(nameof(BadAttestations))]
    public async Task A_bad_attestation_is_rejected_naming_the_field_and_the_one_in_place_stays(string kind, string json, string field)
    {
        var (client, cluster, _, _) = await ClusterWithOfferAsync();
        await ListingsApp.ReadAsync<Attestation>(await client.PutAsJsonAsync($"/v1/clusters/{cluster.Id}/attestations/soc2",
            new { evidence_ref = "SOC2", expires_at = app.Clock.GetUtcNow().AddDays(30) }), HttpStatusCode.OK);
        var before = await app.SnapshotAsync();

        var response = await client.PutAsync($"/v1/clusters/{cluster.Id}/attestations/{kind}",
            new StringContent(json, System.Text.Encoding.UTF8, "application/json"));

        Assert.Equal("application/problem+json", response.Content.Headers.ContentType?.MediaType);
        await ListingsApp.AssertRefusedAsync(response, field);
        Assert.Equal(before, await app.SnapshotAsync());
    }

    [Fact]
    public async Task Removing_an_unknown_kind_is_a_400()
    {
        var (client, cluster, _, _) = await ClusterWithOfferAsync();
        var before = await app.SnapshotAsync();
        var problem = await ListingsApp.ReadAsync<Problem>(await client.DeleteAsync($"/v1/clusters/{cluster.Id}/attestations/pci"), HttpStatusCode.BadRequest);
        Assert.Contains("kind:", problem.Detail);
        Assert.Equal(before, await app.SnapshotAsync());
    }
}
