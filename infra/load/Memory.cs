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
    /// <paramref name="pgPort"/> with all its backends summed; every RabbitMQ node (beam.smp) on the machine.
    /// </summary>
    public static List<Sample> Take(string runDir, int pgPort)
    {
        var samples = new List<Sample>();
        foreach (var file in Directory.Exists(runDir) ? Directory.GetFiles(runDir, "*.pid").Order().ToArray() : [])
            if (int.TryParse(File.ReadAllText(file).Trim(), out var pid) && Directory.Exists($"/proc/{pid}"))
                samples.Add(Of(Path.GetFileNameWithoutExtension(file), pid));

        var all = Pids().ToList();
        foreach (var postmaster in all.Where(p => Comm(p) == "postgres" && CmdLine(p).Contains(" -D ")))
        {
            var dataDir = CmdLine(postmaster).Split(" -D ")[1].Trim().Split(' ')[0];
            var pidFile = Path.Combine(dataDir, "postmaster.pid");
            if (!File.Exists(pidFile) || File.ReadAllLines(pidFile).ElementAtOrDefault(3)?.Trim() != pgPort.ToString()) continue;
            var family = all.Where(p => p == postmaster || SafeParent(p) == postmaster).Select(p => Of("postgres", p)).ToList();
            samples.Add(new Sample($"postgresql ({family.Count} processes)", postmaster, family.Sum(s => s.RssKb), family.Sum(s => s.PssKb)));
        }
        foreach (var beam in all.Where(p => Comm(p).StartsWith("beam.smp", StringComparison.Ordinal)))
        {
            var node = CmdLine(beam).Split([" -sname ", " -name "], StringSplitOptions.None).ElementAtOrDefault(1)?.Split(' ')[0] ?? "?";
            samples.Add(Of(node == "?" ? "rabbitmq (beam.smp)" : $"rabbitmq {node}", beam));
        }
        return samples;
    }

    private static int SafeParent(int pid)
    {
        try { return Parent(pid); } catch (IOException) { return -1; }
    }
}
