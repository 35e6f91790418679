namespace Marketplace.Testing;

/// <summary>Waits for an asynchronous effect (a message consumed, a lease activated) with a generous deadline.</summary>
public static class Eventually
{
    public static async Task<T> Get<T>(Func<Task<T?>> probe, Func<T, bool> done, TimeSpan? timeout = null, string? what = null)
    {
        var deadline = DateTime.UtcNow + (timeout ?? TimeSpan.FromSeconds(30));
        T? last = default;
        while (DateTime.UtcNow < deadline)
        {
            last = await probe();
            if (last is not null && done(last)) return last;
            await Task.Delay(100);
        }
        throw new TimeoutException($"Timed out waiting for {what ?? "the condition"}; last value: {last}");
    }

    public static async Task True(Func<Task<bool>> probe, TimeSpan? timeout = null, string? what = null)
    {
        var deadline = DateTime.UtcNow + (timeout ?? TimeSpan.FromSeconds(30));
        while (DateTime.UtcNow < deadline)
        {
            if (await probe()) return;
            await Task.Delay(100);
        }
        throw new TimeoutException($"Timed out waiting for {what ?? "the condition"}");
    }
}
