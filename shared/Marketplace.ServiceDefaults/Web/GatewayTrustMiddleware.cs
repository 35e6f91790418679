using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.Configuration;

namespace Marketplace.ServiceDefaults.Web;

/// <summary>
/// Public routes (<c>/v1/...</c>) of an internal service answer only requests relayed by the gateway,
/// which proves itself with a shared internal token; the identity headers are trusted only then.
/// </summary>
public sealed class GatewayTrustMiddleware(RequestDelegate next, IConfiguration configuration)
{
    private readonly string? _token = configuration["Gateway:InternalToken"];

    public async Task InvokeAsync(HttpContext context)
    {
        if (context.Request.Path.StartsWithSegments("/v1") && !string.IsNullOrEmpty(_token)
            && context.Request.Headers[Caller.GatewayTokenHeader] != _token)
        {
            await Problems.Of(StatusCodes.Status401Unauthorized, "unauthenticated", "Unauthenticated",
                "Call the public API through the gateway with an API key.").ExecuteAsync(context);
            return;
        }
        if (context.Request.Path.StartsWithSegments("/v1") && Caller.From(context) is null)
        {
            await Problems.Of(StatusCodes.Status401Unauthorized, "unauthenticated", "Unauthenticated",
                "The request carries no organisation; call the public API through the gateway with an API key.").ExecuteAsync(context);
            return;
        }
        await next(context);
    }
}
