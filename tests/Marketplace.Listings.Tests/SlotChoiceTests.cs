using Marketplace.Listings.Domain;
using Xunit;

namespace Marketplace.Listings.Tests;

public sealed class SlotChoiceTests
{
    /// <summary>An 8-accelerator board of two NVLink islands of 4 (indexes 0-3 and 4-7).</summary>
    private static readonly NodeSlot[] TwoIslands = Enumerable.Range(0, 8).Select(i => new NodeSlot(Guid.NewGuid(), i, i / 4)).ToArray();

    private static int[] Indexes(IReadOnlyList<NodeSlot>? chosen) => chosen!.Select(s => s.Index).ToArray();
    private static HashSet<Guid> Taken(params int[] indexes) => indexes.Select(i => TwoIslands[i].Id).ToHashSet();

    [Fact]
    public void Free_slots_of_one_island_are_taken_lowest_index_first() =>
        Assert.Equal([0, 1], Indexes(SlotChoice.Choose(TwoIslands, Taken(), 2)));

    [Fact]
    public void An_offer_that_fits_in_an_island_goes_to_the_fullest_island_that_still_fits_and_leaves_the_other_whole() =>
        // Island 0 has 2 free, island 1 has 4: two more go to island 0, so a later offer of 4 still gets one whole island.
        Assert.Equal([2, 3], Indexes(SlotChoice.Choose(TwoIslands, Taken(0, 1), 2)));

    [Fact]
    public void An_offer_bigger_than_any_free_island_splits_as_few_islands_as_it_can() =>
        // Island 0 has 1 free (3), island 1 has 4: five take all of island 1 and the one left in island 0.
        Assert.Equal([3, 4, 5, 6, 7], Indexes(SlotChoice.Choose(TwoIslands, Taken(0, 1, 2), 5)));

    [Fact]
    public void Taken_slots_are_never_chosen_and_asking_for_more_than_are_free_chooses_nothing()
    {
        var taken = Taken(1, 4, 6);
        var all = SlotChoice.Choose(TwoIslands, taken, 5)!;
        Assert.Equal([0, 2, 3, 5, 7], Indexes(all));
        Assert.Null(SlotChoice.Choose(TwoIslands, taken, 6));
        Assert.Null(SlotChoice.Choose(TwoIslands, taken, 0));
    }

    [Fact]
    public void Pcie_only_slots_are_all_alike_and_go_lowest_index_first()
    {
        var pcie = Enumerable.Range(0, 4).Select(i => new NodeSlot(Guid.NewGuid(), i, null)).ToArray();
        Assert.Equal([1, 3], Indexes(SlotChoice.Choose(pcie, new HashSet<Guid> { pcie[0].Id, pcie[2].Id }, 2)));
    }
}
