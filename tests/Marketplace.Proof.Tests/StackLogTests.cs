using Marketplace.Testing;
using Xunit;

namespace Marketplace.Proof.Tests;

/// <summary>Test stacks keep their service logs for a day, then the next stack removes them.</summary>
public sealed class StackLogTests : IDisposable
{
    private readonly string _root = Directory.CreateTempSubdirectory("stack-logs-test-").FullName;

    [Fact]
    public void Logs_of_stacks_older_than_the_limit_are_removed_and_newer_ones_and_other_folders_are_kept()
    {
        var old = Folder(MarketplaceStack.LogDirectoryPrefix + "t_old", age: TimeSpan.FromHours(25));
        var recent = Folder(MarketplaceStack.LogDirectoryPrefix + "t_recent", age: TimeSpan.FromHours(23));
        var other = Folder("someone-elses-folder", age: TimeSpan.FromDays(3));

        MarketplaceStack.RemoveLogDirectories(TimeSpan.FromDays(1), _root);

        Assert.False(Directory.Exists(old));
        Assert.True(File.Exists(Path.Combine(recent, "bidding.log")));
        Assert.True(Directory.Exists(other));
    }

    private string Folder(string name, TimeSpan age)
    {
        var dir = Path.Combine(_root, name);
        Directory.CreateDirectory(dir);
        File.WriteAllText(Path.Combine(dir, "bidding.log"), "a log line\n");
        Directory.SetLastWriteTimeUtc(dir, DateTime.UtcNow - age);
        return dir;
    }

    public void Dispose() => Directory.Delete(_root, recursive: true);
}
