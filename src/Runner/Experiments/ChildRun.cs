using System.Diagnostics;
using System.Text;

namespace Memopt.Runner.Experiments;

/// <summary>What a finished child process left: its exit code (null when it was killed for a timeout or cancellation),
/// how long it ran, and the last lines it printed (both streams), which carry the reason of a failure.</summary>
public sealed record ChildResult(int? ExitCode, double Seconds, IReadOnlyList<string> Tail, bool TimedOut, bool Cancelled)
{
    public string TailText => string.Join('\n', Tail);
}

/// <summary>
/// Runs one child process with its stdout and stderr going, line by line and interleaved as they arrive, to a log file
/// (each line also to <paramref name="onLine"/>, e.g. for progress). On cancellation or timeout the child's whole
/// process tree is killed, so no orphan keeps holding the device.
/// </summary>
public static class ChildRun
{
    private const int TailLines = 200; // enough to hold a usage error above the help text that follows it

    public static ChildResult Run(ChildProgram program, IReadOnlyList<string> args, string logPath,
        Action<string>? onLine = null, TimeSpan? timeout = null, CancellationToken cancel = default)
    {
        Directory.CreateDirectory(Path.GetDirectoryName(Path.GetFullPath(logPath))!);
        var start = new ProcessStartInfo(program.FileName)
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            RedirectStandardInput = true,
            UseShellExecute = false,
            StandardOutputEncoding = Encoding.UTF8,
            StandardErrorEncoding = Encoding.UTF8,
        };
        foreach (var a in program.PrefixArgs) start.ArgumentList.Add(a);
        foreach (var a in args) start.ArgumentList.Add(a);

        var tail = new Queue<string>();
        var gate = new object();
        using var log = new StreamWriter(logPath, append: false, new UTF8Encoding(false)) { AutoFlush = true };
        log.WriteLine($"$ {program} {string.Join(' ', args.Select(Quote))}");
        void Line(string? text)
        {
            if (text is null) return;
            lock (gate)
            {
                log.WriteLine(text);
                tail.Enqueue(text);
                if (tail.Count > TailLines) tail.Dequeue();
            }
            onLine?.Invoke(text);
        }

        var clock = Stopwatch.StartNew();
        using var process = new Process { StartInfo = start };
        process.OutputDataReceived += (_, e) => Line(e.Data);
        process.ErrorDataReceived += (_, e) => Line(e.Data);
        try
        {
            process.Start();
        }
        catch (Exception e) when (e is System.ComponentModel.Win32Exception or InvalidOperationException)
        {
            Line($"could not start {program.FileName}: {e.Message}");
            return new ChildResult(null, 0, [.. tail], false, false);
        }
        process.StandardInput.Close();
        process.BeginOutputReadLine();
        process.BeginErrorReadLine();

        bool timedOut = false, cancelled = false;
        using (cancel.Register(() => Kill(process)))
        {
            if (timeout is TimeSpan t && !process.WaitForExit(t))
            {
                timedOut = true;
                Kill(process);
            }
            process.WaitForExit(); // also drains the redirected streams
        }
        cancelled = cancel.IsCancellationRequested;
        if (timedOut) Line($"memopt experiments: killed after {timeout!.Value.TotalSeconds:F0} s (--run-timeout)");
        lock (gate)
            return new ChildResult(timedOut || cancelled ? null : process.ExitCode, clock.Elapsed.TotalSeconds, [.. tail], timedOut, cancelled);
    }

    private static void Kill(Process p)
    {
        try { if (!p.HasExited) p.Kill(entireProcessTree: true); }
        catch (InvalidOperationException) { } // exited meanwhile
    }

    private static string Quote(string a) => a.Length > 0 && a.All(c => !char.IsWhiteSpace(c) && c is not '"' and not '\'') ? a : $"'{a}'";
}
