using System.Diagnostics;
using System.Threading.RateLimiting;
using Marketplace.Gateway.OpenApi;
using Marketplace.Gateway.Orgs;
using Marketplace.Gateway.Proxy;
using Marketplace.ServiceDefaults.Hosting;
using Marketplace.ServiceDefaults.Web;
using Microsoft.AspNetCore.Authentication;
using Microsoft.AspNetCore.Authorization;
using Microsoft.AspNetCore.RateLimiting;
using Microsoft.Extensions.Options;
using Scalar.AspNetCore;

namespace Marketplace.Gateway;

public static class GatewayExtensions
{
    public static WebApplicationBuilder AddGatewayServices(this WebApplicationBuilder builder)
    {
        builder.AddServiceDefaults("gateway");
        var services = builder.Services;
        services.AddOptions<GatewayOptions>().BindConfiguration(GatewayOptions.Section).ValidateDataAnnotations()
            .Validate(o => !string.IsNullOrEmpty(o.BootstrapAdminKey) || !builder.Environment.IsProduction(),
                "Gateway:BootstrapAdminKey is required in production")
            .ValidateOnStart();
        services.AddSingleton<IValidateOptions<GatewayOptions>, GatewayOptionsErrors>();
        services.AddHostedService<BootstrapAdmin>();

        services.AddAuthentication(ApiKeyAuthenticationHandler.SchemeName)
            .AddScheme<AuthenticationSchemeOptions, ApiKeyAuthenticationHandler>(ApiKeyAuthenticationHandler.SchemeName, null);
        services.AddAuthorization(o => Policies.Register(o, PublicRoutes.RoleSets.Append([OrgRoles.Admin])));
        services.AddSingleton<IAuthorizationMiddlewareResultHandler, ProblemAuthorizationResultHandler>();

        services.AddRateLimiter(_ => { });
        services.AddOptions<RateLimiterOptions>().Configure<IOptions<GatewayOptions>>((o, gateway) => ConfigureRateLimits(o, gateway.Value.RateLimit));

        services.AddPublicRoutes();
        // Requests Kestrel rejects before any middleware (%00 in the path, oversized headers) answer problem+json too.
        services.AddSingleton<BadRequestProblems>();
        builder.WebHost.ConfigureKestrel(k => k.ConfigureEndpointDefaults(listen =>
            listen.Use(next => listen.ApplicationServices.GetRequiredService<BadRequestProblems>().Wrap(next))));
        services.AddHttpClient(PublicOpenApi.HttpClientName, c => c.Timeout = TimeSpan.FromSeconds(3));
        return builder;
    }

    public static WebApplication MapGatewayApi(this WebApplication app)
    {
        app.Use((context, next) =>
        {
            // Quote this id to find the request's trace across the gateway, the services and the bus.
            var traceId = Activity.Current?.TraceId.ToHexString();
            if (traceId is not null) context.Response.OnStarting(() =>
            {
                context.Response.Headers["X-Trace-Id"] = traceId;
                return Task.CompletedTask;
            });
            return next(context);
        });
        // Before anything that answers without reading the body (authentication, rate limits, routes): see known issue 14.
        app.UseOversizedBodyRefusal();
        app.UseAuthentication();
        app.Use(async (context, next) =>
        {
            // A node agent's key speaks for one machine: it may heartbeat and fetch work, nothing else (no orgs, keys, offers).
            if (ApiKeyPrincipal.NodeId(context.User) is not null && context.Request.Path.StartsWithSegments("/v1")
                && !context.Request.Path.StartsWithSegments("/v1/agent"))
            {
                await Problems.Forbidden($"This API key is scoped to one node and may call only /v1/agent/...; "
                    + $"{context.Request.Method} {context.Request.Path} needs an ordinary key of your organisation.").ExecuteAsync(context);
                return;
            }
            await next(context);
        });
        app.UseRateLimiter(); // after authentication: buckets are per API key
        app.UseAuthorization();

        app.MapPublicOpenApi();
        app.MapScalarApiReference("/docs", o => o.WithTitle("Marketplace API").WithOpenApiRoutePattern("/openapi/v1.json")).AllowAnonymous();
        app.MapOrgsApi();
        app.MapPublicRoutes();
        app.MapFallback("/v1/{**path}", (HttpContext context) => Problems.Of(StatusCodes.Status404NotFound, "not-found", "Not found",
                $"There is no {context.Request.Method} {context.Request.Path} in the public API; the routes are listed at /docs."))
            .RequireAuthorization(Policies.AnyOrg).ExcludeFromDescription();
        // Outside /v1 (a doubled slash from joining a base URL, another version, a file) no key is asked for: nothing is there.
        app.MapFallback("{**path}", (HttpContext context) => Problems.Of(StatusCodes.Status404NotFound, "not-found", "Not found",
                $"There is no {context.Request.Method} {context.Request.Path}; the public API is under /v1, listed at /docs."))
            .AllowAnonymous().ExcludeFromDescription();
        return app;
    }

    /// <summary>A token bucket per API key (per client IP before a key is known); health probes are never limited.</summary>
    private static void ConfigureRateLimits(RateLimiterOptions options, RateLimitOptions limits)
    {
        options.GlobalLimiter = PartitionedRateLimiter.Create<HttpContext, string>(context =>
        {
            if (context.Request.Path.StartsWithSegments("/health")) return RateLimitPartition.GetNoLimiter("health");
            var partition = ApiKeyPrincipal.KeyId(context.User) is { } keyId ? "key:" + keyId : "ip:" + context.Connection.RemoteIpAddress;
            return RateLimitPartition.GetTokenBucketLimiter(partition, _ => new TokenBucketRateLimiterOptions
            {
                TokenLimit = limits.Burst,
                TokensPerPeriod = limits.PermitsPerSecond,
                ReplenishmentPeriod = TimeSpan.FromSeconds(1),
                QueueLimit = 0,
                AutoReplenishment = true,
            });
        });
        options.RejectionStatusCode = StatusCodes.Status429TooManyRequests;
        options.OnRejected = async (context, _) =>
        {
            var retryAfter = context.Lease.TryGetMetadata(MetadataName.RetryAfter, out var wait) ? wait : TimeSpan.FromSeconds(1);
            var seconds = Math.Max(1, (int)Math.Ceiling(retryAfter.TotalSeconds));
            context.HttpContext.Response.Headers.RetryAfter = seconds.ToString();
            await Problems.Of(StatusCodes.Status429TooManyRequests, "rate-limited", "Too many requests",
                $"You are sending more than {limits.PermitsPerSecond} requests per second (bursts up to {limits.Burst}); retry after {seconds} s.")
                .ExecuteAsync(context.HttpContext);
        };
    }
}

/// <summary>Says exactly which gateway setting is wrong at start-up.</summary>
internal sealed class GatewayOptionsErrors : IValidateOptions<GatewayOptions>
{
    public ValidateOptionsResult Validate(string? name, GatewayOptions options) =>
        options.Errors().ToList() is { Count: > 0 } errors ? ValidateOptionsResult.Fail(errors) : ValidateOptionsResult.Success;
}
