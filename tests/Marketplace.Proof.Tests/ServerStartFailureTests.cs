using System.Net;
using System.Net.Sockets;
using Marketplace.Testing;
using Xunit;

namespace Marketplace.Proof.Tests;

/// <summary>
/// <c>infra/servers.sh</c> (what <c>infra/up.sh</c> and <c>infra/test.sh</c> start the servers with) when a server cannot
/// start: it says why (the end of the server's log), stops what it launched, so nothing holds the ports, and the next
/// try starts clean. On a private pair: free ports and a data folder of the test's own.
/// </summary>
public sealed class ServerStartFailureTests
{
    /// <summary>Processes whose command line names <paramref name="data"/> (a server of this test's pair).</summary>
    private static List<string> ProcessesOf(string data) =>
        [.. Directory.EnumerateDirectories("/proc").Where(d => int.TryParse(Path.GetFileName(d), out _)).Select(d =>
        {
            try { return File.ReadAllText(Path.Combine(d, "cmdline")).Replace('\0', ' '); }
            catch (IOException) { return ""; }
            catch (UnauthorizedAccessException) { return ""; }
        }).Where(c => c.Contains(data, StringComparison.Ordinal))];

    /// <summary>Stops the pair's <paramref name="server"/> (nothing of it may be left running) and removes its data folder.</summary>
    private static async Task StopAndRemoveAsync(Dictionary<string, string> env, string data, string server)
    {
        await InfraScripts.ServersAsync(env, TimeSpan.FromMinutes(2), "stop", server);
        Assert.Empty(ProcessesOf(data));
        Directory.Delete(data, recursive: true);
    }

    private static async Task<string> FailingAsync(Dictionary<string, string> env, params string[] args)
    {
        var e = await Assert.ThrowsAsync<InvalidOperationException>(() => InfraScripts.ServersAsync(env, TimeSpan.FromMinutes(3), args));
        return e.Message;
    }

    [Fact]
    public async Task A_RabbitMQ_that_cannot_start_is_reported_with_its_log_and_stopped_and_the_next_start_succeeds()
    {
        var (env, _, data) = PrivateServers.NewEnvironment("failing");
        try
        {
            // Something else holds the node's distribution port: the node gives up during its boot.
            using (var squatter = new TcpListener(IPAddress.Loopback, int.Parse(env["MP_RABBIT_DIST_PORT"])))
            {
                squatter.Start();
                var output = await FailingAsync(env, "start", "rabbitmq");
                Assert.Contains("RabbitMQ did not start", output, StringComparison.Ordinal);
                Assert.Contains("dist_port_already_used", output, StringComparison.Ordinal); // the node's own words
            }
            Assert.Empty(ProcessesOf(data));
            Assert.False(File.Exists(Path.Combine(data, "rabbit.started-by-us")));

            await InfraScripts.ServersAsync(env, TimeSpan.FromMinutes(3), "start", "rabbitmq");
            Assert.NotEmpty(ProcessesOf(data));
        }
        finally
        {
            await StopAndRemoveAsync(env, data, "rabbitmq");
        }
    }

    [Fact]
    public async Task A_PostgreSQL_that_cannot_start_is_reported_with_its_log_and_leaves_nothing_running()
    {
        var (env, _, data) = PrivateServers.NewEnvironment("failing");
        try
        {
            await InfraScripts.ServersAsync(env, TimeSpan.FromMinutes(3), "start", "postgres");
            await InfraScripts.ServersAsync(env, TimeSpan.FromMinutes(2), "stop", "postgres");
            var config = Path.Combine(data, "pg", "postgresql.conf");
            var good = await File.ReadAllTextAsync(config);
            await File.AppendAllTextAsync(config, "shared_buffers = 'a lot'\n");

            var output = await FailingAsync(env, "start", "postgres");
            Assert.Contains("PostgreSQL did not start", output, StringComparison.Ordinal);
            Assert.Contains("invalid value for parameter \"shared_buffers\"", output, StringComparison.Ordinal); // from its log
            Assert.Empty(ProcessesOf(data));
            Assert.False(File.Exists(Path.Combine(data, "pg.started-by-us")));

            await File.WriteAllTextAsync(config, good);
            await InfraScripts.ServersAsync(env, TimeSpan.FromMinutes(3), "start", "postgres");
            Assert.NotEmpty(ProcessesOf(data));
        }
        finally
        {
            await StopAndRemoveAsync(env, data, "postgres");
        }
    }
}
