namespace Marketplace.ServiceDefaults.Messaging;

/// <summary>Wakes one waiter after a commit; a wake with nobody waiting is kept for the next wait (at most one).</summary>
public abstract class WakeSignal
{
    private readonly SemaphoreSlim _semaphore = new(0, 1);

    public void Wake()
    {
        try { _semaphore.Release(); }
        catch (SemaphoreFullException) { /* already awake */ }
    }

    public Task<bool> WaitAsync(TimeSpan timeout, CancellationToken ct) => _semaphore.WaitAsync(timeout, ct);
}

/// <summary>Wakes the relay right after a commit that wrote outbox rows, so delivery does not wait for the next poll.</summary>
public sealed class OutboxSignal : WakeSignal;

/// <summary>
/// Wakes the due-work runner's watch right after a commit that scheduled work (a lease that starts now), so the work does
/// not wait for the watch's next look.
/// </summary>
public sealed class DueWorkSignal : WakeSignal;
