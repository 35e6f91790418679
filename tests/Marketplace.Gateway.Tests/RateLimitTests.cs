using System.Net;
using Xunit;

namespace Marketplace.Gateway.Tests;

public sealed class RateLimitTests(TinyRateLimitFixture gateway) : IClassFixture<TinyRateLimitFixture>
{
    [Fact]
    public async Task A_key_over_its_bucket_gets_429_with_retry_after()
    {
        using var admin = gateway.Client(GatewayFixture.AdminKey);
        // The bucket holds one request and refills one per second: ten in a row cannot all pass.
        var responses = new List<HttpResponseMessage>();
        for (var i = 0; i < 10; i++) responses.Add(await admin.GetAsync("/v1/accelerators"));

        var rejected = responses.FirstOrDefault(r => r.StatusCode == HttpStatusCode.TooManyRequests);
        Assert.NotNull(rejected);
        await Problem.AssertAsync(rejected!, HttpStatusCode.TooManyRequests, "rate-limited");
        Assert.True(rejected!.Headers.RetryAfter?.Delta >= TimeSpan.FromSeconds(1));
    }
}
