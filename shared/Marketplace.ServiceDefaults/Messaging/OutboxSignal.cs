namespace Marketplace.ServiceDefaults.Messaging;

/// <summary>Wakes the relay right after a commit that wrote outbox rows, so delivery does not wait for the next poll.</summary>
public sealed class OutboxSignal
{
    private readonly SemaphoreSlim _semaphore = new(0, 1);

    public void Wake()
    {
        try { _semaphore.Release(); }
        catch (SemaphoreFullException) { /* already awake */ }
    }

    public Task<bool> WaitAsync(TimeSpan timeout, CancellationToken ct) => _semaphore.WaitAsync(timeout, ct);
}
