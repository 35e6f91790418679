using Marketplace.ServiceDefaults.Data;
using Xunit;

namespace Marketplace.ServiceDefaults.Tests;

/// <summary>Laying the rows written since a copy over it (KeptRows.Merge); the database side is tested where it is used.</summary>
public sealed class KeptRowsMergeTests
{
    private sealed record Row(int EndsAt, string Value);

    private static bool Live(Row r) => r.EndsAt > 10;

    [Fact]
    public void Written_rows_replace_theirs_gone_and_ended_ones_leave_and_the_rest_is_kept()
    {
        var known = new KeptRows<string, Row>.Copy(100, new Dictionary<string, Row>
        {
            ["kept"] = new(20, "k"),
            ["changed"] = new(20, "before"),
            ["gone"] = new(20, "g"),
            ["ended by now"] = new(10, "e"),
        });
        var copy = KeptRows<string, Row>.Merge(known, 140,
        [
            new("changed", new Row(30, "after"), Own: false),
            new("gone", null, Own: false),
            new("added", new Row(11, "a"), Own: false),
            new("added but ended", new Row(9, "x"), Own: false),
        ], Live);

        Assert.Equal(140, copy.Since);
        Assert.Equal(["added", "changed", "kept"], copy.Rows.Keys.Order());
        Assert.Equal("after", copy.Rows["changed"].Value);
        Assert.Equal("before", known.Rows["changed"].Value); // the copy read before is left as it was
    }

    [Fact]
    public void Without_a_copy_the_rows_read_are_the_copy()
    {
        var copy = KeptRows<string, Row>.Merge(null, 7, [new("a", new Row(20, "a"), Own: false), new("b", null, Own: false)], Live);
        Assert.Equal(7, copy.Since);
        Assert.Equal(["a"], copy.Rows.Keys);
    }
}
