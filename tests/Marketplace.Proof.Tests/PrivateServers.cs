using System.Diagnostics;
using Marketplace.Testing;

namespace Marketplace.Proof.Tests;

/// <summary>
/// A PostgreSQL + RabbitMQ pair of this run's own (<c>infra/servers.sh</c> on free ports and a data folder in the
/// temp folder), for the scenarios that kill or restart a server: the shared pair other people's tests use is never
/// touched. Removed again at the end.
/// </summary>
public sealed class PrivateServers : IAsyncDisposable
{
    private readonly Dictionary<string, string> _env;

    public ServerEndpoints Endpoints { get; }
    public string DataDirectory { get; }

    private PrivateServers(ServerEndpoints endpoints, string dataDirectory, Dictionary<string, string> env)
    {
        Endpoints = endpoints;
        DataDirectory = dataDirectory;
        _env = env;
    }

    /// <summary>
    /// The environment of <c>infra/servers.sh</c> for a new private pair: free ports (never a shared server's), a data
    /// folder in the temp folder named <paramref name="prefix"/> and a random id, and a node name of its own.
    /// </summary>
    public static (Dictionary<string, string> Env, ServerEndpoints Endpoints, string DataDirectory) NewEnvironment(string prefix)
    {
        var ports = InfraScripts.FreePorts(5);
        var id = Guid.NewGuid().ToString("N")[..8];
        var data = Path.Combine("/tmp", $"marketplace-{prefix}-{id}");
        var shared = TestServers.Shared;
        if (ports.Contains(shared.PgPort) || ports.Contains(shared.RabbitPort) || ports.Contains(shared.RabbitManagementPort))
            throw new InvalidOperationException("a private server may not take a shared server's port");
        var env = new Dictionary<string, string>
        {
            ["MP_DATA_DIR"] = data,
            ["MP_PG_PORT"] = ports[0].ToString(),
            ["MP_RABBIT_PORT"] = ports[1].ToString(),
            ["MP_RABBIT_MGMT_PORT"] = ports[2].ToString(),
            ["MP_RABBIT_DIST_PORT"] = ports[3].ToString(),
            ["MP_EPMD_PORT"] = ports[4].ToString(),
            ["MP_RABBIT_NODENAME"] = $"{prefix}{id}@localhost",
            // A server crash keeps the operating system's page cache, so fsync adds nothing to these scenarios but time.
            ["MP_PG_FSYNC"] = "off",
            // But a commit must be acknowledged only once its WAL left PostgreSQL's memory, or an immediate stop loses
            // acknowledged orders. Set explicitly: infra/test.sh exports MP_PG_SYNC_COMMIT=off for the shared test
            // servers, and this process inherits it (CI lost one accepted order to it).
            ["MP_PG_SYNC_COMMIT"] = "on",
        };
        return (env, new ServerEndpoints(ports[0], ports[1], ports[2]), data);
    }

    public static async Task<PrivateServers> StartAsync()
    {
        var (env, endpoints, data) = NewEnvironment("private");
        var servers = new PrivateServers(endpoints, data, env);
        try
        {
            await servers.ScriptAsync("start");
            return servers;
        }
        catch
        {
            await servers.DisposeAsync();
            throw;
        }
    }

    /// <summary>kill -9 of the RabbitMQ node (the Erlang VM): no clean shutdown, no goodbye to the clients.</summary>
    public void KillRabbitMq()
    {
        var pid = int.Parse(File.ReadAllText(Path.Combine(DataDirectory, "rabbitmq", "rabbit.pid")).Trim());
        using var node = Process.GetProcessById(pid);
        node.Kill(); // SIGKILL
        node.WaitForExit(10_000);
    }

    public Task StartRabbitMqAsync() => ScriptAsync("start", "rabbitmq");

    /// <summary>Stops PostgreSQL: <c>fast</c> (clients told, transactions rolled back) or <c>immediate</c> (a crash: recovery at the next start).</summary>
    public Task StopPostgresAsync(string mode) =>
        ScriptAsync(new Dictionary<string, string> { ["MP_PG_STOP_MODE"] = mode }, "stop", "postgres");

    public Task StartPostgresAsync() => ScriptAsync("start", "postgres");

    public async ValueTask DisposeAsync()
    {
        try { await ScriptAsync("stop"); }
        catch (InvalidOperationException) { }
        try { Directory.Delete(DataDirectory, recursive: true); }
        catch (IOException) { }
        catch (UnauthorizedAccessException) { }
    }

    private Task ScriptAsync(params string[] args) => ScriptAsync(new Dictionary<string, string>(), args);

    private Task ScriptAsync(Dictionary<string, string> extra, params string[] args) =>
        InfraScripts.ServersAsync(_env.Concat(extra), TimeSpan.FromMinutes(4), args);
}
