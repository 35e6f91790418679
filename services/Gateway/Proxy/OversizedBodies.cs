using System.Globalization;
using Marketplace.ServiceDefaults.Web;
using Microsoft.AspNetCore.Http.Features;
using Microsoft.AspNetCore.Http.HttpResults;

namespace Marketplace.Gateway.Proxy;

/// <summary>
/// A request that declares a body larger than the gateway accepts is answered 413 with <c>Connection: close</c> before
/// anything else can answer it. An error answer to a request with a chunked body (whose size is not known up front)
/// closes the connection too.
/// </summary>
/// <remarks>
/// Otherwise a route that answers without reading the body (401, 403, 404, 429) answers first, as keep-alive. Only after
/// that answer does Kestrel try to drain the body. It finds the body over the limit and closes the connection. A client
/// that has already reused the connection for its next request gets no answer to it. HttpClient does not retry such a
/// request when it has a body ("The response ended prematurely"). <c>Connection: close</c> on the answer tells the client
/// not to reuse the connection.
/// </remarks>
internal static class OversizedBodies
{
    public static IApplicationBuilder UseOversizedBodyRefusal(this IApplicationBuilder app) => app.Use(async (context, next) =>
    {
        var request = context.Request;
        var limit = context.Features.Get<IHttpMaxRequestBodySizeFeature>()?.MaxRequestBodySize;
        if (request.ContentLength is { } length && length > limit)
        {
            context.Response.Headers.Connection = "close";
            await TooLarge(string.Create(CultureInfo.InvariantCulture, $"{length} bytes"), limit).ExecuteAsync(context);
            return;
        }
        if (request.ContentLength is null && request.Headers.TransferEncoding.Count > 0)
        {
            // A chunked body (HttpClient's JSON content is one) declares no size, so whether it can be drained is known
            // only after the answer. An error may be answered before the body is read; a success has read it. Closing
            // after errors only keeps keep-alive for the usual case. (OnStarting: the exception handler clears headers.)
            context.Response.OnStarting(() =>
            {
                if (context.Response.StatusCode >= StatusCodes.Status400BadRequest) context.Response.Headers.Connection = "close";
                return Task.CompletedTask;
            });
        }
        await next(context);
    });

    /// <summary>The answer to a body over the limit, whether its length was declared or found while relaying it.</summary>
    public static ProblemHttpResult TooLarge(string size, long? limit) =>
        Problems.Of(StatusCodes.Status413PayloadTooLarge, "request-too-large", "The request body is too large",
            string.Create(CultureInfo.InvariantCulture, $"The request body has {size}; the gateway accepts at most {limit} bytes. Send a smaller body."));
}
