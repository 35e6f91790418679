using System.Net;
using System.Net.Sockets;
using System.Text;
using System.Text.Json;
using Xunit;

namespace Marketplace.Gateway.Tests;

/// <summary>
/// Requests Kestrel rejects before any middleware runs (known issue 2: <c>%00</c> in the path was a bare 400) answer
/// the API's problem+json with a detail a person can act on. Sent over a raw socket, byte for byte.
/// </summary>
public sealed class KestrelRejectionTests(KestrelGatewayFixture fx) : IClassFixture<KestrelGatewayFixture>
{
    private sealed record RawAnswer(int Status, Dictionary<string, string> Headers, string Body);

    private async Task<RawAnswer> SendRawAsync(string request)
    {
        var address = fx.Address;
        using var socket = new TcpClient();
        await socket.ConnectAsync(address.Host, address.Port);
        var stream = socket.GetStream();
        await stream.WriteAsync(Encoding.Latin1.GetBytes(request));
        using var read = new MemoryStream();
        await stream.CopyToAsync(read); // Kestrel closes the connection after a rejection
        var text = Encoding.UTF8.GetString(read.ToArray());
        var headEnd = text.IndexOf("\r\n\r\n", StringComparison.Ordinal);
        Assert.True(headEnd > 0, "no complete answer: " + text);
        var lines = text[..headEnd].Split("\r\n");
        var headers = lines.Skip(1).Select(l => l.Split(": ", 2)).ToDictionary(p => p[0], p => p[1], StringComparer.OrdinalIgnoreCase);
        var body = text[(headEnd + 4)..];
        Assert.Equal(int.Parse(headers["Content-Length"]), Encoding.UTF8.GetByteCount(body));
        return new RawAnswer(int.Parse(lines[0].Split(' ')[1]), headers, body);
    }

    private static JsonElement AssertProblem(RawAnswer answer, int status)
    {
        Assert.Equal(status, answer.Status);
        Assert.Equal("application/problem+json", answer.Headers["Content-Type"]);
        var problem = JsonDocument.Parse(answer.Body).RootElement;
        Assert.Equal("https://docs.marketplace.local/problems/malformed-request", problem.GetProperty("type").GetString());
        Assert.Equal(status, problem.GetProperty("status").GetInt32());
        return problem;
    }

    [Theory]
    [InlineData("/v1/orders/%00")]
    [InlineData("/%00")]
    [InlineData("/v1/clusters/a%00b/nodes")]
    public async Task A_NUL_in_the_target_is_a_problem_400_that_says_what_to_fix(string target)
    {
        var answer = await SendRawAsync($"GET {target} HTTP/1.1\r\nHost: localhost\r\n\r\n");

        var problem = AssertProblem(answer, 400);
        Assert.Contains("%00", problem.GetProperty("detail").GetString(), StringComparison.Ordinal);
        Assert.Equal("close", answer.Headers["Connection"]);
    }

    [Fact]
    public async Task An_unreadable_request_line_is_a_problem_400()
    {
        var answer = await SendRawAsync("GET /v1/orders HTTP/1.1 extra\r\nHost: localhost\r\n\r\n");

        Assert.Contains("request line", AssertProblem(answer, 400).GetProperty("detail").GetString(), StringComparison.Ordinal);
    }

    [Fact]
    public async Task Headers_larger_than_the_limit_are_a_problem_431()
    {
        var answer = await SendRawAsync($"GET /v1/orders HTTP/1.1\r\nHost: localhost\r\nX-Big: {new string('a', 40_000)}\r\n\r\n");

        Assert.Contains("headers", AssertProblem(answer, 431).GetProperty("detail").GetString(), StringComparison.Ordinal);
    }

    [Fact]
    public async Task An_ordinary_request_on_the_same_server_is_answered_as_before()
    {
        // Keep-alive: two answers on one connection, the second after a first that was a normal problem (401).
        var address = fx.Address;
        using var client = new HttpClient { BaseAddress = address };
        var first = await client.GetAsync("/v1/orders/00000000-0000-0000-0000-000000000000");
        await Problem.AssertAsync(first, HttpStatusCode.Unauthorized, "unauthenticated");
        var health = await client.GetAsync("/health/live");
        Assert.True(health.IsSuccessStatusCode, $"health: {(int)health.StatusCode}");
    }
}
