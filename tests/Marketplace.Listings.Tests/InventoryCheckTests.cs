using Marketplace.Listings.Agent;
using Xunit;

namespace Marketplace.Listings.Tests;

public sealed class InventoryCheckTests
{
    private static readonly Inventory Declared = new("h100-sxm", 8, 80, 112, 2048, null);

    [Fact]
    public void The_declared_inventory_has_no_difference_and_more_cpu_or_ram_than_declared_is_fine() =>
        Assert.Empty(InventoryCheck.Differences(Declared, Declared with { CpuCores = 128, RamGb = 4096, DiskGb = 7000 }));

    [Theory]
    [InlineData("a100-80gb", 8, 80, 112, 2048, "accelerator_model declared h100-sxm, observed a100-80gb")]
    [InlineData("h100-sxm", 7, 80, 112, 2048, "accelerator_count declared 8, observed 7")]
    [InlineData("h100-sxm", 9, 80, 112, 2048, "accelerator_count declared 8, observed 9")]
    [InlineData("h100-sxm", 8, 94, 112, 2048, "gpu_memory_gb declared 80, observed 94")]
    [InlineData("h100-sxm", 8, 80, 56, 2048, "cpu_cores declared 112, observed 56")]
    [InlineData("h100-sxm", 8, 80, 112, null, "ram_gb declared 2048, not reported")]
    public void Each_difference_is_named_with_both_values(string model, int count, int memory, int? cpu, int? ram, string expected) =>
        Assert.Equal([expected], InventoryCheck.Differences(Declared, new Inventory(model, count, memory, cpu, ram, null)));
}
