using Dapper;
using MassTransit;
using Marketplace.Contracts;
using Marketplace.ServiceDefaults.Data;

namespace Marketplace.Scheduling.Nodes;

/// <summary>Keeps the local copy of nodes and their slots that placement books against.</summary>
internal sealed class NodeRegisteredConsumer(Db db) : IConsumer<NodeRegistered>
{
    public async Task Consume(ConsumeContext<NodeRegistered> context)
    {
        var m = context.Message;
        var ct = context.CancellationToken;
        await using var tx = await db.BeginAsync(ct);
        if (!await tx.FirstDeliveryAsync(context, "node-registered")) return;

        await tx.Connection.ExecuteAsync(new CommandDefinition("""
            INSERT INTO nodes (id, cluster_id, provider_org_id, region, jurisdiction, accelerator_model, registered_at,
                               nvlink_domain, fabric, fabric_gbps)
            VALUES (@NodeId, @ClusterId, @ProviderOrgId, @Region, @Jurisdiction, @AcceleratorModel, @At,
                    @NvlinkDomain, @Fabric, @FabricGbps)
            ON CONFLICT (id) DO UPDATE SET
              cluster_id = excluded.cluster_id, provider_org_id = excluded.provider_org_id, region = excluded.region,
              jurisdiction = excluded.jurisdiction, accelerator_model = excluded.accelerator_model,
              registered_at = excluded.registered_at, nvlink_domain = excluded.nvlink_domain, fabric = excluded.fabric,
              fabric_gbps = excluded.fabric_gbps
            """, new
            {
                m.NodeId, m.ClusterId, m.ProviderOrgId, m.Region, m.Jurisdiction, m.AcceleratorModel, At = m.At.ToUniversalTime(),
                NvlinkDomain = string.IsNullOrWhiteSpace(m.NvlinkDomain) ? null : m.NvlinkDomain,
                Fabric = string.IsNullOrWhiteSpace(m.Fabric) ? null : m.Fabric,
                m.FabricGbps,
            },
            tx.Transaction, cancellationToken: ct));
        await tx.Connection.ExecuteAsync(new CommandDefinition("""
            INSERT INTO gpu_slots (id, node_id, index)
            SELECT slot_id, @NodeId, index FROM unnest(@slotIds, @indexes) AS s(slot_id, index)
            ON CONFLICT (id) DO NOTHING
            """, new
            {
                m.NodeId,
                slotIds = m.Slots.Select(s => s.SlotId).ToArray(),
                indexes = m.Slots.Select(s => s.Index).ToArray(),
            }, tx.Transaction, cancellationToken: ct));
        await tx.CommitAsync(ct);
    }
}

internal sealed class NodeRegisteredConsumerDefinition : ConsumerDefinition<NodeRegisteredConsumer>
{
    public NodeRegisteredConsumerDefinition() => ConcurrentMessageLimit = 8;
}
