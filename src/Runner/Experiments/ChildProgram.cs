using System.Reflection;
using System.Runtime.InteropServices;

namespace Memopt.Runner.Experiments;

/// <summary>
/// How to start memopt again as a child process. Every experiment run and max-batch probe is its own process, so the
/// device memory (pool, CUDA context) is fully released between runs and one run's pool cannot inflate the next one's peak.
/// </summary>
/// <param name="FileName">The executable: the memopt apphost, or the dotnet host when memopt runs as <c>dotnet memopt.dll</c>.</param>
/// <param name="PrefixArgs">Arguments before the verb: the path of memopt.dll for the dotnet host, else none.</param>
public sealed record ChildProgram(string FileName, IReadOnlyList<string> PrefixArgs)
{
    /// <summary>
    /// The program running now: its apphost (<c>memopt</c>, also what <c>dotnet run</c> starts), or
    /// <c>dotnet memopt.dll</c> when the process is the dotnet host. A single-file publish has no assembly path and
    /// is its own executable, which the first case covers.
    /// </summary>
    public static ChildProgram Current()
    {
        string process = Environment.ProcessPath ?? throw new InvalidOperationException("cannot tell which executable is running");
        string? entry = Assembly.GetEntryAssembly()?.Location;
        return IsDotnetHost(process) && !string.IsNullOrEmpty(entry)
            ? new ChildProgram(process, [entry])
            : new ChildProgram(process, []);
    }

    /// <summary>memopt.dll (or any framework-dependent .dll) run by the dotnet host: what tests use, whose own entry assembly is the test host.</summary>
    public static ChildProgram ForAssembly(string dllPath) => new(DotnetHost(), [Path.GetFullPath(dllPath)]);

    /// <summary>
    /// The dotnet host: this process when it is one; else DOTNET_HOST_PATH (set by the SDK for its children); else the
    /// installation that runs this process (the runtime lives in {root}/shared/Microsoft.NETCore.App/{version}/); else PATH.
    /// </summary>
    public static string DotnetHost()
    {
        string exe = RuntimeInformation.IsOSPlatform(OSPlatform.Windows) ? "dotnet.exe" : "dotnet";
        if (Environment.ProcessPath is string p && IsDotnetHost(p)) return p;
        if (Environment.GetEnvironmentVariable("DOTNET_HOST_PATH") is string hostPath && File.Exists(hostPath)) return hostPath;
        string runtimeDir = RuntimeEnvironment.GetRuntimeDirectory();
        var root = Directory.GetParent(Path.TrimEndingDirectorySeparator(runtimeDir))?.Parent?.Parent;
        if (root is not null && File.Exists(Path.Combine(root.FullName, exe))) return Path.Combine(root.FullName, exe);
        return exe;
    }

    private static bool IsDotnetHost(string path) =>
        Path.GetFileNameWithoutExtension(path).Equals("dotnet", StringComparison.OrdinalIgnoreCase);

    public override string ToString() => string.Join(' ', [FileName, .. PrefixArgs]);
}
