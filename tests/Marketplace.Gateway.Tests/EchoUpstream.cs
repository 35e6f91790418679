using System.Text.Json.Nodes;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.Logging;

namespace Marketplace.Gateway.Tests;

/// <summary>
/// A test double of an upstream service on a real port: answers every request with what it received (method, path,
/// headers, body) as JSON, and serves a small OpenAPI document.
/// </summary>
public sealed class EchoUpstream : IAsyncDisposable
{
    private readonly WebApplication _app;

    private EchoUpstream(WebApplication app) => _app = app;

    public string Url => _app.Urls.First();

    public static async Task<EchoUpstream> StartAsync()
    {
        var builder = WebApplication.CreateSlimBuilder();
        builder.WebHost.UseUrls("http://127.0.0.1:0");
        builder.Logging.ClearProviders();
        var app = builder.Build();
        app.MapGet("/openapi/v1.json", () => Results.Text("""
            {
              "openapi": "3.1.1",
              "info": { "title": "echo", "version": "v1" },
              "paths": {
                "/v1/echo-things": { "get": { "operationId": "ListEchoThings", "responses": { "200": { "description": "OK" } } } },
                "/internal/echo": { "get": { "responses": { "200": { "description": "OK" } } } }
              },
              "components": { "schemas": { "EchoThing": { "type": "object", "properties": { "id": { "type": "string" } } } } }
            }
            """, "application/json"));
        app.Map("/{**path}", async (HttpContext context) =>
        {
            var body = await new StreamReader(context.Request.Body).ReadToEndAsync();
            var headers = new JsonObject();
            foreach (var (name, value) in context.Request.Headers) headers[name.ToLowerInvariant()] = value.ToString();
            return Results.Json(new JsonObject
            {
                ["method"] = context.Request.Method,
                ["path"] = context.Request.Path.Value,
                ["headers"] = headers,
                ["body"] = body,
            });
        });
        await app.StartAsync();
        return new EchoUpstream(app);
    }

    private int _disposed;

    public async ValueTask DisposeAsync()
    {
        if (Interlocked.Exchange(ref _disposed, 1) == 0) await _app.DisposeAsync();
    }
}
