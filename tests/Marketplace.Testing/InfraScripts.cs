using System.Diagnostics;
using System.Net;
using System.Net.Sockets;

namespace Marketplace.Testing;

/// <summary>The repository's own <c>infra/</c> scripts, run from tests that need servers of their own (to kill or restart them).</summary>
public static class InfraScripts
{
    /// <summary>Runs <c>infra/servers.sh</c> with <paramref name="args"/> and <paramref name="env"/>; throws with its output when it fails.</summary>
    public static async Task ServersAsync(IEnumerable<KeyValuePair<string, string>> env, TimeSpan timeout, params string[] args)
    {
        var psi = new ProcessStartInfo("bash", [Path.Combine(RepoPaths.Root, "infra", "servers.sh"), .. args])
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        foreach (var (k, v) in env) psi.Environment[k] = v;
        using var process = Process.Start(psi)!;
        var stdout = process.StandardOutput.ReadToEndAsync();
        var stderr = process.StandardError.ReadToEndAsync();
        using var cts = new CancellationTokenSource(timeout);
        await process.WaitForExitAsync(cts.Token);
        if (process.ExitCode != 0)
            throw new InvalidOperationException($"infra/servers.sh {string.Join(' ', args)} exited {process.ExitCode}: {await stdout}{await stderr}");
    }

    /// <summary><paramref name="count"/> distinct loopback ports free at the moment of the call.</summary>
    public static int[] FreePorts(int count)
    {
        var listeners = Enumerable.Range(0, count).Select(_ => new TcpListener(IPAddress.Loopback, 0)).ToList();
        try
        {
            listeners.ForEach(l => l.Start());
            return [.. listeners.Select(l => ((IPEndPoint)l.LocalEndpoint).Port)];
        }
        finally { listeners.ForEach(l => l.Stop()); }
    }
}
