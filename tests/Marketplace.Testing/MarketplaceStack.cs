using System.Diagnostics;
using System.Net;
using System.Net.Http.Headers;
using System.Net.Sockets;

namespace Marketplace.Testing;

/// <summary>What a <see cref="MarketplaceStack"/> runs on and how many of each service.</summary>
public sealed record StackOptions
{
    /// <summary>Extra configuration keys for every service (e.g. "Market__MinLeaseSeconds").</summary>
    public IDictionary<string, string> Settings { get; init; } = new Dictionary<string, string>();

    /// <summary>The PostgreSQL + RabbitMQ pair; the shared one when null.</summary>
    public ServerEndpoints? Servers { get; init; }

    /// <summary>
    /// Processes per service (the Stripe stand-in is always one). Gateway instance i routes to instance i of each
    /// service, so clients that spread over the gateways reach every instance; the queues are shared (competing consumers).
    /// </summary>
    public int Instances { get; init; } = 1;
}

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

    private readonly Dictionary<(string Project, int Instance), ServiceProcess> _processes = new(ProcessKey.Comparer);
    private readonly Dictionary<(string Project, int Instance), int> _ports = new(ProcessKey.Comparer);
    private readonly StackOptions _options;

    public TestDatabase Database { get; }
    public TestVirtualHost VirtualHost { get; }
    public string LogDirectory { get; }
    public Uri GatewayUrl => UrlOf("Gateway");
    /// <summary>Every gateway instance's address.</summary>
    public IReadOnlyList<Uri> GatewayUrls => Enumerable.Range(0, InstancesOf("Gateway")).Select(i => UrlOf("Gateway", i)).ToList();
    public Uri UrlOf(string project) => UrlOf(project, 0);
    public Uri UrlOf(string project, int instance) => new($"http://127.0.0.1:{_ports[(project, instance)]}");
    public int InstancesOf(string project) => project == "StripeFake" ? 1 : _options.Instances;

    private MarketplaceStack(TestDatabase db, TestVirtualHost vhost, StackOptions options)
    {
        Database = db;
        VirtualHost = vhost;
        _options = options;
        RemoveLogDirectories(olderThan: TimeSpan.FromDays(1));
        LogDirectory = Path.Combine(Path.GetTempPath(), LogDirectoryPrefix + db.Name);
        Directory.CreateDirectory(LogDirectory);
        foreach (var p in ServiceProjects)
            for (var i = 0; i < InstancesOf(p); i++) _ports[(p, i)] = FreePort();
    }

    /// <summary>Starts every service; <paramref name="settings"/> are extra configuration keys (e.g. "Scheduling__MinLeaseSeconds").</summary>
    public static Task<MarketplaceStack> StartAsync(IDictionary<string, string>? settings = null) =>
        StartAsync(new StackOptions { Settings = settings ?? new Dictionary<string, string>() });

    public static async Task<MarketplaceStack> StartAsync(StackOptions options)
    {
        if (options.Instances < 1) throw new ArgumentOutOfRangeException(nameof(options), "Instances must be at least 1.");
        var stack = new MarketplaceStack(await TestDatabase.CreateAsync(options.Servers), await TestVirtualHost.CreateAsync(options.Servers), options);
        try
        {
            // Services migrate their own schemas at start (several instances of one take turns on Evolve's lock);
            // the gateways last, once their upstreams answer.
            await Task.WhenAll(ServiceProjects.Where(p => p != "Gateway")
                .SelectMany(p => Enumerable.Range(0, stack.InstancesOf(p)).Select(i => stack.StartServiceAsync(p, i))));
            await Task.WhenAll(Enumerable.Range(0, stack.InstancesOf("Gateway")).Select(i => stack.StartServiceAsync("Gateway", i)));
            return stack;
        }
        catch
        {
            await stack.DisposeAsync();
            throw;
        }
    }

    public HttpClient Client(string? apiKey = null) => Client(apiKey, 0);

    /// <summary>A client of gateway instance <paramref name="gateway"/>.</summary>
    public HttpClient Client(string? apiKey, int gateway)
    {
        var client = new HttpClient { BaseAddress = UrlOf("Gateway", gateway), Timeout = TimeSpan.FromSeconds(30) };
        if (apiKey is not null) client.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue("Bearer", apiKey);
        return client;
    }

    public Task StartServiceAsync(string project) => StartServiceAsync(project, 0);

    /// <summary>Starts (or restarts, on the same port) one instance of a service and waits until it is ready.</summary>
    public async Task StartServiceAsync(string project, int instance)
    {
        var upstream = (string name) => UrlOf(name, instance % InstancesOf(name)).ToString();
        var servers = Database.Servers;
        var env = new Dictionary<string, string>
        {
            ["ASPNETCORE_URLS"] = UrlOf(project, instance).ToString().TrimEnd('/'),
            ["DOTNET_ENVIRONMENT"] = "Testing",
            ["ASPNETCORE_ENVIRONMENT"] = "Testing",
            ["ConnectionStrings__Postgres"] = Database.ConnectionString(project.ToLowerInvariant()),
            ["RabbitMq__Port"] = servers.RabbitPort.ToString(),
            ["RabbitMq__VirtualHost"] = VirtualHost.Name,
            ["RabbitMq__Username"] = TestServers.RabbitUser,
            ["RabbitMq__Password"] = TestServers.RabbitPassword,
            ["Gateway__InternalToken"] = InternalToken,
            ["Gateway__BootstrapAdminKey"] = AdminKey,
            ["Gateway__Upstreams__listings"] = upstream("Listings"),
            ["Gateway__Upstreams__bidding"] = upstream("Bidding"),
            ["Gateway__Upstreams__scheduling"] = upstream("Scheduling"),
            ["Gateway__Upstreams__billing"] = upstream("Billing"),
            ["Stripe__ApiBase"] = UrlOf("StripeFake").ToString(),
            ["Stripe__ApiKey"] = "sk_test_local_fake",
            ["Stripe__WebhookSecret"] = StripeWebhookSecret,
            ["StripeFake__WebhookUrl"] = new Uri(GatewayUrl, "/v1/webhooks/stripe").ToString(),
            ["StripeFake__WebhookSecret"] = StripeWebhookSecret,
        };
        foreach (var (k, v) in _options.Settings) env[k] = v;
        var dll = project == "StripeFake"
            ? Path.Combine(RepoPaths.Root, "infra", "stripe-fake", "bin", RepoPaths.Configuration, "net10.0", "Marketplace.StripeFake.dll")
            : RepoPaths.ServiceDll(project);
        var process = new ServiceProcess(project, dll, env, LogPath(project, instance));
        _processes[(project, instance)] = process;
        // Many processes starting at once on a small machine take their time.
        await process.WaitReadyAsync(new Uri(UrlOf(project, instance), "/health/ready"), TimeSpan.FromSeconds(90 * _options.Instances));
    }

    /// <summary>Waits until every running instance answers its readiness check (database and broker connected).</summary>
    public async Task WaitReadyAsync(TimeSpan timeout) =>
        await Task.WhenAll(_processes.Select(p => p.Value.WaitReadyAsync(new Uri(UrlOf(p.Key.Project, p.Key.Instance), "/health/ready"), timeout)));

    /// <summary>kill -9: no shutdown hooks, no flushing.</summary>
    public void Kill(string project) => Kill(project, 0);

    /// <summary>kill -9 of one instance.</summary>
    public void Kill(string project, int instance)
    {
        _processes[(project, instance)].Kill();
        _processes.Remove((project, instance));
    }

    /// <summary>The process id of a running instance (for resident memory figures).</summary>
    public int ProcessId(string project, int instance = 0) => _processes[(project, instance)].Id;

    /// <summary>Everything every instance of <paramref name="project"/> wrote.</summary>
    public string ReadLog(string project) => string.Concat(Enumerable.Range(0, InstancesOf(project)).Select(i => ReadLog(project, i)));

    /// <summary>Everything one instance wrote (across its restarts).</summary>
    public string ReadLog(string project, int instance)
    {
        var path = LogPath(project, instance);
        if (!File.Exists(path)) return "";
        using var stream = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.ReadWrite);
        return new StreamReader(stream).ReadToEnd();
    }

    private string LogPath(string project, int instance) =>
        Path.Combine(LogDirectory, project.ToLowerInvariant() + (instance == 0 ? "" : $"-{instance}") + ".log");

    public const string LogDirectoryPrefix = "marketplace-stack-";

    /// <summary>
    /// Removes the service logs of stacks started longer than <paramref name="olderThan"/> ago (under <paramref name="root"/>,
    /// the temp folder by default). Every new stack does it for a day: a failed run's logs stay to be read, and test runs
    /// no longer fill the temp folder (5 stacks of 8-11 MB each per run of the suite).
    /// </summary>
    public static void RemoveLogDirectories(TimeSpan olderThan, string? root = null)
    {
        var before = DateTime.UtcNow - olderThan;
        foreach (var dir in Directory.EnumerateDirectories(root ?? Path.GetTempPath(), LogDirectoryPrefix + "*"))
            try
            {
                if (Directory.GetLastWriteTimeUtc(dir) < before) Directory.Delete(dir, recursive: true);
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException)
            {
                // Another run's stack removing it, or not ours: left.
            }
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

    private static class ProcessKey
    {
        public static readonly IEqualityComparer<(string Project, int Instance)> Comparer =
            EqualityComparer<(string, int)>.Create((a, b) => string.Equals(a.Item1, b.Item1, StringComparison.OrdinalIgnoreCase) && a.Item2 == b.Item2,
                k => HashCode.Combine(StringComparer.OrdinalIgnoreCase.GetHashCode(k.Item1), k.Item2));
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

    private bool _closed;

    private void Write(string? line)
    {
        if (line is null) return;
        // Output of a killed process can still arrive after Kill closed the log: dropped (writing would crash the test host).
        lock (_log) if (!_closed) _log.WriteLine(line);
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

    public int Id => _process.Id;

    public void Kill()
    {
        try { if (!_process.HasExited) _process.Kill(entireProcessTree: true); _process.WaitForExit(5000); }
        catch (InvalidOperationException) { }
        lock (_log)
        {
            _closed = true;
            _log.Dispose();
        }
    }
}
