using System.Net;
using System.Net.Http.Json;
using Marketplace.Contracts;
using Xunit;

namespace Marketplace.Listings.Tests;

/// <summary>Admins manage the accelerator catalog; every addition or change reaches the market as AcceleratorModelChanged.</summary>
public sealed class CatalogTests(ListingsApp app) : IClassFixture<ListingsApp>
{
    private static string NewId() => "test-" + Guid.NewGuid().ToString("N")[..8];

    private static object Model(string id) => new
    {
        id, vendor = "Moore Threads", name = "MTT S4000 48GB", memory_gb = 48, bf16_tflops = 100, interconnect = "mtlink", notes = "test entry",
    };

    [Fact]
    public async Task Adding_changing_retiring_and_reinstating_a_model_each_publish_the_entry_as_it_now_is()
    {
        var admin = app.Admin(Guid.NewGuid());
        var id = NewId();

        await ListingsApp.ReadAsync<AcceleratorInfo>(await admin.PostAsJsonAsync("/v1/accelerators", Model(id)), HttpStatusCode.Created);
        var added = await app.Latest<AcceleratorModelChanged>(e => e.AcceleratorModel == id, "AcceleratorModelChanged (added)");
        Assert.Equal(("added", "Moore Threads", 48, (decimal?)100m, "mtlink", false),
            (added.Change, added.Vendor, added.MemoryGb, added.Bf16Tflops, added.Interconnect, added.Retired));

        var changed = await ListingsApp.ReadAsync<AcceleratorInfo>(await admin.PatchAsJsonAsync($"/v1/accelerators/{id}", new { memory_gb = 64 }), HttpStatusCode.OK);
        Assert.Equal(64, changed.MemoryGb);
        var changedEvent = await app.Latest<AcceleratorModelChanged>(e => e.AcceleratorModel == id && e.Change == "changed", "AcceleratorModelChanged (changed)");
        Assert.Equal((64, "MTT S4000 48GB", false), (changedEvent.MemoryGb, changedEvent.Name, changedEvent.Retired));

        await ListingsApp.ReadAsync<AcceleratorInfo>(await admin.PatchAsJsonAsync($"/v1/accelerators/{id}", new { retired = true }), HttpStatusCode.OK);
        var retired = await app.Latest<AcceleratorModelChanged>(e => e.AcceleratorModel == id && e.Change == "retired", "AcceleratorModelChanged (retired)");
        Assert.True(retired.Retired);
        Assert.Equal(64, retired.MemoryGb);

        await ListingsApp.ReadAsync<AcceleratorInfo>(await admin.PatchAsJsonAsync($"/v1/accelerators/{id}", new { retired = false }), HttpStatusCode.OK);
        var reinstated = await app.Latest<AcceleratorModelChanged>(e => e.AcceleratorModel == id && e.Change == "reinstated", "AcceleratorModelChanged (reinstated)");
        Assert.False(reinstated.Retired);
    }

    [Fact]
    public async Task A_change_that_changes_nothing_publishes_nothing()
    {
        var admin = app.Admin(Guid.NewGuid());
        var id = NewId();
        await ListingsApp.ReadAsync<AcceleratorInfo>(await admin.PostAsJsonAsync("/v1/accelerators", Model(id)), HttpStatusCode.Created);
        var before = await app.SnapshotAsync();

        await ListingsApp.ReadAsync<AcceleratorInfo>(await admin.PatchAsJsonAsync($"/v1/accelerators/{id}",
            new { memory_gb = 48, vendor = "Moore Threads", retired = false }), HttpStatusCode.OK);

        Assert.Equal(before.OutboxSeq, (await app.SnapshotAsync()).OutboxSeq);
    }

    [Fact]
    public async Task Refused_catalog_changes_write_no_entry_and_no_event()
    {
        var admin = app.Admin(Guid.NewGuid());
        var id = NewId();
        await ListingsApp.ReadAsync<AcceleratorInfo>(await admin.PostAsJsonAsync("/v1/accelerators", Model(id)), HttpStatusCode.Created);
        var before = await app.SnapshotAsync();
        var catalog = await admin.GetStringAsync("/v1/accelerators");

        var refused = new (HttpResponseMessage Response, HttpStatusCode Status)[]
        {
            (await admin.PostAsJsonAsync("/v1/accelerators", Model(id)), HttpStatusCode.Conflict),
            (await admin.PostAsJsonAsync("/v1/accelerators", new { id = NewId(), vendor = "X", name = "Y", interconnect = "pcie4" }), HttpStatusCode.BadRequest),
            (await admin.PatchAsJsonAsync($"/v1/accelerators/{id}", new { memory_gb = 0 }), HttpStatusCode.BadRequest),
            (await admin.PatchAsJsonAsync("/v1/accelerators/no-such-model", new { memory_gb = 8 }), HttpStatusCode.NotFound),
            (await app.Provider(Guid.NewGuid()).PatchAsJsonAsync($"/v1/accelerators/{id}", new { retired = true }), HttpStatusCode.Forbidden),
            (await app.Provider(Guid.NewGuid()).PostAsJsonAsync("/v1/accelerators", Model(NewId())), HttpStatusCode.Forbidden),
        };

        foreach (var (response, status) in refused)
        {
            Assert.Equal(status, response.StatusCode);
            Assert.Equal("application/problem+json", response.Content.Headers.ContentType?.MediaType);
        }
        Assert.Equal(before.OutboxSeq, (await app.SnapshotAsync()).OutboxSeq);
        Assert.Equal(catalog, await admin.GetStringAsync("/v1/accelerators"));
    }
}
