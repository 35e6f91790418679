using System.Globalization;
using Dapper;
using MassTransit;
using Marketplace.Contracts;
using Marketplace.Scheduling.Domain;
using Marketplace.ServiceDefaults.Data;
using Npgsql;

namespace Marketplace.Scheduling.Leases;

/// <summary>
/// Places a match on concrete slots: reads the free slots of the offered nodes, chooses them, books them and schedules
/// the lease's start and end, all in one transaction with the inbox mark and the outbox event.
/// </summary>
internal sealed class OrderMatchedConsumer(Db db, ILogger<OrderMatchedConsumer> logger) : IConsumer<OrderMatched>
{
    public const string ConsumerName = "order-matched";

    public async Task Consume(ConsumeContext<OrderMatched> context)
    {
        // A concurrent placement may take our slots between our read and our insert; the exclusion constraint rejects
        // the loser (or PostgreSQL breaks a deadlock between two gangs inserting into each other's slots). A retry on
        // fresh data places elsewhere if the nodes still have room.
        for (var attempt = 1; attempt <= 3; attempt++)
        {
            try
            {
                await PlaceAsync(context, context.CancellationToken);
                return;
            }
            catch (PostgresException e) when (e.SqlState is PostgresErrorCodes.ExclusionViolation or PostgresErrorCodes.DeadlockDetected)
            {
                logger.LogInformation("Placement of match {MatchId} lost a race for its slots (attempt {Attempt})",
                    context.Message.MatchId, attempt);
            }
        }
        await FailAsync(context, "the offered slots were booked by other leases while this order was being placed; "
            + "the order goes back to the book", context.CancellationToken);
    }

    private async Task PlaceAsync(ConsumeContext<OrderMatched> context, CancellationToken ct)
    {
        var m = context.Message;
        var start = m.Start.ToUniversalTime();
        var end = m.End.ToUniversalTime();
        await using var tx = await db.BeginAsync(ct);
        if (!await tx.FirstDeliveryAsync(context, ConsumerName)) return;

        var nodeIds = m.NodeIds.Distinct().Order().ToArray();
        // Placements on the same nodes take turns: each locks the offered nodes, always in the same order, before it reads
        // their free slots. Without it, concurrent placements read the same free slots and then lose to the exclusion
        // constraint or deadlock on each other's inserts. Placements on other nodes still run in parallel.
        foreach (var nodeId in nodeIds)
            await tx.Connection.ExecuteAsync(new CommandDefinition(
                "SELECT pg_advisory_xact_lock(hashtext('scheduling.node'), hashtext(@nodeId::text))",
                new { nodeId }, tx.Transaction, cancellationToken: ct));
        var nodes = (await tx.Connection.QueryAsync<KnownNode>(new CommandDefinition(
            "SELECT id, provider_org_id, accelerator_model FROM nodes WHERE id = ANY(@nodeIds)",
            new { nodeIds }, tx.Transaction, cancellationToken: ct))).AsList();
        if (nodes.Count < nodeIds.Length)
        {
            // NodeRegistered and OrderMatched travel on different queues: wait for the copy rather than fail the renter.
            var missing = nodeIds.Except(nodes.Select(n => n.Id));
            throw new NodesNotKnownYetException($"nodes {string.Join(", ", missing)} of match {m.MatchId} are not registered here yet");
        }

        string? reason = null;
        if (m.AcceleratorCount <= 0 || end <= start)
            reason = "the match asks for no accelerators or an empty time window";
        else if (end <= tx.Now)
            // Delayed past its whole window (the broker or this service was down): a booking in the past could never run.
            reason = $"its window ended at {Format(end)}, before the match reached the scheduler";
        var eligible = nodes.Where(n => n.ProviderOrgId == m.ProviderOrgId && n.AcceleratorModel == m.AcceleratorModel)
            .Select(n => n.Id).ToArray();
        var candidates = eligible.Length == 0
            ? []
            : await Booking.CandidatesAsync(tx.Connection, tx.Transaction, eligible, start, end, ct);
        var placement = reason is null ? Placement.Place(candidates, new PlacementRequest(m.AcceleratorCount)) : null;
        if (placement is not { Placed: true })
        {
            reason ??= Explain(placement!, m.AcceleratorModel, m.AcceleratorCount, start, end);
            await tx.PublishAsync(new PlacementFailed(m.MatchId, m.OrderId, reason, tx.Now), ct);
            await tx.CommitAsync(ct);
            return;
        }

        var lease = new NewLease(NewId.NextSequentialGuid(), m.OrderId, m.MatchId, m.RenterOrgId, m.ProviderOrgId,
            m.AcceleratorModel, m.AcceleratorCount, start, end, m.PricePerHour.Amount, m.PricePerHour.Currency, tx.Now)
        {
            Interruptible = m.Interruptible,
            PreemptionNoticeSeconds = Math.Max(0, m.PreemptionNoticeSeconds),
            SlaLevel = string.IsNullOrWhiteSpace(m.SlaLevel) ? "standard" : m.SlaLevel,
        };
        var slotIds = placement.Slots.Select(s => s.SlotId).ToArray();
        await Booking.InsertAsync(tx.Connection, tx.Transaction, lease, slotIds, ct);
        await tx.ScheduleAsync(LeaseLifecycle.Activate, lease.Id.ToString(), start, ct);
        await tx.ScheduleAsync(LeaseLifecycle.Complete, lease.Id.ToString(), end, ct);
        await tx.PublishAsync(new LeaseScheduled(lease.Id, m.OrderId, m.MatchId, m.RenterOrgId, m.ProviderOrgId,
            m.AcceleratorModel, m.AcceleratorCount, start, end, m.PricePerHour, slotIds, tx.Now)
        {
            Interruptible = lease.Interruptible,
            SlaLevel = lease.SlaLevel,
        }, ct);
        await tx.CommitAsync(ct);
    }

    private async Task FailAsync(ConsumeContext<OrderMatched> context, string reason, CancellationToken ct)
    {
        await using var tx = await db.BeginAsync(ct);
        if (!await tx.FirstDeliveryAsync(context, ConsumerName)) return;
        await tx.PublishAsync(new PlacementFailed(context.Message.MatchId, context.Message.OrderId, reason, tx.Now), ct);
        await tx.CommitAsync(ct);
    }

    /// <summary>Why a placement failed, in words the renter can act on.</summary>
    internal static string Explain(PlacementResult placement, string model, int count, DateTimeOffset start, DateTimeOffset end)
    {
        var excluded = placement.ExcludedNodes == 0
            ? ""
            : $"; {placement.ExcludedNodes} offered node(s) are unhealthy, unverified or in maintenance then";
        return placement.Failure == PlacementFailure.Fragmented
            ? $"{placement.FreeCount} {model} slots are free on the offered nodes between {Format(start)} and {Format(end)}, "
              + $"but no single cluster fabric holds {count} of them (at most {placement.LargestFabricFree}); a gang never spans two fabrics{excluded}"
            : $"only {placement.FreeCount} of {count} {model} slots are free on the offered nodes between {Format(start)} and {Format(end)}{excluded}";
    }

    internal static string Format(DateTimeOffset t) => t.UtcDateTime.ToString("yyyy-MM-dd HH:mm:ss'Z'", CultureInfo.InvariantCulture);

    private sealed record KnownNode(Guid Id, Guid ProviderOrgId, string AcceleratorModel);
}

internal sealed class NodesNotKnownYetException(string message) : Exception(message);

internal sealed class OrderMatchedConsumerDefinition : ConsumerDefinition<OrderMatchedConsumer>
{
    public OrderMatchedConsumerDefinition() => ConcurrentMessageLimit = 16;

    protected override void ConfigureConsumer(IReceiveEndpointConfigurator endpointConfigurator,
        IConsumerConfigurator<OrderMatchedConsumer> consumerConfigurator, IRegistrationContext context)
    {
        // Longer than the bus default: a node's registration may still be on its way.
        consumerConfigurator.UseMessageRetry(r =>
        {
            r.Handle<NodesNotKnownYetException>();
            r.Intervals(TimeSpan.FromMilliseconds(200), TimeSpan.FromSeconds(1), TimeSpan.FromSeconds(3), TimeSpan.FromSeconds(10), TimeSpan.FromSeconds(30));
        });
    }
}
