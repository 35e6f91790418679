namespace Marketplace.Listings.Agent;

/// <summary>What a node was registered with, and what its agent reports seeing.</summary>
public sealed record Inventory(string AcceleratorModel, int AcceleratorCount, int GpuMemoryGb, int? CpuCores, int? RamGb, int? DiskGb);

/// <summary>Declared versus observed inventory: the rule that decides whether a node is verified.</summary>
public static class InventoryCheck
{
    /// <summary>
    /// Every difference that matters, in words; empty means verified. The accelerators must be exactly as declared (a
    /// renter pays per accelerator); CPU, RAM and disk may be larger than declared, never smaller.
    /// </summary>
    public static IReadOnlyList<string> Differences(Inventory declared, Inventory observed)
    {
        var differences = new List<string>();
        if (declared.AcceleratorModel != observed.AcceleratorModel)
            differences.Add($"accelerator_model declared {declared.AcceleratorModel}, observed {observed.AcceleratorModel}");
        if (declared.AcceleratorCount != observed.AcceleratorCount)
            differences.Add($"accelerator_count declared {declared.AcceleratorCount}, observed {observed.AcceleratorCount}");
        if (declared.GpuMemoryGb != observed.GpuMemoryGb)
            differences.Add($"gpu_memory_gb declared {declared.GpuMemoryGb}, observed {observed.GpuMemoryGb}");
        AtLeast("cpu_cores", declared.CpuCores, observed.CpuCores, differences);
        AtLeast("ram_gb", declared.RamGb, observed.RamGb, differences);
        AtLeast("disk_gb", declared.DiskGb, observed.DiskGb, differences);
        return differences;
    }

    private static void AtLeast(string field, int? declared, int? observed, List<string> differences)
    {
        if (declared is not { } d) return;
        if (observed is not { } o) differences.Add($"{field} declared {d}, not reported");
        else if (o < d) differences.Add($"{field} declared {d}, observed {o}");
    }
}
