using System.Buffers;
using System.Collections.Concurrent;
using System.Diagnostics;
using System.IO.Pipelines;
using System.Text;
using System.Text.Json;
using Marketplace.ServiceDefaults.Web;
using Microsoft.AspNetCore.Connections;
using Microsoft.AspNetCore.Http.Features;

namespace Marketplace.Gateway.Proxy;

/// <summary>
/// Gives the requests Kestrel itself rejects (a request line or target it cannot read, such as <c>%00</c> in the path;
/// headers too large; an unreadable request line) the API's problem+json body instead of an empty 400.
/// </summary>
/// <remarks>
/// Kestrel answers these before any middleware runs and offers no hook to shape the answer (the status and headers are
/// reset just before it is written). What it does offer: the <c>Microsoft.AspNetCore.Server.Kestrel.BadRequest</c>
/// diagnostic event, raised synchronously when it rejects the request and before it writes the answer, with the
/// request's features (its connection id, and the <see cref="IBadRequestExceptionFeature"/> saying why). A connection
/// middleware marks that connection; the connection's output then holds the next write, which is Kestrel's rejection
/// (a 4xx with <c>Content-Length: 0</c> and <c>Connection: close</c>, the last answer on the connection), and puts the
/// problem body in it. Anything else it holds is passed on unchanged. Connections without a rejection pay one
/// dictionary entry and a field read per write.
/// </remarks>
internal sealed class BadRequestProblems : IObserver<KeyValuePair<string, object?>>
{
    public const string EventName = "Microsoft.AspNetCore.Server.Kestrel.BadRequest";

    private readonly ConcurrentDictionary<string, ProblemWriter> _connections = new(StringComparer.Ordinal);

    public BadRequestProblems(DiagnosticListener listener) => listener.Subscribe(this, name => name == EventName);

    /// <summary>The connection middleware (<c>ListenOptions.Use</c>).</summary>
    public ConnectionDelegate Wrap(ConnectionDelegate next) => async connection =>
    {
        var transport = connection.Transport;
        var writer = new ProblemWriter(transport.Output);
        _connections[connection.ConnectionId] = writer;
        connection.Transport = new DuplexPipe(transport.Input, writer);
        try
        {
            await next(connection);
        }
        finally
        {
            connection.Transport = transport;
            _connections.TryRemove(connection.ConnectionId, out _);
        }
    };

    public void OnNext(KeyValuePair<string, object?> value)
    {
        if (value.Key != EventName || value.Value is not IFeatureCollection features) return;
        if (features.Get<IHttpConnectionFeature>()?.ConnectionId is { } id && _connections.TryGetValue(id, out var writer))
            writer.Rejected(features.Get<IBadRequestExceptionFeature>()?.Error?.Message);
    }

    public void OnCompleted() { }

    public void OnError(Exception error) { }

    /// <summary>The problem+json body for a rejection with this status, or null for one we leave as it is.</summary>
    internal static string? ProblemFor(int status, string? reason)
    {
        var why = string.IsNullOrWhiteSpace(reason) ? "" : $" ({reason.TrimEnd('.')})";
        var detail = status switch
        {
            400 => $"The HTTP request could not be read{why}. Check the URL: characters outside the URL syntax must be "
                   + "percent-encoded as UTF-8 (%20 for a space), and %00 (a NUL character) or an escape like %zz is never "
                   + "valid; then the request line (METHOD /path HTTP/1.1) and the headers (Name: value).",
            414 => $"The request line is longer than the gateway accepts{why}: shorten the URL (its query string in particular).",
            431 => $"The request headers are larger than the gateway accepts{why}: send fewer or shorter headers.",
            413 => $"The request body is larger than the gateway accepts{why}: send at most 1 MB.",
            408 => $"The request did not arrive in time{why}: send the whole request promptly.",
            411 => $"The request has a body but no Content-Length{why}: send Content-Length or Transfer-Encoding: chunked.",
            _ => null,
        };
        if (detail is null) return null;
        return JsonSerializer.Serialize(new Dictionary<string, object>
        {
            ["type"] = Problems.TypeBase + "malformed-request",
            ["title"] = "The request could not be read",
            ["status"] = status,
            ["detail"] = detail,
        });
    }

    /// <summary>
    /// Kestrel's rejection (<paramref name="answer"/>: status line, headers, no body) with a problem body, or null when the
    /// bytes are not exactly such an answer.
    /// </summary>
    internal static byte[]? Rewrite(ReadOnlySpan<byte> answer, string? reason)
    {
        var text = Encoding.Latin1.GetString(answer);
        var headEnd = text.IndexOf("\r\n\r\n", StringComparison.Ordinal);
        if (headEnd < 0 || headEnd + 4 != text.Length || !text.StartsWith("HTTP/1.1 4", StringComparison.Ordinal)) return null;
        var lines = text[..headEnd].Split("\r\n");
        if (lines[0].Length < 12 || !int.TryParse(lines[0].AsSpan(9, 3), out var status)) return null;
        var headers = lines.Skip(1).ToList();
        if (!headers.Contains("Content-Length: 0", StringComparer.OrdinalIgnoreCase)
            || headers.Any(h => h.StartsWith("Content-Type:", StringComparison.OrdinalIgnoreCase))) return null;
        if (ProblemFor(status, reason) is not { } problem) return null;
        var body = Encoding.UTF8.GetBytes(problem);
        var head = new StringBuilder(lines[0]).Append("\r\n");
        foreach (var h in headers.Where(h => !h.StartsWith("Content-Length:", StringComparison.OrdinalIgnoreCase)))
            head.Append(h).Append("\r\n");
        head.Append("Content-Type: application/problem+json\r\nContent-Length: ").Append(body.Length).Append("\r\n\r\n");
        return [.. Encoding.Latin1.GetBytes(head.ToString()), .. body];
    }

    private sealed class DuplexPipe(PipeReader input, PipeWriter output) : IDuplexPipe
    {
        public PipeReader Input => input;
        public PipeWriter Output => output;
    }

    /// <summary>Passes writes through, except that after a rejection it holds the next answer until its flush and rewrites it.</summary>
    private sealed class ProblemWriter(PipeWriter inner) : PipeWriter
    {
        private volatile string? _rejection;
        private bool _rejected;
        private ArrayBufferWriter<byte>? _held;

        public void Rejected(string? reason)
        {
            _rejection = reason ?? "";
            _rejected = true;
        }

        private IBufferWriter<byte> Target
        {
            get
            {
                if (_held is null && _rejected) _held = new ArrayBufferWriter<byte>(512);
                return _held is null ? inner : _held;
            }
        }

        public override Memory<byte> GetMemory(int sizeHint = 0) => Target.GetMemory(sizeHint);

        public override Span<byte> GetSpan(int sizeHint = 0) => Target.GetSpan(sizeHint);

        public override void Advance(int bytes)
        {
            if (_held is null) inner.Advance(bytes);
            else _held.Advance(bytes);
        }

        public override bool CanGetUnflushedBytes => inner.CanGetUnflushedBytes;

        public override long UnflushedBytes => inner.UnflushedBytes + (_held?.WrittenCount ?? 0);

        public override ValueTask<FlushResult> FlushAsync(CancellationToken cancellationToken = default)
        {
            Release();
            return inner.FlushAsync(cancellationToken);
        }

        public override void CancelPendingFlush() => inner.CancelPendingFlush();

        public override void Complete(Exception? exception = null)
        {
            Release();
            inner.Complete(exception);
        }

        public override ValueTask CompleteAsync(Exception? exception = null)
        {
            Release();
            return inner.CompleteAsync(exception);
        }

        private void Release()
        {
            if (_held is not { } held) return;
            var rewritten = Rewrite(held.WrittenSpan, _rejection);
            inner.Write(rewritten is null ? held.WrittenSpan : rewritten);
            (_held, _rejected, _rejection) = (null, false, null);
        }
    }
}
