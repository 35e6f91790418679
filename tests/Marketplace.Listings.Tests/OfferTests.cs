using System.Net;
using System.Net.Http.Json;
using System.Text.Json.Nodes;
using Marketplace.Contracts;
using Marketplace.Testing;
using Xunit;

namespace Marketplace.Listings.Tests;

public sealed class OfferTests(ListingsApp app) : IClassFixture<ListingsApp>
{
    private static readonly DateTimeOffset T0 = ListingsApp.T0;

    [Fact]
    public async Task An_offer_sums_its_nodes_takes_place_from_its_cluster_and_OfferPublished_reaches_the_broker()
    {
        var org = Guid.NewGuid();
        var client = app.Provider(org);
        var cluster = await app.CreateClusterAsync(client, "cn-south", "CN");
        var a = await app.CreateNodeAsync(client, cluster.Id, "h100-sxm", 8);
        var b = await app.CreateNodeAsync(client, cluster.Id, "h100-sxm", 4);

        var offer = await ListingsApp.ReadAsync<Offer>(await client.PostAsJsonAsync("/v1/offers",
            ListingsApp.OfferBody(cluster.Id, [a.Id, b.Id], T0.AddHours(1), T0.AddHours(9), 235, "CNY", 120, interruptible: true)),
            HttpStatusCode.Created);

        Assert.Equal((org, cluster.Id, "h100-sxm", "cn-south", "CN", 12, "active"),
            (offer.ProviderOrgId, offer.ClusterId, offer.AcceleratorModel, offer.Region, offer.Jurisdiction, offer.AcceleratorCount, offer.Status));
        Assert.Equal([a.Id, b.Id], offer.NodeIds);
        Assert.Equal(new Money(235, "CNY"), offer.AskPerHour);
        Assert.Equal((120, true), (offer.MinLeaseSeconds, offer.InterruptibleAllowed));

        var evt = await Eventually.Get(() => Task.FromResult(app.Received.OfType<OfferPublished>().FirstOrDefault(e => e.OfferId == offer.Id)),
            _ => true, what: "OfferPublished on the broker");
        Assert.Equal((12, T0.AddHours(1), T0.AddHours(9), new Money(235, "CNY"), "cn-south"),
            (evt.AcceleratorCount, evt.WindowStart, evt.WindowEnd, evt.AskPerHour, evt.Region));
        Assert.Equal([a.Id, b.Id], evt.NodeIds);
    }

    [Fact]
    public async Task Withdrawing_publishes_OfferWithdrawn_once_hides_the_offer_and_frees_its_nodes_for_that_window()
    {
        var org = Guid.NewGuid();
        var client = app.Provider(org);
        var cluster = await app.CreateClusterAsync(client);
        var node = await app.CreateNodeAsync(client, cluster.Id, "l40s", 2);
        var offer = await app.PublishOfferAsync(client, cluster.Id, [node.Id], T0, T0.AddHours(6));

        var withdrawn = await ListingsApp.ReadAsync<Offer>(await client.DeleteAsync($"/v1/offers/{offer.Id}"), HttpStatusCode.OK);
        Assert.Equal("withdrawn", withdrawn.Status);
        var afterFirst = await app.SnapshotAsync();
        var again = await ListingsApp.ReadAsync<Offer>(await client.DeleteAsync($"/v1/offers/{offer.Id}"), HttpStatusCode.OK);
        Assert.Equal("withdrawn", again.Status);
        Assert.Equal(afterFirst, await app.SnapshotAsync());

        var evt = await Eventually.Get(() => Task.FromResult(app.Received.OfType<OfferWithdrawn>().FirstOrDefault(e => e.OfferId == offer.Id)),
            _ => true, what: "OfferWithdrawn on the broker");
        Assert.Equal(org, evt.ProviderOrgId);

        var search = await ListingsApp.ReadAsync<Page<Offer>>(await client.GetAsync("/v1/offers?accelerator_model=l40s&limit=100"), HttpStatusCode.OK);
        Assert.DoesNotContain(search.Data, o => o.Id == offer.Id);
        await app.PublishOfferAsync(client, cluster.Id, [node.Id], T0, T0.AddHours(6));
    }

    [Fact]
    public async Task An_offer_resent_with_its_Idempotency_Key_is_the_same_offer_and_the_key_with_another_body_is_refused()
    {
        var client = app.Provider(Guid.NewGuid());
        var cluster = await app.CreateClusterAsync(client);
        var node = await app.CreateNodeAsync(client, cluster.Id, "l40s", 2);
        var body = ListingsApp.OfferBody(cluster.Id, [node.Id], T0.AddHours(1), T0.AddHours(6));
        var key = Guid.NewGuid().ToString();
        async Task<HttpResponseMessage> PostAsync(object b, string k)
        {
            using var request = new HttpRequestMessage(HttpMethod.Post, "/v1/offers") { Content = JsonContent.Create(b) };
            request.Headers.Add("Idempotency-Key", k);
            return await client.SendAsync(request);
        }

        var created = await ListingsApp.ReadAsync<Offer>(await PostAsync(body, key), HttpStatusCode.Created);
        var afterFirst = await app.SnapshotAsync();
        var again = await ListingsApp.ReadAsync<Offer>(await PostAsync(body, key), HttpStatusCode.OK);
        Assert.Equal(created.Id, again.Id);
        Assert.Equal(afterFirst, await app.SnapshotAsync()); // nothing new written, nothing published again
        await Eventually.Get(() => Task.FromResult(app.Received.OfType<OfferPublished>().FirstOrDefault(e => e.OfferId == created.Id)),
            _ => true, what: "OfferPublished on the broker");
        Assert.Single(app.Received.OfType<OfferPublished>(), e => e.OfferId == created.Id);

        var other = ListingsApp.OfferBody(cluster.Id, [node.Id], T0.AddHours(7), T0.AddHours(9));
        var problem = await ListingsApp.ReadAsync<Problem>(await PostAsync(other, key), (HttpStatusCode)422);
        Assert.EndsWith("/idempotency-key-reused", problem.Type);
        Assert.Contains(created.Id.ToString(), problem.Detail);
        Assert.Equal(afterFirst, await app.SnapshotAsync());

        // Two racing requests with one new key create one offer.
        var raceKey = Guid.NewGuid().ToString();
        var raced = ListingsApp.OfferBody(cluster.Id, [node.Id], T0.AddHours(10), T0.AddHours(12));
        var answers = await Task.WhenAll(PostAsync(raced, raceKey), PostAsync(raced, raceKey));
        Assert.Equal([HttpStatusCode.OK, HttpStatusCode.Created], answers.Select(a => a.StatusCode).Order());
        var ids = await Task.WhenAll(answers.Select(a => ListingsApp.ReadAsync<Offer>(a, a.StatusCode)));
        Assert.Equal(ids[0].Id, ids[1].Id);
    }

    [Fact]
    public async Task An_active_offer_is_read_by_anyone_a_withdrawn_one_only_by_its_provider()
    {
        var provider = app.Provider(Guid.NewGuid());
        var renter = app.Renter(Guid.NewGuid());
        var otherProvider = app.Provider(Guid.NewGuid());
        var cluster = await app.CreateClusterAsync(provider);
        var node = await app.CreateNodeAsync(provider, cluster.Id, "l40s", 2);
        var offer = await app.PublishOfferAsync(provider, cluster.Id, [node.Id], T0, T0.AddHours(6));

        var read = await ListingsApp.ReadAsync<Offer>(await renter.GetAsync($"/v1/offers/{offer.Id}"), HttpStatusCode.OK);
        Assert.Equal((offer.Id, "active", 2), (read.Id, read.Status, read.AcceleratorCount));
        Assert.Equal([node.Id], read.NodeIds);

        await ListingsApp.ReadAsync<Offer>(await provider.DeleteAsync($"/v1/offers/{offer.Id}"), HttpStatusCode.OK);
        Assert.Equal("withdrawn", (await ListingsApp.ReadAsync<Offer>(await provider.GetAsync($"/v1/offers/{offer.Id}"), HttpStatusCode.OK)).Status);
        await ListingsApp.ReadAsync<Problem>(await renter.GetAsync($"/v1/offers/{offer.Id}"), HttpStatusCode.NotFound);
        await ListingsApp.ReadAsync<Problem>(await otherProvider.GetAsync($"/v1/offers/{offer.Id}"), HttpStatusCode.NotFound);
        await ListingsApp.ReadAsync<Problem>(await renter.GetAsync($"/v1/offers/{Guid.NewGuid()}"), HttpStatusCode.NotFound);
    }

    [Fact]
    public async Task A_node_already_offered_for_an_overlapping_window_is_rejected_but_an_adjacent_window_is_accepted()
    {
        var client = app.Provider(Guid.NewGuid());
        var cluster = await app.CreateClusterAsync(client);
        var a = await app.CreateNodeAsync(client, cluster.Id);
        var b = await app.CreateNodeAsync(client, cluster.Id);
        var existing = await app.PublishOfferAsync(client, cluster.Id, [a.Id], T0.AddHours(2), T0.AddHours(6));
        var before = await app.SnapshotAsync();

        var response = await client.PostAsJsonAsync("/v1/offers", ListingsApp.OfferBody(cluster.Id, [b.Id, a.Id], T0.AddHours(5), T0.AddHours(8)));

        var problem = await ListingsApp.ReadAsync<Problem>(response, HttpStatusCode.Conflict);
        Assert.EndsWith("/offer-overlap", problem.Type);
        Assert.Contains(existing.Id.ToString(), problem.Detail);
        Assert.Contains(a.Id.ToString(), problem.Detail);
        Assert.Equal(before, await app.SnapshotAsync());

        await app.PublishOfferAsync(client, cluster.Id, [b.Id, a.Id], T0.AddHours(6), T0.AddHours(8));
    }

    [Fact]
    public async Task Another_provider_cannot_withdraw_a_foreign_offer_and_it_stays_active()
    {
        var owner = app.Provider(Guid.NewGuid());
        var cluster = await app.CreateClusterAsync(owner);
        var node = await app.CreateNodeAsync(owner, cluster.Id);
        var offer = await app.PublishOfferAsync(owner, cluster.Id, [node.Id], T0, T0.AddHours(3));
        var before = await app.SnapshotAsync();

        var foreign = await app.Provider(Guid.NewGuid()).DeleteAsync($"/v1/offers/{offer.Id}");
        var missing = await owner.DeleteAsync($"/v1/offers/{Guid.NewGuid()}");

        Assert.EndsWith("/not-found", (await ListingsApp.ReadAsync<Problem>(foreign, HttpStatusCode.NotFound)).Type);
        Assert.EndsWith("/not-found", (await ListingsApp.ReadAsync<Problem>(missing, HttpStatusCode.NotFound)).Type);
        Assert.Equal(before, await app.SnapshotAsync());
    }

    public static TheoryData<string, int, string> BadOffers => new()
    {
        { "no cluster", 400, "cluster_id" },
        { "foreign cluster", 404, "" },
        { "no nodes", 400, "node_ids" },
        { "a node twice", 400, "node_ids" },
        { "a node of my other cluster", 400, "node_ids" },
        { "a node of another provider", 400, "node_ids" },
        { "mixed models", 400, "node_ids" },
        { "no window start", 400, "window_start" },
        { "end before start", 400, "window_end" },
        { "end equals start", 400, "window_end" },
        { "window over", 400, "window_end" },
        { "window shorter than min lease", 400, "window_end" },
        { "no ask", 400, "ask_per_hour.amount" },
        { "zero ask", 400, "ask_per_hour.amount" },
        { "negative ask", 400, "ask_per_hour.amount" },
        { "lower-case currency", 400, "ask_per_hour.currency" },
        { "four-letter currency", 400, "ask_per_hour.currency" },
        { "min lease below the market minimum", 400, "min_lease_seconds" },
        { "no min lease", 400, "min_lease_seconds" },
        { "count is text", 400, "malformed" },
    };

    [Theory, MemberData(nameof(BadOffers))]
    public async Task A_bad_offer_is_rejected_with_a_problem_and_nothing_is_written(string @case, int status, string field)
    {
        var client = app.Provider(Guid.NewGuid());
        var cluster = await app.CreateClusterAsync(client);
        var h1 = await app.CreateNodeAsync(client, cluster.Id, "h100-sxm", 8);
        var h2 = await app.CreateNodeAsync(client, cluster.Id, "h100-sxm", 8);
        var a1 = await app.CreateNodeAsync(client, cluster.Id, "a100-80gb", 8);
        var other = await app.CreateClusterAsync(client);
        var o1 = await app.CreateNodeAsync(client, other.Id, "h100-sxm", 8);
        var stranger = app.Provider(Guid.NewGuid());
        var foreignCluster = await app.CreateClusterAsync(stranger);
        var f1 = await app.CreateNodeAsync(stranger, foreignCluster.Id, "h100-sxm", 8);

        var body = JsonNode.Parse(System.Text.Json.JsonSerializer.Serialize(
            ListingsApp.OfferBody(cluster.Id, [h1.Id, h2.Id], T0.AddDays(1), T0.AddDays(2))))!.AsObject();
        switch (@case)
        {
            case "no cluster": body.Remove("cluster_id"); break;
            case "foreign cluster": body["cluster_id"] = foreignCluster.Id; body["node_ids"] = new JsonArray(f1.Id); break;
            case "no nodes": body["node_ids"] = new JsonArray(); break;
            case "a node twice": body["node_ids"] = new JsonArray(h1.Id, h1.Id); break;
            case "a node of my other cluster": body["node_ids"] = new JsonArray(h1.Id, o1.Id); break;
            case "a node of another provider": body["node_ids"] = new JsonArray(h1.Id, f1.Id); break;
            case "mixed models": body["node_ids"] = new JsonArray(h1.Id, a1.Id); break;
            case "no window start": body.Remove("window_start"); break;
            case "end before start": body["window_end"] = T0.AddDays(1).AddHours(-1); break;
            case "end equals start": body["window_end"] = T0.AddDays(1); break;
            case "window over": body["window_start"] = T0.AddHours(-5); body["window_end"] = T0.AddHours(-2); break;
            case "window shorter than min lease": body["window_end"] = T0.AddDays(1).AddSeconds(59); break;
            case "no ask": body.Remove("ask_per_hour"); break;
            case "zero ask": body["ask_per_hour"]!["amount"] = 0; break;
            case "negative ask": body["ask_per_hour"]!["amount"] = -5; break;
            case "lower-case currency": body["ask_per_hour"]!["currency"] = "cny"; break;
            case "four-letter currency": body["ask_per_hour"]!["currency"] = "CNYX"; break;
            case "min lease below the market minimum": body["min_lease_seconds"] = ListingsApp.MinLeaseSeconds - 1; break;
            case "no min lease": body.Remove("min_lease_seconds"); break;
            case "count is text": body["min_lease_seconds"] = "an hour"; break;
            default: throw new ArgumentException(@case);
        }
        var before = await app.SnapshotAsync();

        var response = await client.PostAsJsonAsync("/v1/offers", body);

        Assert.Equal("application/problem+json", response.Content.Headers.ContentType?.MediaType);
        var problem = await ListingsApp.ReadAsync<Problem>(response, (HttpStatusCode)status);
        Assert.StartsWith("https://", problem.Type);
        if (field == "malformed") Assert.EndsWith("/malformed-request", problem.Type);
        else if (field.Length > 0) Assert.Contains(field + ":", problem.Detail);
        Assert.Equal(before, await app.SnapshotAsync());
    }

    [Theory]
    [InlineData("accelerator_model=tpu-v5", "accelerator_model")]
    [InlineData("region=CN%20East", "region")]
    [InlineData("jurisdiction=china", "jurisdiction")]
    [InlineData("min_count=0", "min_count")]
    [InlineData("max_price=300", "currency")]
    [InlineData("max_price=-1&currency=CNY", "max_price")]
    [InlineData("currency=cny", "currency")]
    [InlineData("sort=popularity", "sort")]
    [InlineData("sort=price", "currency")]
    [InlineData("limit=0", "limit")]
    [InlineData("limit=101", "limit")]
    [InlineData("cursor=not-a-cursor", "cursor")]
    [InlineData("available_from=2030-01-02T00:00:00Z&available_to=2030-01-01T00:00:00Z", "available_to")]
    [InlineData("min_count=many", "malformed")]
    public async Task A_bad_search_is_rejected_with_a_problem_naming_the_parameter(string query, string field)
    {
        var response = await app.Renter(Guid.NewGuid()).GetAsync("/v1/offers?" + query);

        Assert.Equal("application/problem+json", response.Content.Headers.ContentType?.MediaType);
        await ListingsApp.AssertRefusedAsync(response, field);
    }

    [Theory]
    // A created_at cursor whose time is before year 1 (the cursor format allows -1, which reliability cursors use for "none").
    [InlineData("cursor=Y3JlYXRlZF9hdHwtMXwwMDAwMDAwMC0wMDAwLTAwMDAtMDAwMC0wMDAwMDAwMDAwMDE", "cursor")]
    // A bound alone stands for the microsecond at it, which does not exist at the very ends of the calendar.
    [InlineData("available_to=0001-01-01T00:00:00Z", "available_to")]
    [InlineData("available_from=9999-12-31T23:59:59.9999999Z", "available_from")]
    public async Task A_search_cursor_or_bound_at_the_edge_of_time_is_a_400_naming_it_not_a_500(string query, string field)
    {
        var response = await app.Renter(Guid.NewGuid()).GetAsync("/v1/offers?" + query);

        Assert.Equal("application/problem+json", response.Content.Headers.ContentType?.MediaType);
        await ListingsApp.AssertRefusedAsync(response, field);
    }

    [Fact]
    public async Task A_cursor_of_one_sort_is_refused_by_the_other()
    {
        var client = app.Provider(Guid.NewGuid());
        var cluster = await app.CreateClusterAsync(client);
        for (var i = 0; i < 2; i++)
        {
            var node = await app.CreateNodeAsync(client, cluster.Id, "mlu370", 1);
            await app.PublishOfferAsync(client, cluster.Id, [node.Id], T0.AddDays(10), T0.AddDays(11));
        }
        var page = await ListingsApp.ReadAsync<Page<Offer>>(await client.GetAsync("/v1/offers?accelerator_model=mlu370&limit=1"), HttpStatusCode.OK);
        Assert.NotNull(page.NextCursor);

        var response = await client.GetAsync($"/v1/offers?accelerator_model=mlu370&limit=1&sort=price&currency=CNY&cursor={page.NextCursor}");

        Assert.Contains("cursor:", (await ListingsApp.ReadAsync<Problem>(response, HttpStatusCode.BadRequest)).Detail);
    }
}
