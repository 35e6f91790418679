using MassTransit;
using Microsoft.Extensions.Logging;

namespace Marketplace.ServiceDefaults.Messaging;

/// <summary>One log line per consumed message, inside the consumer's trace, so a request can be followed across services.</summary>
public sealed class ConsumeLoggingFilter<T>(ILogger<ConsumeLoggingFilter<T>> logger) : IFilter<ConsumeContext<T>> where T : class
{
    public async Task Send(ConsumeContext<T> context, IPipe<ConsumeContext<T>> next)
    {
        await next.Send(context);
        logger.LogInformation("Consumed {MessageType} {MessageId}", typeof(T).Name, context.MessageId);
    }

    public void Probe(ProbeContext context) => context.CreateFilterScope("consume-logging");
}
