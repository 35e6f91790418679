using System.Collections.Concurrent;
using System.Net;
using System.Net.Http.Json;
using System.Text.Json.Nodes;
using Marketplace.Testing;

namespace Marketplace.Proof.Tests;

/// <summary>
/// One scenario's market on a running stack: a provider with enough GPUs on offer for every order of the load (so an
/// order that does not fill is a fault's doing, not a lack of capacity), spare nodes for offers published during the
/// load, a funded renter and a finance user. Reached only through the gateway(s).
/// </summary>
internal sealed class FaultMarket
{
    public const string Model = "h100-sxm";
    public const string Currency = "CNY";
    public const long TopUp = 100_000_000;
    private const int GpusPerNode = 16;
    private const int NodesPerOffer = 4;

    public required MarketplaceStack Stack { get; init; }
    public required string Name { get; init; }
    public required Guid RenterOrgId { get; init; }
    public required Guid ProviderOrgId { get; init; }
    /// <summary>One renter client per gateway instance, so the load reaches each.</summary>
    public required IReadOnlyList<HttpClient> Renters { get; init; }
    public required IReadOnlyList<HttpClient> Providers { get; init; }
    public required HttpClient Finance { get; init; }
    public required string ClusterId { get; init; }
    public required IReadOnlyList<string> SpareNodes { get; init; }
    /// <summary>The offers published before the load.</summary>
    public required IReadOnlyList<Guid> InitialOffers { get; init; }

    /// <param name="orders">how many orders the load will place (the capacity offered is sized for them)</param>
    /// <param name="spareNodes">nodes without an offer, for the offers published during the load</param>
    public static async Task<FaultMarket> CreateAsync(MarketplaceStack stack, string name, int orders, int spareNodes)
    {
        var gateways = stack.GatewayUrls.Count;
        using var admin = stack.Client(MarketplaceStack.AdminKey);
        var (providerOrg, providerKey) = await OrgAsync(admin, $"{name} provider", "provider");
        var (renterOrg, renterKey) = await OrgAsync(admin, $"{name} renter", "renter");
        var (_, financeKey) = await OrgAsync(admin, $"{name} finance", "finance");
        var providers = Enumerable.Range(0, gateways).Select(g => stack.Client(providerKey, g)).ToList();
        var renters = Enumerable.Range(0, gateways).Select(g => stack.Client(renterKey, g)).ToList();
        var provider = providers[0];

        var cluster = await Api.PostJsonAsync(provider, "/v1/clusters", new { name, region = "cn-east", jurisdiction = "CN" });
        var clusterId = (string)cluster["id"]!;
        // Every order is one GPU: twice as many GPUs as orders (a fault may stretch the load), in offers of four nodes.
        var nodes = Math.Max(NodesPerOffer, (int)Math.Ceiling(orders * 2.0 / GpusPerNode / NodesPerOffer) * NodesPerOffer);
        var nodeIds = new List<string>();
        for (var i = 0; i < nodes + spareNodes; i++)
            nodeIds.Add((string)(await Api.PostJsonAsync(provider, $"/v1/clusters/{clusterId}/nodes",
                new { hostname = $"{name}-{i}", accelerator_model = Model, accelerator_count = GpusPerNode }))["id"]!);
        var offers = new List<Guid>();
        foreach (var chunk in nodeIds.Take(nodes).Chunk(NodesPerOffer))
            offers.Add(Guid.Parse((string)(await Api.PostJsonAsync(provider, "/v1/offers", OfferBody(clusterId, chunk)))["id"]!));

        await Api.PostJsonAsync(renters[0], "/v1/wallet/top-ups", new { amount = new { amount = TopUp, currency = Currency } }, Guid.NewGuid().ToString());
        await Eventually.True(async () => await Api.AvailableAsync(renters[0], Currency) >= TopUp, TimeSpan.FromSeconds(60), $"{name}'s wallet to be funded");

        return new FaultMarket
        {
            Stack = stack, Name = name, RenterOrgId = renterOrg, ProviderOrgId = providerOrg, Renters = renters, Providers = providers,
            Finance = stack.Client(financeKey), ClusterId = clusterId, SpareNodes = nodeIds.Skip(nodes).ToList(), InitialOffers = offers,
        };
    }

    /// <summary>An offer of <paramref name="nodeIds"/> from a minute ago for three hours (made once: a resend must carry the same body).</summary>
    public static object OfferBody(string clusterId, IEnumerable<string> nodeIds)
    {
        var now = DateTimeOffset.UtcNow;
        return new
        {
            cluster_id = clusterId, node_ids = nodeIds, window_start = now.AddMinutes(-1), window_end = now.AddHours(3),
            ask_per_hour = new { amount = 1000, currency = Currency }, min_lease_seconds = LoadProfile.LeaseSeconds, interruptible_allowed = false,
        };
    }

    /// <summary>Starts the background load: one-GPU on-demand orders at <paramref name="perSecond"/>, plus an offer every two seconds on the spare nodes.</summary>
    public OrderStream StartLoad(double perSecond) => OrderStream.Start(this, perSecond);

    private static async Task<(Guid Org, string Key)> OrgAsync(HttpClient admin, string name, string role)
    {
        var org = await Api.PostJsonAsync(admin, "/v1/orgs", new { name, roles = new[] { role } });
        var key = await Api.PostJsonAsync(admin, $"/v1/orgs/{org["id"]}/api-keys", new { name = "load" });
        return (Guid.Parse((string)org["id"]!), (string)key["key"]!);
    }
}

/// <summary>
/// A renter placing orders at a steady rate through the gateway(s), the way a careful client does: each order has its
/// own Idempotency-Key and is resent with the same key and body on any failure without a definite answer (connection
/// refused or reset, timeout, 5xx, 429) until accepted. Meanwhile the provider publishes an offer every two seconds, each
/// with its own Idempotency-Key and resent the same way (Listings answers a resend with the offer it created).
/// </summary>
internal sealed class OrderStream
{
    public static readonly TimeSpan GiveUpAfter = TimeSpan.FromSeconds(120);

    public sealed record Placement(string Key, Guid? OrderId, DateTimeOffset FirstSent, DateTimeOffset Answered, int Attempts, string? Error);

    public sealed record OfferPlacement(string Key, Guid? OfferId, int Attempts, string? Error);

    /// <summary>An attempt that got no definite answer: an HTTP status (5xx or 429) with its body, or a transport error.</summary>
    public sealed record FailedAttempt(DateTimeOffset At, int? Status, string? ContentType, string Text);

    private readonly FaultMarket _market;
    private readonly List<Task<Placement>> _orders = [];
    private readonly List<Task<OfferPlacement>> _offerPlacements = [];
    private readonly ConcurrentQueue<FailedAttempt> _failures = new();
    private readonly CancellationTokenSource _stop = new();
    private Task _loop = Task.CompletedTask;
    private Task _offers = Task.CompletedTask;
    private int _failedAttempts;
    private int _offersResent;

    public int FailedAttempts => _failedAttempts;
    /// <summary>Every attempt that was resent, and what it got (for the scenarios that check how a fault is answered).</summary>
    public IReadOnlyCollection<FailedAttempt> Failures => _failures;
    /// <summary>The offers published during the load, each with a definite answer (after <see cref="StopAsync"/>).</summary>
    public IReadOnlyList<OfferPlacement> Offers { get; private set; } = [];
    public int OffersPublished => Offers.Count(o => o.OfferId is not null);
    public int OffersFailed => Offers.Count(o => o.OfferId is null);
    public int OffersResent => _offersResent;
    public DateTimeOffset StartedAt { get; private set; }

    private OrderStream(FaultMarket market) => _market = market;

    public static OrderStream Start(FaultMarket market, double perSecond)
    {
        var stream = new OrderStream(market) { StartedAt = DateTimeOffset.UtcNow };
        stream._loop = Task.Run(() => stream.PlaceLoopAsync(perSecond));
        stream._offers = Task.Run(stream.OfferLoopAsync);
        return stream;
    }

    /// <summary>Stops placing new orders and offers and waits until every one sent so far has a definite answer.</summary>
    public async Task<IReadOnlyList<Placement>> StopAsync()
    {
        await _stop.CancelAsync();
        await Task.WhenAll(_loop, _offers);
        Task<Placement>[] all;
        lock (_orders) all = [.. _orders];
        Task<OfferPlacement>[] offers;
        lock (_offerPlacements) offers = [.. _offerPlacements];
        Offers = await Task.WhenAll(offers);
        return await Task.WhenAll(all);
    }

    private async Task PlaceLoopAsync(double perSecond)
    {
        var start = DateTimeOffset.UtcNow;
        for (var i = 0; !_stop.IsCancellationRequested; i++)
        {
            var due = start + TimeSpan.FromSeconds(i / perSecond);
            var wait = due - DateTimeOffset.UtcNow;
            if (wait > TimeSpan.Zero)
            {
                try { await Task.Delay(wait, _stop.Token); }
                catch (OperationCanceledException) { return; }
            }
            var n = i;
            lock (_orders) _orders.Add(Task.Run(() => PlaceAsync(n)));
        }
    }

    private async Task<Placement> PlaceAsync(int n)
    {
        var key = Guid.NewGuid().ToString();
        var body = new
        {
            type = "on_demand", accelerator_model = FaultMarket.Model, accelerator_count = 1, duration_seconds = LoadProfile.LeaseSeconds,
            max_price_per_hour = new { amount = 2000, currency = FaultMarket.Currency },
        };
        var first = DateTimeOffset.UtcNow;
        var (created, attempts, error) = await SendUntilAnsweredAsync(_market.Renters, n, "/v1/orders", body, key, failure =>
        {
            _failures.Enqueue(failure);
            Interlocked.Increment(ref _failedAttempts);
        });
        return new Placement(key, created is null ? null : Guid.Parse((string)created["id"]!), first, DateTimeOffset.UtcNow, attempts, error);
    }

    /// <summary>
    /// Sends <paramref name="body"/> with <paramref name="key"/> (through the clients in turn) until a definite answer: the
    /// created object, or a 4xx other than 429 as the error; gives up after <see cref="GiveUpAfter"/>.
    /// </summary>
    private static async Task<(JsonNode? Created, int Attempts, string? Error)> SendUntilAnsweredAsync(
        IReadOnlyList<HttpClient> clients, int n, string path, object body, string key, Action<FailedAttempt> resent)
    {
        var first = DateTimeOffset.UtcNow;
        for (var attempt = 1; ; attempt++)
        {
            var client = clients[(n + attempt) % clients.Count];
            FailedAttempt failure;
            try
            {
                using var request = new HttpRequestMessage(HttpMethod.Post, path) { Content = JsonContent.Create(body) };
                request.Headers.Add("Idempotency-Key", key);
                using var response = await client.SendAsync(request);
                var text = await response.Content.ReadAsStringAsync();
                if (response.IsSuccessStatusCode) return (JsonNode.Parse(text)!, attempt, null);
                if ((int)response.StatusCode < 500 && response.StatusCode != HttpStatusCode.TooManyRequests)
                    return (null, attempt, $"{(int)response.StatusCode}: {text}");
                failure = new FailedAttempt(DateTimeOffset.UtcNow, (int)response.StatusCode, response.Content.Headers.ContentType?.MediaType, text);
            }
            catch (HttpRequestException ex) { failure = new FailedAttempt(DateTimeOffset.UtcNow, null, null, ex.Message); }
            catch (TaskCanceledException ex) { failure = new FailedAttempt(DateTimeOffset.UtcNow, null, null, ex.Message); }
            resent(failure);
            var error = failure.Status is { } status ? $"{status}: {failure.Text}" : failure.Text;
            if (DateTimeOffset.UtcNow - first > GiveUpAfter) return (null, attempt, "gave up: " + error);
            await Task.Delay(TimeSpan.FromMilliseconds(Math.Min(1000, 100 * Math.Pow(2, Math.Min(attempt, 4)))));
        }
    }

    private async Task OfferLoopAsync()
    {
        foreach (var (node, i) in _market.SpareNodes.Select((node, i) => (node, i)))
        {
            try { await Task.Delay(TimeSpan.FromSeconds(2), _stop.Token); }
            catch (OperationCanceledException) { return; }
            lock (_offerPlacements) _offerPlacements.Add(Task.Run(() => PublishOfferAsync(node, i)));
        }
    }

    private async Task<OfferPlacement> PublishOfferAsync(string node, int n)
    {
        var key = Guid.NewGuid().ToString();
        var (created, attempts, error) = await SendUntilAnsweredAsync(_market.Providers, n, "/v1/offers",
            FaultMarket.OfferBody(_market.ClusterId, [node]), key, _ => Interlocked.Increment(ref _offersResent));
        return new OfferPlacement(key, created is null ? null : Guid.Parse((string)created["id"]!), attempts, error);
    }
}
