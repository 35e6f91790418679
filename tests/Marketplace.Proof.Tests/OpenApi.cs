using System.Text.Json.Nodes;

namespace Marketplace.Proof.Tests;

/// <summary>One operation of the public OpenAPI document, with its parameters and body schema resolved.</summary>
public sealed record Operation(string Method, string Path, IReadOnlyList<Parameter> PathParams, IReadOnlyList<Parameter> QueryParams,
    JsonObject? BodySchema, bool Anonymous)
{
    public string Key => $"{Method} {Path}";
    public bool Writes => Method is not "GET";

    /// <summary>Every /v1 operation of the document (the gateway's merged document of all services).</summary>
    public static IReadOnlyList<Operation> All(JsonObject document)
    {
        var ops = new List<Operation>();
        foreach (var (path, item) in document["paths"]!.AsObject())
        {
            if (!path.StartsWith("/v1/", StringComparison.Ordinal) || item is not JsonObject methods) continue;
            foreach (var (method, node) in methods)
            {
                if (node is not JsonObject op || method is "parameters" or "summary" or "description") continue;
                var parameters = (op["parameters"] as JsonArray ?? []).Concat(methods["parameters"] as JsonArray ?? [])
                    .Select(p => Resolve(document, p!.AsObject())).ToList();
                Parameter Param(JsonObject p) => new((string)p["name"]!, Resolve(document, p["schema"] as JsonObject ?? []), (bool?)p["required"] ?? false);
                var body = op["requestBody"]?["content"]?["application/json"]?["schema"] as JsonObject;
                var anonymous = op["security"] is JsonArray { Count: 0 };
                ops.Add(new Operation(method.ToUpperInvariant(), path,
                    parameters.Where(p => (string?)p["in"] == "path").Select(Param).ToList(),
                    parameters.Where(p => (string?)p["in"] == "query").Select(Param).ToList(),
                    body is null ? null : Resolve(document, body), anonymous));
            }
        }
        return ops;
    }

    /// <summary>Follows $ref (and a one-element allOf/oneOf/anyOf wrapper) to the schema itself.</summary>
    public static JsonObject Resolve(JsonObject document, JsonObject schema, int depth = 0)
    {
        if (depth > 20) return schema;
        if (schema["$ref"] is JsonValue r && ((string)r!).StartsWith("#/", StringComparison.Ordinal))
        {
            JsonNode? node = document;
            foreach (var part in ((string)r!)[2..].Split('/')) node = node?[part.Replace("~1", "/").Replace("~0", "~")];
            return node is JsonObject o ? Resolve(document, o, depth + 1) : [];
        }
        foreach (var combinator in new[] { "allOf", "oneOf", "anyOf" })
            if (schema[combinator] is JsonArray list)
            {
                var nonNull = list.OfType<JsonObject>().Where(s => (string?)s["type"] != "null").ToList();
                if (nonNull.Count >= 1) return Resolve(document, nonNull[0], depth + 1);
            }
        return schema;
    }

    /// <summary>The schema's type, whether written "type": "integer" or "type": ["null", "integer"].</summary>
    public static string TypeOf(JsonObject schema) => schema["type"] switch
    {
        JsonValue v => (string)v!,
        JsonArray a => a.Select(t => (string?)t).FirstOrDefault(t => t != "null") ?? "null",
        _ => schema["properties"] is not null ? "object" : schema["items"] is not null ? "array" : "string",
    };
}

public sealed record Parameter(string Name, JsonObject Schema, bool Required);
