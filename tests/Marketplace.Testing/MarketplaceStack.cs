using System.Diagnostics;
using System.Net;
using System.Net.Http.Headers;
using System.Net.Sockets;

namespace Marketplace.Testing;

/// <summary>
/// The whole marketplace as real processes (the built service assemblies, each run with <c>dotnet</c>) on a fresh
/// database and virtual host: what a user runs, reached only through the gateway.
/// </summary>
public sealed class MarketplaceStack : IAsyncDisposable
{
    public static readonly string[] ServiceProjects = ["Listings", "Bidding", "Scheduling", "Billing", "StripeFake", "Gateway"];
    public const string AdminKey = "mk_admin_test_bootstrap_key_0123456789";
    public const string InternalToken = "test-internal-gateway-token";
    public const string StripeWebhookSecret = "whsec_test_secret_for_the_local_fake";

    private readonly Dictionary<string, ServiceProcess> _processes = new(StringComparer.OrdinalIgnoreCase);
    private readonly Dictionary<string, int> _ports = new(StringComparer.OrdinalIgnoreCase);
    private readonly IDictionary<string, string> _settings;

    public TestDatabase Database { get; }
    public TestVirtualHost VirtualHost { get; }
    public string LogDirectory { get; }
    public Uri GatewayUrl => new($"http://127.0.0.1:{_ports["Gateway"]}");
    public Uri UrlOf(string project) => new($"http://127.0.0.1:{_ports[project]}");

    private MarketplaceStack(TestDatabase db, TestVirtualHost vhost, IDictionary<string, string> settings)
    {
        Database = db;
        VirtualHost = vhost;
        _settings = settings;
        LogDirectory = Path.Combine(Path.GetTempPath(), "marketplace-stack-" + db.Name);
        Directory.CreateDirectory(LogDirectory);
        foreach (var p in ServiceProjects) _ports[p] = FreePort();
    }

    /// <summary>Starts every service; <paramref name="settings"/> are extra configuration keys (e.g. "Scheduling__MinLeaseSeconds").</summary>
    public static async Task<MarketplaceStack> StartAsync(IDictionary<string, string>? settings = null)
    {
        var stack = new MarketplaceStack(await TestDatabase.CreateAsync(), await TestVirtualHost.CreateAsync(),
            settings ?? new Dictionary<string, string>());
        try
        {
            // Services migrate their own schemas at start; the gateway last, once its upstreams answer.
            await Task.WhenAll(ServiceProjects.Where(p => p != "Gateway").Select(stack.StartServiceAsync));
            await stack.StartServiceAsync("Gateway");
            return stack;
        }
        catch
        {
            await stack.DisposeAsync();
            throw;
        }
    }

    public HttpClient Client(string? apiKey = null)
    {
        var client = new HttpClient { BaseAddress = GatewayUrl, Timeout = TimeSpan.FromSeconds(30) };
        if (apiKey is not null) client.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue("Bearer", apiKey);
        return client;
    }

    public async Task StartServiceAsync(string project)
    {
        var env = new Dictionary<string, string>
        {
            ["ASPNETCORE_URLS"] = $"http://127.0.0.1:{_ports[project]}",
            ["DOTNET_ENVIRONMENT"] = "Testing",
            ["ASPNETCORE_ENVIRONMENT"] = "Testing",
            ["ConnectionStrings__Postgres"] = Database.ConnectionString(project.ToLowerInvariant()),
            ["RabbitMq__Port"] = TestServers.RabbitPort.ToString(),
            ["RabbitMq__VirtualHost"] = VirtualHost.Name,
            ["RabbitMq__Username"] = TestServers.RabbitUser,
            ["RabbitMq__Password"] = TestServers.RabbitPassword,
            ["Gateway__InternalToken"] = InternalToken,
            ["Gateway__BootstrapAdminKey"] = AdminKey,
            ["Gateway__Upstreams__listings"] = UrlOf("Listings").ToString(),
            ["Gateway__Upstreams__bidding"] = UrlOf("Bidding").ToString(),
            ["Gateway__Upstreams__scheduling"] = UrlOf("Scheduling").ToString(),
            ["Gateway__Upstreams__billing"] = UrlOf("Billing").ToString(),
            ["Stripe__ApiBase"] = UrlOf("StripeFake").ToString(),
            ["Stripe__ApiKey"] = "sk_test_local_fake",
            ["Stripe__WebhookSecret"] = StripeWebhookSecret,
            ["StripeFake__WebhookUrl"] = new Uri(GatewayUrl, "/v1/webhooks/stripe").ToString(),
            ["StripeFake__WebhookSecret"] = StripeWebhookSecret,
        };
        foreach (var (k, v) in _settings) env[k] = v;
        var dll = project == "StripeFake"
            ? Path.Combine(RepoPaths.Root, "infra", "stripe-fake", "bin", RepoPaths.Configuration, "net10.0", "Marketplace.StripeFake.dll")
            : RepoPaths.ServiceDll(project);
        var process = new ServiceProcess(project, dll, env, Path.Combine(LogDirectory, project.ToLowerInvariant() + ".log"));
        _processes[project] = process;
        await process.WaitReadyAsync(new Uri(UrlOf(project), "/health/ready"), TimeSpan.FromSeconds(90));
    }

    /// <summary>kill -9: no shutdown hooks, no flushing.</summary>
    public void Kill(string project)
    {
        _processes[project].Kill();
        _processes.Remove(project);
    }

    public string ReadLog(string project)
    {
        var path = Path.Combine(LogDirectory, project.ToLowerInvariant() + ".log");
        using var stream = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.ReadWrite);
        return new StreamReader(stream).ReadToEnd();
    }

    public async ValueTask DisposeAsync()
    {
        foreach (var p in _processes.Values) p.Kill();
        _processes.Clear();
        await VirtualHost.DisposeAsync();
        await Database.DisposeAsync();
    }

    private static int FreePort()
    {
        using var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        return ((IPEndPoint)listener.LocalEndpoint).Port;
    }
}

/// <summary>A service process with its output appended to a log file.</summary>
public sealed class ServiceProcess
{
    private readonly Process _process;
    private readonly StreamWriter _log;
    private readonly string _name;

    public ServiceProcess(string name, string dll, IDictionary<string, string> env, string logPath)
    {
        _name = name;
        if (!File.Exists(dll)) throw new FileNotFoundException($"{name} is not built: {dll}");
        var psi = new ProcessStartInfo("dotnet", [dll])
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
            WorkingDirectory = Path.GetDirectoryName(dll)!,
        };
        foreach (var (k, v) in env) psi.Environment[k] = v;
        _log = new StreamWriter(new FileStream(logPath, FileMode.Append, FileAccess.Write, FileShare.ReadWrite)) { AutoFlush = true };
        _process = new Process { StartInfo = psi, EnableRaisingEvents = true };
        _process.OutputDataReceived += (_, e) => Write(e.Data);
        _process.ErrorDataReceived += (_, e) => Write(e.Data);
        _process.Start();
        _process.BeginOutputReadLine();
        _process.BeginErrorReadLine();
    }

    private void Write(string? line)
    {
        if (line is null) return;
        lock (_log) _log.WriteLine(line);
    }

    public async Task WaitReadyAsync(Uri health, TimeSpan timeout)
    {
        using var http = new HttpClient { Timeout = TimeSpan.FromSeconds(2) };
        var deadline = DateTime.UtcNow + timeout;
        while (DateTime.UtcNow < deadline)
        {
            if (_process.HasExited) throw new InvalidOperationException($"{_name} exited with code {_process.ExitCode} while starting");
            try
            {
                if ((await http.GetAsync(health)).IsSuccessStatusCode) return;
            }
            catch (HttpRequestException) { }
            catch (TaskCanceledException) { }
            await Task.Delay(200);
        }
        throw new TimeoutException($"{_name} was not ready at {health} within {timeout}");
    }

    public void Kill()
    {
        try { if (!_process.HasExited) _process.Kill(entireProcessTree: true); _process.WaitForExit(5000); }
        catch (InvalidOperationException) { }
        lock (_log) _log.Dispose();
    }
}
