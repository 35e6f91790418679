using System.Net.Http.Headers;
using System.Net.Http.Json;
using System.Text.Json.Nodes;

namespace Marketplace.FinanceCli;

/// <summary>The public API as finance uses it, through the gateway with a finance API key. JSON stays JSON (JsonNode).</summary>
public sealed class FinanceClient : IDisposable
{
    private readonly HttpClient _http;

    public FinanceClient(string gatewayUrl, string apiKey, HttpMessageHandler? handler = null)
    {
        _http = handler is null ? new HttpClient() : new HttpClient(handler, disposeHandler: false);
        _http.BaseAddress = new Uri(gatewayUrl.TrimEnd('/') + "/");
        _http.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue("Bearer", apiKey);
        // A period with many leases takes a while; the progress endpoint shows it is moving.
        _http.Timeout = TimeSpan.FromMinutes(30);
    }

    public async Task<JsonNode> RunPeriodAsync(string period, CancellationToken ct) =>
        await SendAsync(HttpMethod.Post, $"v1/billing/periods/{Uri.EscapeDataString(period)}/runs", ct);

    /// <summary>The run's progress, or null before the period's first run has recorded it.</summary>
    public async Task<JsonNode?> ProgressAsync(string period, CancellationToken ct)
    {
        using var response = await _http.GetAsync($"v1/billing/periods/{Uri.EscapeDataString(period)}/runs", ct);
        if (response.StatusCode == System.Net.HttpStatusCode.NotFound) return null;
        await EnsureAsync(response, ct);
        return await response.Content.ReadFromJsonAsync<JsonNode>(ct);
    }

    public Task<List<JsonNode>> InvoicesAsync(CancellationToken ct) => AllPagesAsync("v1/invoices", ct);
    public Task<List<JsonNode>> StatementsAsync(CancellationToken ct) => AllPagesAsync("v1/statements", ct);
    public Task<JsonNode> TrialBalanceAsync(CancellationToken ct) => SendAsync(HttpMethod.Get, "v1/ledger/trial-balance", ct);

    /// <summary>invoices | statements | ledger as CSV (the API's own export).</summary>
    public async Task<string> ExportCsvAsync(string what, CancellationToken ct)
    {
        var path = what switch
        {
            "invoices" => "v1/invoices/export.csv",
            "statements" => "v1/statements/export.csv",
            "ledger" => "v1/ledger/entries.csv",
            _ => throw new ArgumentException($"Unknown export '{what}'; use invoices, statements or ledger.", nameof(what)),
        };
        using var response = await _http.GetAsync(path, ct);
        await EnsureAsync(response, ct);
        return await response.Content.ReadAsStringAsync(ct);
    }

    private async Task<List<JsonNode>> AllPagesAsync(string path, CancellationToken ct)
    {
        var all = new List<JsonNode>();
        string? cursor = null;
        do
        {
            var page = await SendAsync(HttpMethod.Get, cursor is null ? $"{path}?limit=100" : $"{path}?limit=100&cursor={Uri.EscapeDataString(cursor)}", ct);
            all.AddRange(page["data"]!.AsArray().Select(n => n!));
            cursor = (string?)page["next_cursor"];
        } while (cursor is not null);
        return all;
    }

    private async Task<JsonNode> SendAsync(HttpMethod method, string path, CancellationToken ct)
    {
        using var request = new HttpRequestMessage(method, path);
        using var response = await _http.SendAsync(request, ct);
        await EnsureAsync(response, ct);
        return (await response.Content.ReadFromJsonAsync<JsonNode>(ct))!;
    }

    private static async Task EnsureAsync(HttpResponseMessage response, CancellationToken ct)
    {
        if (response.IsSuccessStatusCode) return;
        var body = await response.Content.ReadAsStringAsync(ct);
        string? detail = null;
        try { detail = (string?)JsonNode.Parse(body)?["detail"]; } catch (System.Text.Json.JsonException) { }
        throw new FinanceApiException($"{(int)response.StatusCode} {response.ReasonPhrase}: {detail ?? body}");
    }

    public void Dispose() => _http.Dispose();
}

public sealed class FinanceApiException(string message) : Exception(message);
