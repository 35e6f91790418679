using MassTransit;
using Microsoft.Extensions.Logging;

namespace Marketplace.ServiceDefaults.Messaging;

/// <summary>
/// One log line per consumed message, inside the consumer's trace, so a request can be followed across services: how long
/// the consumer took, and how long the message waited between being sent (published by the outbox relay) and reaching the
/// consumer (the broker, the prefetch queue and the endpoint's concurrency limit).
/// </summary>
public sealed class ConsumeLoggingFilter<T>(ILogger<ConsumeLoggingFilter<T>> logger, TimeProvider time) : IFilter<ConsumeContext<T>> where T : class
{
    public async Task Send(ConsumeContext<T> context, IPipe<ConsumeContext<T>> next)
    {
        // SentTime is the sender's wall clock, so the wait is measured against the wall clock too, not the injected clock
        // (a test's fake clock would make it meaningless).
        var started = DateTimeOffset.UtcNow;
        var t = time.GetTimestamp();
        await next.Send(context);
        var waited = context.SentTime is { } sent ? (started - new DateTimeOffset(DateTime.SpecifyKind(sent, DateTimeKind.Utc))).TotalMilliseconds : double.NaN;
        logger.LogInformation("Consumed {MessageType} {MessageId} in {ConsumeMs:0.0} ms, {WaitedMs:0.0} ms after it was sent",
            typeof(T).Name, context.MessageId, time.GetElapsedTime(t).TotalMilliseconds, waited);
    }

    public void Probe(ProbeContext context) => context.CreateFilterScope("consume-logging");
}
