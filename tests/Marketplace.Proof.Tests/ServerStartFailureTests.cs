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
    private static Dictionary<string, string> PrivateEnvironment(string data)
    {
        var ports = InfraScripts.FreePorts(5);
        var id = Path.GetFileName(data);
        return new Dictionary<string, string>
        {
            ["MP_DATA_DIR"] = data,
            ["MP_PG_PORT"] = ports[0].ToString(),
            ["MP_RABBIT_PORT"] = ports[1].ToString(),
            ["MP_RABBIT_MGMT_PORT"] = ports[2].ToString(),
            ["MP_RABBIT_DIST_PORT"] = ports[3].ToString(),
            ["MP_EPMD_PORT"] = ports[4].ToString(),
            ["MP_RABBIT_NODENAME"] = $"{id.Replace("-", "", StringComparison.Ordinal)}@localhost",
            ["MP_PG_FSYNC"] = "off",
        };
    }

    /// <summary>Processes whose command line names <paramref name="data"/> (a server of this test's pair).</summary>
    private static List<string> ProcessesOf(string data) =>
        [.. Directory.EnumerateDirectories("/proc").Where(d => int.TryParse(Path.GetFileName(d), out _)).Select(d =>
        {
            try { return File.ReadAllText(Path.Combine(d, "cmdline")).Replace('\0', ' '); }
            catch (IOException) { return ""; }
            catch (UnauthorizedAccessException) { return ""; }
        }).Where(c => c.Contains(data, StringComparison.Ordinal))];

    private static async Task<string> FailingAsync(Dictionary<string, string> env, params string[] args)
    {
        var e = await Assert.ThrowsAsync<InvalidOperationException>(() => InfraScripts.ServersAsync(env, TimeSpan.FromMinutes(3), args));
        return e.Message;
    }

    [Fact]
    public async Task A_RabbitMQ_that_cannot_start_is_reported_with_its_log_and_stopped_and_the_next_start_succeeds()
    {
        var data = Path.Combine("/tmp", "marketplace-failing-" + Guid.NewGuid().ToString("N")[..8]);
        var env = PrivateEnvironment(data);
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
            await InfraScripts.ServersAsync(env, TimeSpan.FromMinutes(2), "stop", "rabbitmq");
            Assert.Empty(ProcessesOf(data));
            Directory.Delete(data, recursive: true);
        }
    }

    [Fact]
    public async Task A_PostgreSQL_that_cannot_start_is_reported_with_its_log_and_leaves_nothing_running()
    {
        var data = Path.Combine("/tmp", "marketplace-failing-" + Guid.NewGuid().ToString("N")[..8]);
        var env = PrivateEnvironment(data);
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
            await InfraScripts.ServersAsync(env, TimeSpan.FromMinutes(2), "stop", "postgres");
            Assert.Empty(ProcessesOf(data));
            Directory.Delete(data, recursive: true);
        }
    }
}
