using System.Net;
using System.Net.Http.Json;
using System.Text.Json;
using Xunit;
using static Marketplace.Bidding.Tests.Api.BiddingFixture;

namespace Marketplace.Bidding.Tests.Api;

/// <summary>A depth window at the end of the calendar overflowed computing its default end: a 500 instead of a 400.</summary>
public sealed class DepthWindowValidationTests(BiddingFixture fx) : IClassFixture<BiddingFixture>
{
    [Theory]
    [InlineData("9999-12-31T23:30:00Z")]
    [InlineData("9999-12-31T23:59:59Z")]
    public async Task A_depth_window_starting_too_far_ahead_is_a_validation_problem_not_a_server_error(string windowStart)
    {
        var response = await fx.Renter(Guid.NewGuid()).GetAsync(
            $"/v1/market/{NewModel()}/depth?window_start={Uri.EscapeDataString(windowStart)}");

        Assert.Equal(HttpStatusCode.BadRequest, response.StatusCode);
        Assert.Equal("application/problem+json", response.Content.Headers.ContentType?.MediaType);
        var problem = await response.Content.ReadFromJsonAsync<JsonElement>();
        Assert.EndsWith("/problems/validation", problem.GetProperty("type").GetString(), StringComparison.Ordinal);
        Assert.True(problem.GetProperty("errors").TryGetProperty("window_start", out _));
    }

    [Fact]
    public async Task A_depth_window_that_ended_before_now_shows_no_on_demand_bids()
    {
        var model = NewModel();
        var renter = fx.Renter(Guid.NewGuid());
        var resting = await ReadAsync(await PostOrderAsync(renter, OrderBody(model, count: 3, max: 180)));
        Assert.Equal("open", resting.GetProperty("status").GetString()); // no offer: it rests in the book from now on

        var now = DateTimeOffset.UtcNow;
        string Window(DateTimeOffset start, DateTimeOffset end) =>
            $"/v1/market/{model}/depth?currency=CNY&window_start={Uri.EscapeDataString(start.ToString("O"))}&window_end={Uri.EscapeDataString(end.ToString("O"))}";
        var current = await ReadAsync(await renter.GetAsync(Window(now.AddMinutes(-30), now.AddMinutes(30))));
        Assert.Equal(3, current.GetProperty("bids")[0].GetProperty("accelerators").GetInt32());
        var past = await ReadAsync(await renter.GetAsync(Window(now.AddHours(-3), now.AddHours(-2))));
        Assert.Equal(0, past.GetProperty("bids").GetArrayLength()); // an on-demand order runs from now: not in a window that is over
    }
}
