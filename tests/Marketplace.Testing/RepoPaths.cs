namespace Marketplace.Testing;

public static class RepoPaths
{
    /// <summary>The checkout's root: the folder holding Marketplace.sln above the test assembly.</summary>
    public static string Root { get; } = FindRoot();

    /// <summary>Debug or Release, as the test assembly itself was built.</summary>
    public static string Configuration { get; } =
        AppContext.BaseDirectory.Contains($"{Path.DirectorySeparatorChar}Release{Path.DirectorySeparatorChar}") ? "Release" : "Debug";

    private static string FindRoot()
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
            if (File.Exists(Path.Combine(dir.FullName, "Marketplace.sln"))) return dir.FullName;
        throw new InvalidOperationException("Marketplace.sln not found above " + AppContext.BaseDirectory);
    }

    public static string ServiceDll(string project) =>
        Path.Combine(Root, "services", project, "bin", Configuration, "net10.0", $"Marketplace.{project}.dll");
}
