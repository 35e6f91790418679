namespace Marketplace.Load;

/// <summary>Resident memory per process, from /proc: RSS, and PSS (shared pages split between sharers, so sums are honest).</summary>
internal static class Memory
{
    public sealed record Sample(string Name, int Pid, long RssKb, long PssKb);

    private static long Field(string file, string name)
    {
        try
        {
            foreach (var line in File.ReadLines(file))
                if (line.StartsWith(name + ":", StringComparison.Ordinal))
                    return long.Parse(line[(name.Length + 1)..].Trim().Split(' ')[0]);
        }
        catch (IOException) { }
        catch (UnauthorizedAccessException) { }
        return 0;
    }

    private static Sample Of(string name, int pid) =>
        new(name, pid, Field($"/proc/{pid}/status", "VmRSS"), Field($"/proc/{pid}/smaps_rollup", "Pss"));

    private static string Comm(int pid) => File.Exists($"/proc/{pid}/comm") ? File.ReadAllText($"/proc/{pid}/comm").Trim() : "";
    private static string CmdLine(int pid) => File.Exists($"/proc/{pid}/cmdline") ? File.ReadAllText($"/proc/{pid}/cmdline").Replace('\0', ' ') : "";
    private static int Parent(int pid) => int.Parse(File.ReadAllText($"/proc/{pid}/stat").Split(')')[1].Trim().Split(' ')[1]);

    private static IEnumerable<int> Pids() =>
        Directory.EnumerateDirectories("/proc").Select(Path.GetFileName).Where(n => n!.All(char.IsDigit)).Select(n => int.Parse(n!));

    /// <summary>
    /// The five services (and the Stripe stand-in) from infra/up.sh's pid files; the PostgreSQL server listening on
    /// <paramref name="pgPort"/> with all its backends; the RabbitMQ nodes (beam.smp) listening on
    /// <paramref name="rabbitPorts"/> (other people's brokers on the machine are not the marketplace's). Each group is
    /// named, keyed by its main pid, and lists every pid whose resources it sums.
    /// </summary>
    public static List<Group> Processes(string runDir, int pgPort, IReadOnlyCollection<int> rabbitPorts)
    {
        var groups = new List<Group>();
        foreach (var file in Directory.Exists(runDir) ? Directory.GetFiles(runDir, "*.pid").Order().ToArray() : [])
            if (int.TryParse(File.ReadAllText(file).Trim(), out var pid) && Directory.Exists($"/proc/{pid}"))
                groups.Add(new Group(Path.GetFileNameWithoutExtension(file), pid, [pid]));

        var all = Pids().ToList();
        foreach (var postmaster in all.Where(p => Comm(p) == "postgres" && CmdLine(p).Contains(" -D ")))
        {
            var dataDir = CmdLine(postmaster).Split(" -D ")[1].Trim().Split(' ')[0];
            var pidFile = Path.Combine(dataDir, "postmaster.pid");
            if (!File.Exists(pidFile) || File.ReadAllLines(pidFile).ElementAtOrDefault(3)?.Trim() != pgPort.ToString()) continue;
            var family = all.Where(p => p == postmaster || SafeParent(p) == postmaster).ToList();
            groups.Add(new Group($"postgresql ({family.Count} processes)", postmaster, family));
        }
        foreach (var beam in all.Where(p => Comm(p).StartsWith("beam.smp", StringComparison.Ordinal)))
        {
            // rabbitmq-server passes its node name and port to the VM in the environment, not on the command line.
            var env = Environ(beam);
            if (!int.TryParse(env.GetValueOrDefault("RABBITMQ_NODE_PORT"), out var port) || !rabbitPorts.Contains(port)) continue;
            groups.Add(new Group($"rabbitmq {env.GetValueOrDefault("RABBITMQ_NODENAME", "?")}", beam, [beam]));
        }
        return groups;
    }

    public sealed record Group(string Name, int Pid, IReadOnlyList<int> Pids);

    public static List<Sample> Take(string runDir, int pgPort, IReadOnlyCollection<int> rabbitPorts) =>
        [.. Processes(runDir, pgPort, rabbitPorts).Select(g =>
        {
            var each = g.Pids.Select(p => Of(g.Name, p)).ToList();
            return new Sample(g.Name, g.Pid, each.Sum(s => s.RssKb), each.Sum(s => s.PssKb));
        })];

    private static Dictionary<string, string> Environ(int pid)
    {
        try
        {
            return File.ReadAllText($"/proc/{pid}/environ").Split('\0', StringSplitOptions.RemoveEmptyEntries)
                .Select(v => v.Split('=', 2)).Where(kv => kv.Length == 2).GroupBy(kv => kv[0]).ToDictionary(g => g.Key, g => g.First()[1]);
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException) { return []; }
    }

    private static int SafeParent(int pid)
    {
        try { return Parent(pid); } catch (IOException) { return -1; }
    }
}
