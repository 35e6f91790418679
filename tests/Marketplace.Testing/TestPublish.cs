using MassTransit;

namespace Marketplace.Testing;

public static class TestPublish
{
    /// <summary>
    /// Publishes <paramref name="message"/> as another service's outbox relay would: with a message id fixed before the
    /// first attempt, and tried again (up to three attempts) when the broker did not take it, so the consumer's inbox skips
    /// a copy that did get through. A fixture's first publish of a type declares its exchange, and once in CI that declare
    /// was cancelled under a closing channel (docs/reliability.md, known issue 17); the relay would have retried it, a
    /// bare <c>Bus.Publish</c> failed the test. Each failed attempt is written to stderr with its exception.
    /// </summary>
    /// <returns>The message id, for waiting until it was consumed.</returns>
    public static async Task<Guid> PublishAsync<T>(this IBus bus, T message, Guid? messageId = null) where T : class
    {
        var id = messageId ?? NewId.NextGuid();
        for (var attempt = 1; ; attempt++)
        {
            try
            {
                await bus.Publish(message, c => c.MessageId = id);
                return id;
            }
            catch (Exception e) when (attempt < 3)
            {
                await Console.Error.WriteLineAsync(
                    $"[{DateTimeOffset.UtcNow:HH:mm:ss.fff}] publishing {typeof(T).Name} {id} failed (attempt {attempt} of 3), trying again: {e}");
                await Task.Delay(TimeSpan.FromMilliseconds(250 * attempt));
            }
        }
    }
}
