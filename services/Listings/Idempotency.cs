using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using Dapper;
using Marketplace.ServiceDefaults.Data;
using Marketplace.ServiceDefaults.Web;
using Microsoft.AspNetCore.Http.HttpResults;

namespace Marketplace.Listings;

/// <summary>
/// The optional <c>Idempotency-Key</c> of the POSTs that create (clusters, nodes, offers), one rule for all: the same key
/// with the same request answers 200 with the object the first request created; the key with another request is a 422
/// <c>idempotency-key-reused</c>; requests racing with one key take turns on the key's lock, so one object is created.
/// A key belongs to the caller's organisation and to one kind of object (<see cref="Scope"/>).
/// </summary>
internal static class Idempotency
{
    public const string Header = "Idempotency-Key";

    public enum Scope { Clusters, Nodes, Offers }

    /// <summary>What the first request with the key created, and the fingerprint of that request.</summary>
    public sealed record Earlier(Guid ObjectId, string RequestHash);

    /// <summary>The 400 for a key that is empty, too long or has control characters; null when it is absent or fine.</summary>
    public static ValidationProblem? Invalid(string? key, string what) =>
        key is not null && (key.Length is 0 or > 255 || key.Any(char.IsControl))
            ? new Validation().Add(Header, $"must be 1 to 255 printable characters: a unique value per {what} (a UUID), reused only to retry.").Problem
            : null;

    /// <summary>The fingerprint of a request: everything that decides what it creates (its body, and its route's ids).</summary>
    public static string Hash<T>(T request) => Convert.ToHexString(SHA256.HashData(Encoding.UTF8.GetBytes(JsonSerializer.Serialize(request))));

    /// <summary>
    /// Takes the key's lock until <paramref name="tx"/> ends and returns what an earlier request with it created, or null
    /// (no key, or its first use). Call it before creating anything.
    /// </summary>
    public static async Task<Earlier?> FindAsync(Tx tx, Guid org, Scope scope, string? key, CancellationToken ct)
    {
        if (key is null) return null;
        await tx.Connection.ExecuteAsync(new CommandDefinition("SELECT pg_advisory_xact_lock(hashtextextended(@lockKey, 0))",
            new { lockKey = $"idempotency/{org}/{Name(scope)}/{key}" }, tx.Transaction, cancellationToken: ct));
        var earlier = await tx.Connection.QuerySingleOrDefaultAsync<(Guid ObjectId, string RequestHash)?>(new CommandDefinition("""
            SELECT object_id, request_hash FROM idempotency_keys WHERE org_id = @org AND scope = @scope AND key = @key
            """, new { org, scope = Name(scope), key }, tx.Transaction, cancellationToken: ct));
        return earlier is { } e ? new Earlier(e.ObjectId, e.RequestHash) : null;
    }

    /// <summary>Remembers the key with the object this request created, in the transaction that creates it.</summary>
    public static Task RememberAsync(Tx tx, Guid org, Scope scope, string? key, string requestHash, Guid objectId, CancellationToken ct) =>
        key is null ? Task.CompletedTask : tx.Connection.ExecuteAsync(new CommandDefinition("""
            INSERT INTO idempotency_keys (org_id, scope, key, request_hash, object_id, created_at)
            VALUES (@org, @scope, @key, @requestHash, @objectId, @now)
            """, new { org, scope = Name(scope), key, requestHash, objectId, now = tx.Now }, tx.Transaction, cancellationToken: ct));

    /// <summary>The 422 for a key first used with another request.</summary>
    public static ProblemHttpResult Reused(string key, string what, Guid objectId) =>
        Problems.Unprocessable("idempotency-key-reused",
            $"The Idempotency-Key '{key}' was already used for a different {what} ({objectId}). "
            + $"Use a new key for a new {what}, or resend exactly the same request to get the original {what}.");

    private static string Name(Scope scope) => scope switch
    {
        Scope.Clusters => "clusters",
        Scope.Nodes => "nodes",
        _ => "offers",
    };
}
