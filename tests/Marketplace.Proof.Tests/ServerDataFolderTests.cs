using System.Runtime.Versioning;
using Marketplace.Testing;
using Xunit;

namespace Marketplace.Proof.Tests;

/// <summary>
/// <c>infra/servers.sh</c> keeps the PostgreSQL data of a checkout that the postgres user cannot enter (one under
/// <c>/root</c>, or a clean clone in a <c>mktemp -d</c> folder) in <c>/var/tmp</c>, outside the checkout. Deleting the
/// checkout does not delete that folder; the next start on the machine does, and never a folder still in use.
/// </summary>
[SupportedOSPlatform("linux")] // the scripts are for Debian and Ubuntu
public sealed class ServerDataFolderTests
{
    [Fact]
    public async Task The_data_folder_of_a_deleted_checkout_is_removed_at_the_next_start_and_a_live_one_is_kept()
    {
        var (closed, _, _) = PrivateServers.NewEnvironment("closed");
        var (other, _, otherData) = PrivateServers.NewEnvironment("other");
        // Like a clone in `mktemp -d`: a folder only its owner may enter, so postgres cannot reach a data folder in it.
        var checkout = Path.Combine("/tmp", $"marketplace-checkout-{Guid.NewGuid():N}");
        Directory.CreateDirectory(checkout, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute);
        var data = Path.Combine(checkout, ".data");
        closed["MP_DATA_DIR"] = data;
        string? outside = null;
        try
        {
            await InfraScripts.ServersAsync(closed, TimeSpan.FromMinutes(3), "start", "postgres");
            outside = Path.GetDirectoryName(new FileInfo(Path.Combine(data, "pg")).LinkTarget);
            Assert.NotNull(outside);
            Assert.StartsWith("/var/tmp/marketplace-", outside, StringComparison.Ordinal);
            Assert.True(File.Exists(Path.Combine(outside, "pg", "PG_VERSION")));

            // Another start while that PostgreSQL runs, and again after it stopped: its checkout still links to it.
            await InfraScripts.ServersAsync(other, TimeSpan.FromMinutes(3), "start", "postgres");
            await InfraScripts.ServersAsync(closed, TimeSpan.FromMinutes(2), "stop", "postgres");
            await InfraScripts.ServersAsync(other, TimeSpan.FromMinutes(2), "stop", "postgres");
            await InfraScripts.ServersAsync(other, TimeSpan.FromMinutes(3), "start", "postgres");
            Assert.True(File.Exists(Path.Combine(outside, "pg", "PG_VERSION")));

            Directory.Delete(checkout, recursive: true);
            await InfraScripts.ServersAsync(other, TimeSpan.FromMinutes(2), "stop", "postgres");
            await InfraScripts.ServersAsync(other, TimeSpan.FromMinutes(3), "start", "postgres");
            Assert.False(Directory.Exists(outside));
        }
        finally
        {
            await InfraScripts.ServersAsync(other, TimeSpan.FromMinutes(2), "stop", "postgres");
            if (Directory.Exists(checkout))
                await InfraScripts.ServersAsync(closed, TimeSpan.FromMinutes(2), "stop", "postgres");
            foreach (var folder in new[] { checkout, otherData, outside })
                if (folder is not null && Directory.Exists(folder)) Directory.Delete(folder, recursive: true);
        }
    }
}
