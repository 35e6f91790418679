using System.ComponentModel.DataAnnotations;
using MassTransit;
using MassTransit.RetryPolicies;
using Npgsql;

namespace Marketplace.ServiceDefaults.Messaging;

/// <summary>
/// How a consumer's failure is retried in memory before its message goes to <c>_error</c>. A failure that a retry
/// cannot fix (a bug, a poison message) gets a few quick retries; a transient database failure (timeout, deadlock,
/// serialization failure, server restarting) is retried for minutes. Every interval grows as
/// <c>MinInterval + IntervalDelta × 2^n</c>, capped, with ±20 % jitter.
/// </summary>
public sealed class MessageRetryOptions
{
    /// <summary>Retries of any failure; then <c>_error</c>.</summary>
    [Range(0, 100)] public int Retries { get; set; } = 5;
    [Range(typeof(TimeSpan), "00:00:00.001", "01:00:00")] public TimeSpan MinInterval { get; set; } = TimeSpan.FromMilliseconds(100);
    [Range(typeof(TimeSpan), "00:00:00", "01:00:00")] public TimeSpan IntervalDelta { get; set; } = TimeSpan.FromMilliseconds(200);
    /// <summary>The longest quick interval.</summary>
    [Range(typeof(TimeSpan), "00:00:00.001", "01:00:00")] public TimeSpan MaxInterval { get; set; } = TimeSpan.FromSeconds(5);
    /// <summary>How long, at least, a transient failure is retried in all before <c>_error</c>.</summary>
    [Range(typeof(TimeSpan), "00:00:00", "1.00:00:00")] public TimeSpan TransientFor { get; set; } = TimeSpan.FromMinutes(5);
    /// <summary>The longest interval between two retries of a transient failure.</summary>
    [Range(typeof(TimeSpan), "00:00:00.001", "01:00:00")] public TimeSpan TransientMaxInterval { get; set; } = TimeSpan.FromSeconds(60);

    public TimeSpan[] QuickIntervals() => [.. Enumerable.Range(0, Retries).Select(n => Interval(n, MaxInterval))];

    /// <summary>Defaults: 0.3 s, 0.5 s, 0.9 s … 51.3 s, then 60 s until 5 min are reached: 13 retries, 5.7 min in all.</summary>
    public TimeSpan[] TransientIntervals()
    {
        var intervals = new List<TimeSpan>();
        for (var total = TimeSpan.Zero; total < TransientFor && intervals.Count < 1000; total += intervals[^1])
            intervals.Add(Interval(intervals.Count, TransientMaxInterval));
        return [.. intervals];
    }

    private TimeSpan Interval(int n, TimeSpan cap) =>
        TimeSpan.FromMilliseconds(Math.Min(MinInterval.TotalMilliseconds + IntervalDelta.TotalMilliseconds * Math.Pow(2, Math.Min(n, 30)), cap.TotalMilliseconds));
}

public static class TransientFailures
{
    /// <summary>
    /// True when the same work will likely succeed later: Npgsql's transient errors (network, timeouts, the server
    /// starting or shutting down, too many connections, deadlock, serialization failure), or any timeout, at any depth.
    /// </summary>
    public static bool Is(Exception exception) => exception switch
    {
        PostgresException p => p.IsTransient || p.SqlState is PostgresErrorCodes.SerializationFailure or PostgresErrorCodes.DeadlockDetected
            or PostgresErrorCodes.AdminShutdown or PostgresErrorCodes.CrashShutdown or PostgresErrorCodes.CannotConnectNow
            or PostgresErrorCodes.TooManyConnections || p.SqlState.StartsWith("08", StringComparison.Ordinal),
        NpgsqlException { IsTransient: true } or TimeoutException => true,
        AggregateException a => a.InnerExceptions.Any(Is),
        _ => exception.InnerException is { } inner && Is(inner),
    };
}

/// <summary>
/// One MassTransit retry policy whose intervals depend on the failure: <see cref="MessageRetryOptions.QuickIntervals"/>
/// for failures a retry cannot fix, <see cref="MessageRetryOptions.TransientIntervals"/> for
/// <see cref="TransientFailures"/>. Each kind uses up its own schedule. (MassTransit configures message retry once per
/// message type, so two <c>UseMessageRetry</c> for the two kinds do not compose.) Every attempt runs the consumer in a new
/// transaction; a failed one rolled back its state change, outbox rows and inbox mark, so a retry commits its effect once.
/// </summary>
public sealed class TransientAwareRetryPolicy(IExceptionFilter filter, MessageRetryOptions options) : IRetryPolicy
{
    private readonly TimeSpan[] _quick = options.QuickIntervals();
    private readonly TimeSpan[] _transient = options.TransientIntervals();

    public bool IsHandled(Exception exception) => filter.Match(exception);

    RetryPolicyContext<T> IRetryPolicy.CreatePolicyContext<T>(T context) => new PolicyContext<T>(this, context);

    public void Probe(ProbeContext context)
    {
        context.Set(new { Policy = "TransientAware", Quick = _quick, Transient = _transient });
        filter.Probe(context);
    }

    public override string ToString() =>
        $"TransientAware ({_quick.Length} quick retries, {_transient.Length} over {_transient.Aggregate(TimeSpan.Zero, (a, b) => a + b)} for transient failures)";

    private sealed class PolicyContext<T>(TransientAwareRetryPolicy policy, T context) : BaseRetryPolicyContext<T>(policy, context)
        where T : class, PipeContext
    {
        public override bool CanRetry(Exception exception, out RetryContext<T> retryContext) =>
            base.CanRetry(exception, out retryContext) && ((Attempt<T>)retryContext).Allowed;

        protected override RetryContext<T> CreateRetryContext(Exception exception, CancellationToken cancellationToken) =>
            new Attempt<T>(policy, Context, exception, 0, 0, cancellationToken);
    }

    /// <summary>The retry after <paramref name="exception"/>, with the retries of each kind used so far.</summary>
    private sealed class Attempt<T> : BaseRetryContext<T>, RetryContext<T> where T : class, PipeContext
    {
        private readonly TransientAwareRetryPolicy _policy;
        private readonly int _quickUsed;
        private readonly int _transientUsed;
        private readonly bool _transient;
        private readonly TimeSpan? _delay;

        public Attempt(TransientAwareRetryPolicy policy, T context, Exception exception, int quickUsed, int transientUsed, CancellationToken ct)
            : base(context, exception, quickUsed + transientUsed, ct)
        {
            _policy = policy;
            _quickUsed = quickUsed;
            _transientUsed = transientUsed;
            _transient = TransientFailures.Is(exception);
            var (schedule, used) = _transient ? (policy._transient, transientUsed) : (policy._quick, quickUsed);
            Allowed = used < schedule.Length;
            if (Allowed) _delay = schedule[used] * (0.8 + Random.Shared.NextDouble() * 0.4);
        }

        public bool Allowed { get; }
        public override TimeSpan? Delay => _delay;

        bool RetryContext<T>.CanRetry(Exception exception, out RetryContext<T> retryContext)
        {
            var next = new Attempt<T>(_policy, Context, exception, _quickUsed + (_transient ? 0 : 1), _transientUsed + (_transient ? 1 : 0), CancellationToken);
            retryContext = next;
            return _policy.IsHandled(exception) && next.Allowed;
        }
    }
}
