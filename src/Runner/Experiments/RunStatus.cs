namespace Memopt.Runner.Experiments;

/// <summary>How a run ended. An out-of-memory is a result (this technique does not fit at this batch), not a crash.</summary>
public enum RunStatus { Ok, Oom, Failed }

/// <summary>Reads a child's exit code and last lines into a status and a one-line reason.</summary>
public static class RunOutcome
{
    /// <summary>
    /// train exits with <see cref="Commands.ExitCodes.OutOfMemory"/> on an out-of-memory, with the
    /// OutOfDeviceMemoryException's message ("memopt: out of device memory: ..."); the text is the fallback.
    /// </summary>
    public const string OomMarker = "out of device memory";

    public static (RunStatus Status, string? Message) Classify(ChildResult r, bool wroteMetrics)
    {
        if (r.TimedOut) return (RunStatus.Failed, Reason(r) is string last ? $"timed out; last output: {last}" : "timed out");
        if (r.ExitCode == 0)
            return wroteMetrics ? (RunStatus.Ok, null) : (RunStatus.Failed, "exited 0 but wrote no metrics file");
        if (r.ExitCode == Commands.ExitCodes.OutOfMemory)
            return (RunStatus.Oom, Reason(r) ?? "out of device memory");
        // A child that died before train's own handler (an older build, an unhandled exception) still says why in text.
        string? oom = r.Tail.LastOrDefault(l => l.Contains(OomMarker, StringComparison.OrdinalIgnoreCase));
        if (oom is not null) return (RunStatus.Oom, Trim(oom));
        return (RunStatus.Failed, Reason(r) ?? $"exit code {r.ExitCode?.ToString() ?? "none"} without output");
    }

    /// <summary>The line that says why: memopt's own "memopt: ..." error line, else an unhandled exception's first line, else the last line.</summary>
    private static string? Reason(ChildResult r)
    {
        var lines = r.Tail.Where(l => !string.IsNullOrWhiteSpace(l)).ToList();
        // CommandLineParser's usage errors: "ERROR(S):" then one indented line per error, then the help text.
        int usage = lines.FindIndex(l => l.Trim() == "ERROR(S):");
        if (usage >= 0 && usage + 1 < lines.Count) return Trim(lines[usage + 1]);
        return (lines.LastOrDefault(l => l.StartsWith("memopt: ", StringComparison.Ordinal))
                ?? lines.FirstOrDefault(l => l.StartsWith("Unhandled exception", StringComparison.Ordinal))
                ?? lines.LastOrDefault()) is string s ? Trim(s) : null;
    }

    private static string Trim(string line)
    {
        line = line.Trim();
        if (line.StartsWith("memopt: ", StringComparison.Ordinal)) line = line["memopt: ".Length..];
        return line.Length <= 400 ? line : line[..400] + "…";
    }

    public static string Label(this RunStatus s) => s switch { RunStatus.Ok => "ok", RunStatus.Oom => "oom", _ => "failed" };
}
