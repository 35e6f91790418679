using System.Net;
using System.Text.Json;
using Dapper;
using Marketplace.ServiceDefaults.Data;
using Marketplace.ServiceDefaults.Hosting;
using Marketplace.Testing;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.DependencyInjection;
using Xunit;

namespace Marketplace.ServiceDefaults.Tests;

/// <summary>
/// An overloaded service (its connection pool exhausted) must tell the client to retry, not claim an internal error:
/// 503 problem+json with Retry-After, and nothing written.
/// </summary>
public sealed class TransientFailureTests : ServersPerTest
{
    [Fact]
    public async Task An_exhausted_connection_pool_answers_503_with_retry_after_and_writes_nothing()
    {
        // Two connections at most, and a one-second wait for a free one.
        await using var app = ProbeHost.Build(_db, _vhost, connectionStringSuffix: ";Maximum Pool Size=2;Timeout=1");
        app.MapServiceDefaults(behindGateway: false);
        app.MapPost("/write-while-busy", async (Db db) =>
        {
            await using var first = await db.DataSource.OpenConnectionAsync();
            await using var second = await db.DataSource.OpenConnectionAsync();
            await using var tx = await db.BeginAsync(CancellationToken.None); // a third: the pool is exhausted
            await tx.Connection.ExecuteAsync("INSERT INTO probe_effects (key) VALUES ('busy')");
            await tx.CommitAsync(CancellationToken.None);
            return Results.Ok();
        });
        await app.StartAsync();
        using var client = new HttpClient { BaseAddress = new Uri(app.Urls.First()) };

        var response = await client.PostAsync("/write-while-busy", null);

        Assert.Equal(HttpStatusCode.ServiceUnavailable, response.StatusCode);
        Assert.Equal("application/problem+json", response.Content.Headers.ContentType?.MediaType);
        Assert.Equal(TimeSpan.FromSeconds(1), response.Headers.RetryAfter?.Delta);
        var problem = JsonDocument.Parse(await response.Content.ReadAsStringAsync()).RootElement;
        Assert.EndsWith("temporarily-unavailable", problem.GetProperty("type").GetString());
        Assert.Contains("Retry", problem.GetProperty("detail").GetString());
        await using var admin = _db.OpenAdmin();
        Assert.Equal(0, await admin.ExecuteScalarAsync<long>("SELECT count(*) FROM listings.probe_effects WHERE key = 'busy'"));
        await app.StopAsync();
    }
}
