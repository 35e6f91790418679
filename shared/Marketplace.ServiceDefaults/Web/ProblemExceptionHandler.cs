using System.Diagnostics;
using System.Text.Json;
using Microsoft.AspNetCore.Diagnostics;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.Logging;

namespace Marketplace.ServiceDefaults.Web;

/// <summary>
/// Turns unreadable requests into a 400 problem that says what was wrong; a database that is momentarily out of
/// reach or overloaded (connection pool exhausted, timeout, deadlock, serialization failure, server restarting) into a
/// 503 with Retry-After, since the same request will likely succeed shortly; anything unexpected into a 500 problem
/// with a trace id and no internals.
/// </summary>
public sealed class ProblemExceptionHandler(IProblemDetailsService problems, ILogger<ProblemExceptionHandler> logger) : IExceptionHandler
{
    /// <summary>The wait suggested to clients for a transient failure.</summary>
    public const int RetryAfterSeconds = 1;

    public async ValueTask<bool> TryHandleAsync(HttpContext context, Exception exception, CancellationToken ct)
    {
        var (status, slug, title, detail) = exception switch
        {
            BadHttpRequestException { InnerException: JsonException json } =>
                (400, "malformed-request", "The request body is not valid", $"The JSON body could not be read: {json.Message}"),
            BadHttpRequestException bad when bad.StatusCode == 413 =>
                (413, "request-too-large", "The request body is too large", bad.Message),
            BadHttpRequestException bad =>
                (bad.StatusCode, "malformed-request", "The request is not valid", bad.Message),
            // PostgreSQL text cannot hold NUL (U+0000); the statement failed, so its transaction wrote nothing.
            Npgsql.PostgresException { SqlState: "22021" or "22P05" } =>
                (400, "invalid-text", "The request is not valid", "Text fields must not contain the NUL character (\\u0000); remove it and send the request again."),
            // Transient: the transaction rolled back, nothing was written; the same request (same Idempotency-Key) can be retried.
            Npgsql.NpgsqlException { IsTransient: true } or TimeoutException =>
                (503, "temporarily-unavailable", "The service is busy; retry shortly",
                    "The request could not be served right now (the database is busy or restarting) and nothing was written. "
                    + "Retry after the number of seconds in Retry-After, with the same Idempotency-Key."),
            _ => (500, "internal", "Something went wrong on our side",
                "The request failed unexpectedly. Nothing was charged; retry it with the same Idempotency-Key, and quote the trace id if it persists."),
        };
        if (status == 503)
        {
            logger.LogWarning(exception, "Transient failure for {Method} {Path}; answered 503", context.Request.Method, context.Request.Path);
            context.Response.Headers.RetryAfter = RetryAfterSeconds.ToString(System.Globalization.CultureInfo.InvariantCulture);
        }
        else if (status >= 500) logger.LogError(exception, "Unhandled exception for {Method} {Path}", context.Request.Method, context.Request.Path);
        context.Response.StatusCode = status;
        return await problems.TryWriteAsync(new ProblemDetailsContext
        {
            HttpContext = context,
            Exception = exception,
            ProblemDetails =
            {
                Status = status, Type = Problems.TypeBase + slug, Title = title, Detail = detail,
                Extensions = { ["trace_id"] = Activity.Current?.TraceId.ToString() },
            },
        });
    }
}
