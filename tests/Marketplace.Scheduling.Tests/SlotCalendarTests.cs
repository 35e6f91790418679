using Marketplace.Scheduling.Domain;
using Xunit;

namespace Marketplace.Scheduling.Tests;

/// <summary>The calendar a batch of placements is decided on: one read, then each placement sees the ones before it.</summary>
public sealed class SlotCalendarTests
{
    private static readonly DateTimeOffset T0 = new(2030, 1, 1, 10, 0, 0, TimeSpan.Zero);
    private static readonly Guid NodeA = Guid.Parse("00000000-0000-0000-0000-00000000000a");
    private static readonly Guid NodeB = Guid.Parse("00000000-0000-0000-0000-00000000000b");

    private static CalendarNode Node(Guid id, int slots, params TimeRange[] maintenance) =>
        new(id, Guid.Empty, null, null, Healthy: true, Verified: true,
            Enumerable.Range(0, slots).Select(i => (Guid.NewGuid(), i)).ToList(), maintenance);

    private static PlacementResult Place(SlotCalendar calendar, Guid[] nodes, DateTimeOffset start, DateTimeOffset end, int count = 1)
    {
        var result = Placement.Place(calendar.Candidates(nodes, start, end), new PlacementRequest(count));
        if (result.Placed) calendar.Book(result.Slots.Select(s => s.SlotId), start, end);
        return result;
    }

    [Fact]
    public void Two_placements_racing_for_a_one_gpu_node_in_one_batch_give_it_to_the_first_only()
    {
        var calendar = new SlotCalendar([Node(NodeA, 1)], []);

        var first = Place(calendar, [NodeA], T0, T0.AddHours(1));
        var second = Place(calendar, [NodeA], T0.AddMinutes(30), T0.AddHours(2));

        Assert.True(first.Placed);
        Assert.False(second.Placed);
        Assert.Equal(PlacementFailure.NotEnoughFree, second.Failure);
    }

    [Fact]
    public void The_second_of_two_racing_placements_takes_another_node_when_the_offer_has_one()
    {
        var calendar = new SlotCalendar([Node(NodeA, 1), Node(NodeB, 1)], []);

        var first = Place(calendar, [NodeA, NodeB], T0, T0.AddHours(1));
        var second = Place(calendar, [NodeA, NodeB], T0, T0.AddHours(1));

        Assert.True(first.Placed && second.Placed);
        Assert.NotEqual(first.Slots[0].NodeId, second.Slots[0].NodeId);
    }

    [Fact]
    public void A_slot_is_free_again_for_a_window_that_starts_where_its_booking_ends()
    {
        var a = Node(NodeA, 1);
        var calendar = new SlotCalendar([a], [(a.Slots[0].SlotId, new TimeRange(T0, T0.AddHours(1)))]);

        Assert.True(calendar.Candidates([NodeA], T0.AddMinutes(59), T0.AddHours(2))[0].Slots[0].Busy);
        Assert.False(calendar.Candidates([NodeA], T0.AddHours(1), T0.AddHours(2))[0].Slots[0].Busy);
        Assert.False(calendar.Candidates([NodeA], T0.AddHours(-1), T0)[0].Slots[0].Busy);
    }

    [Fact]
    public void A_node_is_in_maintenance_only_for_windows_that_overlap_it_and_an_open_end_lasts()
    {
        var calendar = new SlotCalendar([Node(NodeA, 1, new TimeRange(T0.AddHours(2), null))], []);

        Assert.False(calendar.Candidates([NodeA], T0, T0.AddHours(2))[0].InMaintenance);
        Assert.True(calendar.Candidates([NodeA], T0.AddDays(30), T0.AddDays(31))[0].InMaintenance);
    }

    [Fact]
    public void Nodes_the_calendar_does_not_know_are_left_out()
    {
        var calendar = new SlotCalendar([Node(NodeA, 2)], []);

        Assert.Equal([NodeA], calendar.Candidates([NodeA, NodeB, NodeA], T0, T0.AddHours(1)).Select(c => c.NodeId));
    }
}
