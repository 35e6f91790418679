using System.Net;
using System.Net.Http.Json;
using System.Text;
using Marketplace.Testing;
using static Marketplace.Bidding.Tests.Api.BiddingFixture;

namespace Marketplace.Bidding.Tests.Api;

/// <summary>An offer of part of its nodes (slot ids) and an order for verified capacity only reach Scheduling in OrderMatched.</summary>
public sealed class NewContractFieldsTests(BiddingFixture fx) : IClassFixture<BiddingFixture>
{
    [Fact]
    public async Task An_offers_slot_ids_and_a_verified_only_order_are_carried_into_OrderMatched()
    {
        var model = NewModel();
        var slots = new[] { Guid.NewGuid(), Guid.NewGuid(), Guid.NewGuid() };
        var offer = await fx.PublishOfferAsync(model, count: 3, slotIds: slots);
        var renter = fx.Renter(Guid.NewGuid());

        var response = await PostOrderAsync(renter, new
        {
            type = "on_demand", accelerator_model = model, accelerator_count = 2, duration_seconds = 3600,
            max_price_per_hour = new { amount = 300, currency = "CNY" }, verified_only = true,
        });

        Assert.Equal(HttpStatusCode.Created, response.StatusCode);
        var order = await ReadAsync(response);
        var id = order.GetProperty("id").GetString()!;
        Assert.True(order.GetProperty("verified_only").GetBoolean());
        Assert.True((await GetOrderAsync(renter, id)).GetProperty("verified_only").GetBoolean());
        var matched = await Eventually.Get(() => Task.FromResult(fx.Relayed.FirstOrDefault(m => m.OrderId.ToString() == id)), m => true,
            what: "OrderMatched relayed");
        Assert.Equal(offer.OfferId, matched.OfferId);
        Assert.True(matched.VerifiedOnly);
        Assert.Equal(slots, matched.SlotIds);
    }

    [Fact]
    public async Task Without_the_new_fields_an_order_is_not_verified_only_and_its_match_takes_whole_nodes()
    {
        var model = NewModel();
        await fx.PublishOfferAsync(model);
        var renter = fx.Renter(Guid.NewGuid());

        var order = await ReadAsync(await PostOrderAsync(renter, OrderBody(model)));
        var id = order.GetProperty("id").GetString()!;

        Assert.False(order.GetProperty("verified_only").GetBoolean());
        var matched = await Eventually.Get(() => Task.FromResult(fx.Relayed.FirstOrDefault(m => m.OrderId.ToString() == id)), m => true,
            what: "OrderMatched relayed");
        Assert.False(matched.VerifiedOnly);
        Assert.Null(matched.SlotIds);
    }

    [Fact]
    public async Task Verified_only_false_is_the_same_order_as_without_it_for_the_idempotency_key()
    {
        var model = NewModel();
        var renter = fx.Renter(Guid.NewGuid());
        var key = Guid.NewGuid().ToString();
        var first = await PostOrderAsync(renter, OrderBody(model), key);
        var again = await PostOrderAsync(renter, new
        {
            type = "on_demand", accelerator_model = model, accelerator_count = 1, duration_seconds = 3600,
            max_price_per_hour = new { amount = 300, currency = "CNY" }, time_in_force = "gtc", verified_only = false,
        }, key);
        var different = await PostOrderAsync(renter, new
        {
            type = "on_demand", accelerator_model = model, accelerator_count = 1, duration_seconds = 3600,
            max_price_per_hour = new { amount = 300, currency = "CNY" }, time_in_force = "gtc", verified_only = true,
        }, key);

        Assert.Equal(HttpStatusCode.Created, first.StatusCode);
        Assert.Equal(HttpStatusCode.OK, again.StatusCode);
        Assert.Equal(HttpStatusCode.UnprocessableEntity, different.StatusCode);
    }

    [Theory]
    [InlineData("\"yes\"")]
    [InlineData("1")]
    [InlineData("\"true\"")]
    [InlineData("{}")]
    public async Task A_verified_only_that_is_not_a_boolean_is_a_400_problem_and_writes_nothing(string value)
    {
        var org = Guid.NewGuid();
        var body = $$"""
            {"type": "on_demand", "accelerator_model": "{{NewModel()}}", "accelerator_count": 1, "duration_seconds": 3600,
             "max_price_per_hour": {"amount": 300, "currency": "CNY"}, "verified_only": {{value}}}
            """;
        using var request = new HttpRequestMessage(HttpMethod.Post, "/v1/orders") { Content = new StringContent(body, Encoding.UTF8, "application/json") };
        request.Headers.Add("Idempotency-Key", Guid.NewGuid().ToString());

        var response = await fx.Renter(org).SendAsync(request);

        Assert.Equal(HttpStatusCode.BadRequest, response.StatusCode);
        Assert.Equal("application/problem+json", response.Content.Headers.ContentType?.MediaType);
        Assert.Contains("verified_only", await response.Content.ReadAsStringAsync());
        Assert.Equal(0L, await fx.ScalarAsync<long>("SELECT count(*) FROM bidding.orders WHERE renter_org_id = @org", new { org }));
    }
}
