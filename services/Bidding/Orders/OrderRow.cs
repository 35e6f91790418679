using Marketplace.Bidding.Domain;
using Marketplace.Contracts;

namespace Marketplace.Bidding.Orders;

/// <summary>An orders row (Dapper maps the snake_case columns).</summary>
internal sealed class OrderRow
{
    public Guid Id { get; init; }
    public Guid RenterOrgId { get; init; }
    public string IdempotencyKey { get; init; } = "";
    public string RequestHash { get; init; } = "";
    public string Type { get; init; } = "";
    public string TimeInForce { get; init; } = "";
    public string Status { get; init; } = "";
    public string? StatusReason { get; init; }
    public string AcceleratorModel { get; init; } = "";
    public int AcceleratorCount { get; init; }
    public int DurationSeconds { get; init; }
    public long MaxPriceAmount { get; init; }
    public string MaxPriceCurrency { get; init; } = "";
    public string? Region { get; init; }
    public string? Jurisdiction { get; init; }
    public DateTimeOffset CreatedAt { get; init; }
    public Guid? LeaseId { get; init; }
    public string? RegionGroup { get; init; }
    public DateTimeOffset? EarliestStart { get; init; }
    public DateTimeOffset? LatestEnd { get; init; }
    public DateTimeOffset? ExpiresAt { get; init; }
    public DateTimeOffset PriorityAt { get; init; }
    public string[] Alternatives { get; init; } = [];
    public bool VerifiedOnly { get; init; }
    public DateTimeOffset? NotBefore { get; init; }
    public Guid? RequeuedFrom { get; init; }
    public Guid? RequeuedAs { get; init; }

    public const string Columns = """
        id, renter_org_id, idempotency_key, request_hash, type, time_in_force, status, status_reason, accelerator_model,
        accelerator_count, duration_seconds, max_price_amount, max_price_currency, region, jurisdiction, created_at, lease_id,
        region_group, earliest_start, latest_end, expires_at, priority_at, alternatives, verified_only, not_before, requeued_from,
        requeued_as
        """;

    /// <summary>The order as the engine sees it at <paramref name="now"/>: on-demand and interruptible orders start now.</summary>
    public BookOrder ToBookOrder(DateTimeOffset now)
    {
        var kind = Type switch { "reserved" => OrderKind.Reserved, "interruptible" => OrderKind.Interruptible, _ => OrderKind.OnDemand };
        // A requeued order starts no earlier than its predecessor's capacity is taken back.
        var from = NotBefore is { } notBefore && notBefore > now ? notBefore : now;
        var (earliest, latestEnd) = kind == OrderKind.Reserved
            ? (NotBefore is { } nb && nb > EarliestStart!.Value ? nb : EarliestStart!.Value, LatestEnd!.Value)
            : (from, from.AddSeconds(DurationSeconds));
        return new BookOrder(Id, kind, AcceleratorModel, AcceleratorCount, MaxPriceAmount, MaxPriceCurrency, Region, Jurisdiction,
            earliest, latestEnd, DurationSeconds, PriorityAt);
    }
}

/// <summary>The match shown on an order: the active one, if any.</summary>
internal sealed class MatchRow
{
    public Guid Id { get; init; }
    public Guid OrderId { get; init; }
    public Guid OfferId { get; init; }
    public long PriceAmount { get; init; }
    public string PriceCurrency { get; init; } = "";
    public DateTimeOffset StartAt { get; init; }
    public DateTimeOffset EndAt { get; init; }
    public bool Interruptible { get; init; }
    public DateTimeOffset? PreemptedAt { get; init; }
}

/// <param name="PreemptedAt">Set when an interruptible match was preempted: its capacity is taken back at End.</param>
public sealed record OrderMatchResponse(Guid OfferId, Money PricePerHour, DateTimeOffset Start, DateTimeOffset End, bool Interruptible,
    DateTimeOffset? PreemptedAt);

public sealed record OrderResponse(
    Guid Id,
    Guid RenterOrgId,
    string Type,
    string TimeInForce,
    string Status,
    string? StatusReason,
    string AcceleratorModel,
    int AcceleratorCount,
    int DurationSeconds,
    Money MaxPricePerHour,
    string? Region,
    string? Jurisdiction,
    DateTimeOffset CreatedAt,
    OrderMatchResponse? Match,
    Guid? LeaseId,
    DateTimeOffset? EarliestStart,
    DateTimeOffset? LatestEnd,
    DateTimeOffset? ExpiresAt,
    IReadOnlyList<string> Alternatives,
    bool VerifiedOnly,
    DateTimeOffset? NotBefore,
    Guid? RequeuedFrom,
    Guid? RequeuedAs)
{
    internal static OrderResponse From(OrderRow o, MatchRow? m) => new(
        o.Id, o.RenterOrgId, o.Type, o.TimeInForce, o.Status, o.StatusReason, o.AcceleratorModel, o.AcceleratorCount,
        o.DurationSeconds, new Money(o.MaxPriceAmount, o.MaxPriceCurrency), o.Region, o.Jurisdiction, o.CreatedAt,
        m is null ? null : new OrderMatchResponse(m.OfferId, new Money(m.PriceAmount, m.PriceCurrency), m.StartAt, m.EndAt,
            m.Interruptible, m.PreemptedAt),
        o.LeaseId, o.EarliestStart, o.LatestEnd, o.ExpiresAt, o.Alternatives, o.VerifiedOnly, o.NotBefore, o.RequeuedFrom,
        o.RequeuedAs);
}
