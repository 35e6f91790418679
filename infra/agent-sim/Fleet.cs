using System.Globalization;

namespace Marketplace.AgentSim;

/// <summary>So many nodes of one accelerator model, with so many accelerators each.</summary>
public sealed record FleetEntry(string Model, int Nodes, int AcceleratorsPerNode = 8)
{
    /// <summary>Parses "h100-sxm:4,ascend-910b:4" or "l40s:2:4" (model:nodes[:accelerators per node, default 8]).</summary>
    public static IReadOnlyList<FleetEntry> Parse(string fleet)
    {
        var entries = new List<FleetEntry>();
        foreach (var part in fleet.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))
        {
            var bits = part.Split(':');
            if (bits.Length is < 2 or > 3 || !int.TryParse(bits[1], NumberStyles.None, CultureInfo.InvariantCulture, out var nodes) || nodes < 1
                || (bits.Length == 3 && (!int.TryParse(bits[2], NumberStyles.None, CultureInfo.InvariantCulture, out var per) || per is < 1 or > 16)))
                throw new FormatException($"'{part}' is not model:nodes[:accelerators-per-node], e.g. h100-sxm:4 or l40s:2:4.");
            entries.Add(new FleetEntry(bits[0], nodes, bits.Length == 3 ? int.Parse(bits[2], CultureInfo.InvariantCulture) : 8));
        }
        return entries.Count > 0 ? entries : throw new FormatException("The fleet is empty; give e.g. h100-sxm:4,ascend-910b:4.");
    }
}

public sealed class AgentSimOptions
{
    public required Uri Gateway { get; init; }
    /// <summary>An ordinary API key of a provider organisation: registers clusters and nodes and makes the node keys.</summary>
    public required string ProviderKey { get; init; }
    public required IReadOnlyList<FleetEntry> Fleet { get; init; }
    /// <summary>How many clusters get the whole fleet each (load: many clusters of a few nodes).</summary>
    public int Clusters { get; init; } = 1;
    public string ClusterName { get; init; } = "sim";
    public string Region { get; init; } = "cn-east";
    public string Jurisdiction { get; init; } = "CN";
    public string Fabric { get; init; } = "infiniband";
    public int FabricGbps { get; init; } = 400;
    /// <summary>Attestations every cluster declares (kind, level for mlps); evidence and expiry are made up.</summary>
    public IReadOnlyList<(string Kind, int? Level)> Compliance { get; init; } = [("data-residency", null)];
    public TimeSpan HeartbeatInterval { get; init; } = TimeSpan.FromSeconds(5);
    /// <summary>
    /// Every node heartbeats at the same instant (a fleet whose agents all restarted together): the worst burst the
    /// platform can get. Off by default: each node keeps a phase of its own, spread over the interval.
    /// </summary>
    public bool Lockstep { get; init; }
    /// <summary>So many nodes report one accelerator fewer than declared (they become unverified).</summary>
    public int Mismatched { get; init; }
    /// <summary>So many nodes heartbeat once and then fall silent (they become unhealthy after the timeout).</summary>
    public int Dead { get; init; }
    /// <summary>Requests in flight at once.</summary>
    public int Concurrency { get; init; } = 16;
}

/// <summary>A node the simulator registered, with the key its agent speaks with.</summary>
public sealed record SimulatedNode(Guid NodeId, Guid ClusterId, string Hostname, string Model, int AcceleratorCount, int GpuMemoryGb,
    string AgentKey, bool Mismatched, bool Dead);
