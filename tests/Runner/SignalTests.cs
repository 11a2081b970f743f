using System.Diagnostics;
using System.Runtime.InteropServices;
using System.Text.Json;
using Memopt.Model.Checkpoints;

namespace Memopt.Tests.Runner;

/// <summary>A real signal to a real memopt process (the test host's own signals belong to the test platform).</summary>
public class SignalTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("memopt-signal").FullName;
    public void Dispose() => Directory.Delete(_dir, recursive: true);

    [DllImport("libc", SetLastError = true)]
    private static extern int kill(int pid, int sig);

    private const int SigInt = 2, SigTerm = 15;
    private static readonly TimeSpan Patience = TimeSpan.FromSeconds(120);

    /// <summary>Starts memopt train (many steps) through the dotnet host running this test, and waits for its first step.</summary>
    private (Process Process, Func<string> Out, Func<string> Err) StartAndWaitForFirstStep(string name)
    {
        string dotnet = Path.GetFullPath(Path.Combine(RuntimeEnvironment.GetRuntimeDirectory(), "..", "..", "..", OperatingSystem.IsWindows() ? "dotnet.exe" : "dotnet"));
        string dll = Path.Combine(AppContext.BaseDirectory, "memopt.dll");
        var info = new ProcessStartInfo(dotnet)
        {
            RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false,
        };
        foreach (var a in new[]
        {
            dll, "train", "--device", "cpu", "--layers", "1", "--d-model", "16", "--heads", "2", "--d-ff", "32", "--seq-len", "16",
            "--vocab-size", "300", "--bpe-vocab", "300", "--corpus-words", "30000", "--synthetic-vocab", "150", "--batch-size", "32",
            "--steps", "100000", "--eval-batches", "1", "--cache-dir", Path.Combine(_dir, "cache"), "--results-dir", Path.Combine(_dir, name),
        }) info.ArgumentList.Add(a);
        var output = new System.Text.StringBuilder();
        var errors = new System.Text.StringBuilder();
        using var firstStep = new ManualResetEventSlim();
        var p = new Process { StartInfo = info };
        p.OutputDataReceived += (_, e) => { lock (output) output.AppendLine(e.Data); if (e.Data?.StartsWith("step 1/", StringComparison.Ordinal) == true) firstStep.Set(); };
        p.ErrorDataReceived += (_, e) => { lock (errors) errors.AppendLine(e.Data); };
        p.Start();
        p.BeginOutputReadLine();
        p.BeginErrorReadLine();
        string Out() { lock (output) return output.ToString(); }
        string Err() { lock (errors) return errors.ToString(); }
        var deadline = DateTime.UtcNow + Patience;
        while (!firstStep.Wait(100) && !p.HasExited && DateTime.UtcNow < deadline) { }
        Assert.True(firstStep.IsSet, $"memopt did not report its first step (exited: {p.HasExited})\n{Out()}\n{Err()}");
        return (p, Out, Err);
    }

    [Fact]
    public void Sigterm_finishes_the_step_writes_a_checkpoint_and_partial_metrics_and_exits_143_saying_how_to_resume()
    {
        if (OperatingSystem.IsWindows()) Assert.Skip("POSIX signals");
        var (p, output, errors) = StartAndWaitForFirstStep("term");
        using (p)
        {
            Assert.Equal(0, kill(p.Id, SigTerm));
            Assert.True(p.WaitForExit(Patience), "memopt did not stop after SIGTERM");
            p.WaitForExit();   // drain the output
            string err = errors();
            Assert.True(p.ExitCode == 143, $"exit {p.ExitCode}\n{output()}\n{err}");
            Assert.Contains("memopt: SIGTERM received: finishing the current step", err);
            Assert.Contains("memopt: interrupted by SIGTERM after step", err);
            Assert.Contains("resume with:\n  memopt train ", err.ReplaceLineEndings("\n"));
            var checkpoint = TrainingCheckpoint.Latest(Path.Combine(_dir, "term", "checkpoints", "synthetic_baseline"));
            Assert.Contains($"--resume {checkpoint.Path}", err);
            var metrics = JsonDocument.Parse(File.ReadAllText(Path.Combine(_dir, "term", "synthetic_baseline_metrics.json"))).RootElement;
            Assert.True(metrics.GetProperty("partial").GetBoolean());
            Assert.Equal(checkpoint.Step, metrics.GetProperty("metrics").GetProperty("steps").GetInt64());
        }
    }

    [Fact]
    public void A_second_sigint_exits_at_once_with_130()
    {
        if (OperatingSystem.IsWindows()) Assert.Skip("POSIX signals");
        var (p, output, errors) = StartAndWaitForFirstStep("int");
        using (p)
        {
            Assert.Equal(0, kill(p.Id, SigInt));
            Thread.Sleep(10);   // two deliveries (identical pending signals would merge into one), well inside a step
            Assert.Equal(0, kill(p.Id, SigInt));
            Assert.True(p.WaitForExit(Patience), "memopt did not stop after two SIGINTs");
            p.WaitForExit();
            Assert.True(p.ExitCode == 130, $"exit {p.ExitCode}\n{output()}\n{errors()}");
            Assert.Contains("memopt: SIGINT received", errors());
            Assert.Contains("memopt: second signal: exiting now", errors());
        }
    }
}
