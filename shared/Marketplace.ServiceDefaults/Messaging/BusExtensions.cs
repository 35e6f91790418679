using System.ComponentModel.DataAnnotations;
using MassTransit;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Options;

namespace Marketplace.ServiceDefaults.Messaging;

public sealed class RabbitMqOptions
{
    [Required] public string Host { get; set; } = "127.0.0.1";
    [Range(1, 65535)] public int Port { get; set; } = 55672;
    [Required] public string VirtualHost { get; set; } = "marketplace";
    [Required] public string Username { get; set; } = "marketplace";
    [Required] public string Password { get; set; } = "marketplace";
    /// <summary>
    /// Quorum queues (replicated) in production; classic queues for a single development node. Every receive endpoint
    /// and its <c>_error</c>/<c>_skipped</c> queues; the bus's own temporary queue stays classic (a quorum queue cannot
    /// auto-delete).
    /// </summary>
    public bool QuorumQueues { get; set; }
    /// <summary>
    /// The nodes of a RabbitMQ cluster ("host:port"). When given, the bus connects to the first that answers and moves to
    /// another when it is lost; <see cref="Host"/> and <see cref="Port"/> then only name the bus.
    /// </summary>
    public string[] ClusterNodes { get; set; } = [];
    [Range(1, 10_000)] public int PrefetchCount { get; set; } = 100;
    /// <summary>
    /// The longest wait between two attempts to reach the broker again after the bus lost it (each receive endpoint and
    /// each publish on its own; MassTransit adds 1 s of its own to each attempt): <see cref="BrokerReconnect"/>.
    /// Zero keeps MassTransit's own policy (3-30 s apart, longer with each outage: for comparison only).
    /// </summary>
    [Range(typeof(TimeSpan), "00:00:00", "00:01:00")] public TimeSpan ReconnectInterval { get; set; } = TimeSpan.FromSeconds(1);
}

public static class BusExtensions
{
    /// <summary>
    /// MassTransit on RabbitMQ with the settings every service shares: queues prefixed by the service name
    /// (so two services never compete for one queue), queue type set once at bus level, retries with backoff (quick for
    /// a failure a retry cannot fix, minutes for a transient database failure: <see cref="MessageRetryOptions"/>), then
    /// the <c>_error</c> queue; after a lost broker, quick reconnect attempts (<see cref="BrokerReconnect"/>) and a
    /// watchdog for an endpoint that stays down anyway (<see cref="EndpointWatchdog"/>). Also the outbox relay and the
    /// due-work runner.
    /// </summary>
    public static IHostApplicationBuilder AddMessaging(
        this IHostApplicationBuilder builder, string serviceName, Action<IBusRegistrationConfigurator>? consumers)
    {
        builder.Services.AddOptions<RabbitMqOptions>().BindConfiguration("RabbitMq").ValidateDataAnnotations().ValidateOnStart();
        builder.Services.AddOptions<OutboxOptions>().BindConfiguration("Outbox");
        builder.Services.AddOptions<MessageRetryOptions>().BindConfiguration("MessageRetry").ValidateDataAnnotations().ValidateOnStart();
        builder.Services.AddOptions<DueWorkOptions>().BindConfiguration("DueWork").ValidateDataAnnotations().ValidateOnStart();
        builder.Services.AddSingleton<OutboxSignal>();
        builder.Services.AddHostedService<OutboxRelay>();
        builder.Services.AddSingleton<DueWorkSignal>();
        builder.Services.AddSingleton<DueWorkRunner>();
        builder.Services.AddHostedService(sp => sp.GetRequiredService<DueWorkRunner>());
        builder.Services.AddOptions<EndpointWatchdogOptions>().BindConfiguration("RabbitMq:EndpointWatchdog").ValidateDataAnnotations().ValidateOnStart();
        builder.Services.AddSingleton<EndpointWatchdog>();
        builder.Services.AddHostedService(sp => sp.GetRequiredService<EndpointWatchdog>());
        builder.Services.AddReceiveEndpointObserver(sp => sp.GetRequiredService<EndpointWatchdog>());
        builder.Services.AddHealthChecks().AddCheck<EndpointWatchdog>("receive-endpoints", tags: ["ready"]);

        builder.Services.AddMassTransit(x =>
        {
            x.SetEndpointNameFormatter(new KebabCaseEndpointNameFormatter(serviceName, false));
            consumers?.Invoke(x);
            // Per endpoint: SetQuorumQueue on the bus configurator would only reach the bus's own temporary queue.
            x.AddConfigureEndpointsCallback((context, _, endpoint) =>
            {
                if (endpoint is IRabbitMqReceiveEndpointConfigurator rabbit && context.GetRequiredService<IOptions<RabbitMqOptions>>().Value.QuorumQueues)
                    rabbit.SetQuorumQueue();
            });
            x.UsingRabbitMq((context, cfg) =>
            {
                var o = context.GetRequiredService<IOptions<RabbitMqOptions>>().Value;
                cfg.Host(o.Host, (ushort)o.Port, o.VirtualHost, h =>
                {
                    h.Username(o.Username);
                    h.Password(o.Password);
                    h.PublisherConfirmation = true;
                    if (o.ClusterNodes.Length > 0)
                        h.UseCluster(c => { foreach (var node in o.ClusterNodes) c.Node(node); });
                });
                // MassTransit's own reconnect waits up to 30 s between attempts, longer with each outage: BrokerReconnect.
                if (o.ReconnectInterval > TimeSpan.Zero)
                    cfg.ConnectBusObserver(new BrokerReconnect.Installer(context, o.ReconnectInterval));
                cfg.PrefetchCount = o.PrefetchCount;
                cfg.UseConsumeFilter(typeof(ConsumeLoggingFilter<>), context);
                // One policy for both kinds of failure: MassTransit configures message retry once per message type.
                var retry = context.GetRequiredService<IOptions<MessageRetryOptions>>().Value;
                cfg.UseMessageRetry(r => r.SetRetryPolicy(filter => new TransientAwareRetryPolicy(filter, retry)));
                cfg.ConfigureEndpoints(context);
            });
        });
        return builder;
    }
}
