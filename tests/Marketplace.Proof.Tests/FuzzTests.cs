using System.Collections.Concurrent;
using System.Diagnostics;
using System.Net;
using System.Net.Http.Json;
using System.Text;
using System.Text.Json.Nodes;
using Marketplace.Testing;
using Xunit;
using Xunit.Abstractions;

namespace Marketplace.Proof.Tests;

/// <summary>
/// The OpenAPI-driven fuzzer: at least 5,000 bad requests (MP_FUZZ_REQUESTS for fewer in a quick run) over every route of
/// the public document, each sent with a key of a role the route admits. Not one may be answered 5xx, and the requests
/// answered 4xx may not change a single business row.
/// </summary>
[Collection(ProofCollection.Name)]
public sealed class FuzzTests(ProofFixture fixture, ITestOutputHelper output)
{
    private static int RequestCount => int.TryParse(Environment.GetEnvironmentVariable("MP_FUZZ_REQUESTS"), out var n) ? n : 5000;
    private const int BatchSize = 100;
    private const int Parallelism = 8;

    private sealed record Result(FuzzCase Case, int Status, string Body, bool Problem);

    [Fact]
    public async Task Generated_bad_requests_on_every_route_get_no_5xx_and_4xx_ones_write_nothing()
    {
        var fuzz = await FuzzWorld.CreateAsync(fixture);
        var document = await PublicDocument.GetAsync(fixture.Stack);
        var routes = GatewayRoute.Load();
        var ops = Operation.All(document);
        File.WriteAllText(Path.Combine(fixture.Stack.LogDirectory, "openapi.json"), document.ToJsonString());
        Assert.True(ops.Count >= 20, $"the OpenAPI document lists only {ops.Count} operations: {string.Join(", ", ops.Select(o => o.Key))}; paths: {string.Join(", ", document["paths"]!.AsObject().Select(p => p.Key))}");

        var cases = new Fuzzer(document, fuzz.PathValue, fuzz.Baseline, Environment.GetEnvironmentVariable("MP_FUZZ_KNOWN_ISSUES") == "1").Generate(ops, RequestCount);
        output.WriteLine($"{ops.Count} operations, {cases.Count} requests");

        var results = new ConcurrentBag<Result>();
        var writesOn4xx = new List<string>();
        var batchesChecked = 0;
        var batchesWithAcceptedWrites = 0;
        var clock = Stopwatch.StartNew();
        await State.QuiesceAsync(fixture.Stack.Database);
        var before = await State.SnapshotAsync(fixture.Stack.Database);
        foreach (var batch in cases.GroupBy(c => c.Op.Key).SelectMany(g => g.Chunk(BatchSize)))
        {
            var batchResults = new ConcurrentBag<Result>();
            await Parallel.ForEachAsync(batch, new ParallelOptions { MaxDegreeOfParallelism = Parallelism }, async (c, ct) =>
                batchResults.Add(await SendAsync(fuzz.ClientFor(c.Op, routes), c, ct)));
            foreach (var r in batchResults) results.Add(r);

            var accepted = batchResults.Any(r => r.Case.Op.Writes && r.Status is >= 200 and < 300);
            await State.QuiesceAsync(fixture.Stack.Database, accepted ? 250 : 0);
            var after = accepted ? await State.SettleAsync(fixture.Stack.Database) : await State.SnapshotAsync(fixture.Stack.Database);
            if (accepted) batchesWithAcceptedWrites++;
            else
            {
                batchesChecked++;
                var diff = State.Diff(before, after);
                if (diff.Length > 0)
                {
                    // Something else may have moved (a timer in a service): replay the batch; a real write happens again.
                    before = after;
                    foreach (var c in batch) await SendAsync(fuzz.ClientFor(c.Op, routes), c, CancellationToken.None);
                    await State.QuiesceAsync(fixture.Stack.Database, 250);
                    after = await State.SnapshotAsync(fixture.Stack.Database);
                    var again = State.Diff(before, after);
                    if (again.Length > 0)
                        writesOn4xx.Add($"{batch[0].Op.Key}: requests answered 4xx changed {again}; the batch:\n  " + string.Join("\n  ", batch.Take(10)));
                }
            }
            before = after;
        }
        clock.Stop();

        var all = results.ToList();
        output.WriteLine($"{all.Count} requests in {clock.Elapsed.TotalSeconds:0.0} s ({all.Count / clock.Elapsed.TotalSeconds:0} req/s); " +
                         $"{batchesChecked} batches of 4xx checked for writes, {batchesWithAcceptedWrites} batches had accepted writes");
        output.WriteLine("by status: " + string.Join(", ", all.GroupBy(r => r.Status).OrderBy(g => g.Key).Select(g => $"{g.Key}: {g.Count()}")));
        foreach (var g in all.GroupBy(r => r.Case.Op.Key).OrderBy(g => g.Key))
            output.WriteLine($"  {g.Key}: {g.Count()} ({string.Join(", ", g.GroupBy(r => r.Status).OrderBy(s => s.Key).Select(s => $"{s.Key}×{s.Count()}"))})");
        var notProblems = all.Where(r => r.Status is >= 400 and < 500 && !r.Problem).ToList();
        foreach (var r in notProblems.DistinctBy(r => (r.Case.Op.Key, r.Status)).Take(20))
            output.WriteLine($"4xx without problem+json: {r.Case} → {r.Status} {r.Body}");

        foreach (var r in all.Where(r => r.Status >= 500).DistinctBy(r => (r.Case.Op.Key, r.Case.Mutation)).Take(30))
            output.WriteLine($"5xx: {r.Case} → {r.Status} {Trim(r.Body)}");
        Assert.True(all.Count >= RequestCount, $"only {all.Count} requests were sent");
        Assert.Empty(ops.Select(o => o.Key).Except(all.Select(r => r.Case.Op.Key)));
        var serverErrors = all.Where(r => r.Status >= 500).ToList();
        Assert.True(serverErrors.Count == 0, $"{serverErrors.Count} requests answered 5xx:\n" +
            string.Join("\n", serverErrors.DistinctBy(r => (r.Case.Op.Key, r.Case.Mutation)).Take(30).Select(r => $"{r.Case} → {r.Status} {Trim(r.Body)}")));
        Assert.True(writesOn4xx.Count == 0, string.Join("\n", writesOn4xx));
        // Every 4xx is problem+json, a NUL in the path too (Kestrel refuses it before any middleware; the gateway gives
        // that answer its body: fixed known issue 2).
        Assert.True(notProblems.Count == 0, "4xx without problem+json:\n" + string.Join("\n", notProblems.Take(20).Select(r => $"{r.Case} → {r.Status} {Trim(r.Body)}")));
    }

    private static async Task<Result> SendAsync(HttpClient client, FuzzCase c, CancellationToken ct)
    {
        for (var attempt = 0; ; attempt++)
        {
            using var request = new HttpRequestMessage(new HttpMethod(c.Op.Method), c.Path);
            if (c.Body is not null) request.Content = new StringContent(c.Body, Encoding.UTF8, c.ContentType);
            if (c.IdempotencyKey) request.Headers.Add("Idempotency-Key", Guid.NewGuid().ToString());
            try
            {
                using var response = await client.SendAsync(request, ct);
                var text = await response.Content.ReadAsStringAsync(ct);
                if (response.StatusCode == HttpStatusCode.TooManyRequests && attempt < 30)
                {
                    await Task.Delay(TimeSpan.FromSeconds(response.Headers.RetryAfter?.Delta?.TotalSeconds ?? 1), ct);
                    continue;
                }
                return new Result(c, (int)response.StatusCode, text, Api.IsProblem(response));
            }
            catch (HttpRequestException ex) when (c.Body is { Length: > 1024 * 1024 })
            {
                // The gateway refuses a body over the 1 MiB limit with a 413 problem and Connection: close, and does not read
                // it; a client still writing the body may see the close instead of the answer. The server refused it either
                // way. Only this request: the next one on the same client must be answered (known issue 14).
                return new Result(c, 413, "connection closed by the server while the oversized body was sent: " + ex.Message, true);
            }
            catch (Exception ex) when (ex is HttpRequestException or TaskCanceledException && !ct.IsCancellationRequested)
            {
                // No answer at all counts like a 5xx: the caller cannot tell what happened.
                return new Result(c, 599, ex.GetType().Name + ": " + ex.Message, false);
            }
        }
    }

    private static string Trim(string s) => s.Length > 300 ? s[..300] + "…" : s;
}
