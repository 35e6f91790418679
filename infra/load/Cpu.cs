namespace Marketplace.Load;

/// <summary>
/// CPU time over the measured window, from /proc: per process group of the marketplace (the same groups as
/// <see cref="Memory"/>: each service, PostgreSQL with its backends, RabbitMQ), this driver with its agent simulator,
/// and how busy the whole machine was (/proc/stat, every process on it, the kernel's network work included).
/// </summary>
internal static class Cpu
{
    /// <summary>Linux reports process and machine CPU in USER_HZ ticks, 100 a second on every architecture .NET runs on.</summary>
    private const double TicksPerSecond = 100;

    public sealed record Snapshot(DateTime At, Dictionary<int, long> TicksByPid, List<Memory.Group> Groups, long MachineBusy, long MachineTotal);

    /// <summary>One group's CPU in the window: seconds, and cores (seconds per second of the window).</summary>
    public sealed record Usage(string Name, double Seconds, double Cores);

    public sealed record Report(double WindowSeconds, List<Usage> Processes, double MachineBusyShare);

    public static Snapshot Take(string runDir, int pgPort, IReadOnlyCollection<int> rabbitPorts)
    {
        var groups = Memory.Processes(runDir, pgPort, rabbitPorts);
        groups.Add(new Memory.Group("load driver and agent simulator (this process)", Environment.ProcessId, [Environment.ProcessId]));
        var ticks = groups.SelectMany(g => g.Pids).Distinct().ToDictionary(p => p, Ticks);
        var (busy, total) = Machine();
        return new Snapshot(DateTime.UtcNow, ticks, groups, busy, total);
    }

    /// <summary>
    /// What each group of <paramref name="end"/> used since <paramref name="start"/>. A process that started in between
    /// counts from zero; one that exited in between (a PostgreSQL backend whose connection closed) is not counted.
    /// </summary>
    public static Report Between(Snapshot start, Snapshot end)
    {
        var seconds = (end.At - start.At).TotalSeconds;
        var usage = end.Groups.Select(g =>
        {
            var used = g.Pids.Sum(p => end.TicksByPid.GetValueOrDefault(p) - start.TicksByPid.GetValueOrDefault(p)) / TicksPerSecond;
            return new Usage(g.Name, used, used / seconds);
        }).OrderByDescending(u => u.Seconds).ToList();
        var total = end.MachineTotal - start.MachineTotal;
        return new Report(seconds, usage, total > 0 ? (double)(end.MachineBusy - start.MachineBusy) / total : 0);
    }

    /// <summary>utime + stime of a process, all its threads, in ticks (fields 14 and 15 of /proc/pid/stat).</summary>
    private static long Ticks(int pid)
    {
        try
        {
            var stat = File.ReadAllText($"/proc/{pid}/stat");
            var fields = stat[(stat.LastIndexOf(')') + 2)..].Split(' ');
            return long.Parse(fields[11]) + long.Parse(fields[12]);
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException or FormatException) { return 0; }
    }

    /// <summary>The machine's busy and total ticks over all cores: the first line of /proc/stat (idle and iowait are not busy).</summary>
    private static (long Busy, long Total) Machine()
    {
        try
        {
            var f = File.ReadLines("/proc/stat").First().Split(' ', StringSplitOptions.RemoveEmptyEntries).Skip(1).Take(8).Select(long.Parse).ToArray();
            var total = f.Sum();
            return (total - f[3] - f[4], total);
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException) { return (0, 0); }
    }
}
