using System.Net;
using System.Net.Http.Headers;
using System.Net.Http.Json;
using System.Text.Json.Nodes;

namespace Marketplace.Demo;

/// <summary>A thin HTTP client for the public API, as one organisation (one API key).</summary>
public sealed class Api(Uri gateway, string apiKey) : IDisposable
{
    private readonly HttpClient _http = new()
    {
        BaseAddress = gateway,
        Timeout = TimeSpan.FromSeconds(30),
        DefaultRequestHeaders = { Authorization = new AuthenticationHeaderValue("Bearer", apiKey) },
    };

    public async Task<JsonNode> PostAsync(string path, object body, string? idempotencyKey = null, CancellationToken ct = default)
    {
        using var request = new HttpRequestMessage(HttpMethod.Post, path) { Content = JsonContent.Create(body) };
        if (idempotencyKey is not null) request.Headers.Add("Idempotency-Key", idempotencyKey);
        return await SendAsync(request, ct);
    }

    public Task<JsonNode> GetAsync(string path, CancellationToken ct = default) =>
        SendAsync(new HttpRequestMessage(HttpMethod.Get, path), ct);

    public Task<JsonNode> DeleteAsync(string path, CancellationToken ct = default) =>
        SendAsync(new HttpRequestMessage(HttpMethod.Delete, path), ct);

    /// <summary>Polls <paramref name="path"/> until <paramref name="done"/> holds.</summary>
    public async Task<JsonNode> WaitForAsync(string path, Func<JsonNode, bool> done, TimeSpan timeout, string what, CancellationToken ct = default)
    {
        var deadline = DateTime.UtcNow + timeout;
        JsonNode last;
        do
        {
            last = await GetAsync(path, ct);
            if (done(last)) return last;
            await Task.Delay(250, ct);
        } while (DateTime.UtcNow < deadline);
        throw new TimeoutException($"Timed out waiting for {what}; last answer: {last.ToJsonString()}");
    }

    private async Task<JsonNode> SendAsync(HttpRequestMessage request, CancellationToken ct)
    {
        using (request)
        {
            using var response = await _http.SendAsync(request, ct);
            var text = await response.Content.ReadAsStringAsync(ct);
            if (!response.IsSuccessStatusCode)
                throw new ApiException(response.StatusCode, $"{request.Method} {request.RequestUri} → {(int)response.StatusCode}: {text}");
            return string.IsNullOrWhiteSpace(text) ? new JsonObject() : JsonNode.Parse(text)!;
        }
    }

    public void Dispose() => _http.Dispose();
}

public sealed class ApiException(HttpStatusCode status, string message) : Exception(message)
{
    public HttpStatusCode Status { get; } = status;
}
