using CommandLine;
using Memopt.Model.Training;
using Memopt.Runner;
using Memopt.Runner.Experiments;
using Memopt.Tests.Harness;

namespace Memopt.Tests.Runner;

/// <summary>
/// What the experiments tests share: the real memopt as a child (memopt.dll beside the test assembly, run by the dotnet
/// host), fake children (shell scripts that crash, run out of memory or write a template metrics file), the tiny model
/// every real child trains, and the verb parser.
/// </summary>
internal static class ExperimentsTestKit
{
    /// <summary>
    /// A model small enough that a child run (process start, data from the shared cache, kernel compilation, 2 steps)
    /// takes ~3 s on 2 cores.
    /// </summary>
    public static string TinyTrainArgs =>
        "--layers 1 --d-model 16 --heads 2 --d-ff 32 --seq-len 16 --vocab-size 300 --bpe-vocab 300 --corpus-words 30000 " +
        "--synthetic-vocab 150 --eval-batches 1";

    /// <summary>
    /// A budget (on pool-reserved bytes) that the tiny model's runs fit at batch 2 (measured: 255 KiB reserved for baseline
    /// and window, 257 KiB for checkpointing) and at batch 4 only with checkpointing (299 KiB; baseline needs ~374 KiB).
    /// If the engine's memory changes, re-measure with the metrics files' peak_reserved_bytes.
    /// </summary>
    public const string TightBudget = "320KiB";

    /// <summary>memopt.dll as the test build copied it (with memopt.runtimeconfig.json and .deps.json, which the dotnet host needs).</summary>
    public static ChildProgram RealMemopt()
    {
        string dll = typeof(Program).Assembly.Location;
        string config = Path.ChangeExtension(dll, ".runtimeconfig.json");
        Assert.True(File.Exists(config), $"{config} is missing: the test build must copy memopt's runtimeconfig beside {dll}");
        return ChildProgram.ForAssembly(dll);
    }

    /// <summary>
    /// A fake `memopt train`: a POSIX shell script that appends its arguments to calls.txt, applies
    /// <paramref name="rules"/> (shell code that sees $tech, $batch and $dir and may exit), and otherwise "succeeds" by
    /// copying a metrics and memory file written by the real ResultsWriter.
    /// </summary>
    public static (ChildProgram Program, string Calls) FakeMemopt(string dir, string rules)
    {
        Assert.SkipUnless(File.Exists("/bin/sh"), "fake children are POSIX shell scripts");
        string template = Path.Combine(dir, "template");
        ResultsWriter.Write(template, TemplateMetrics(), new { training = new { batch_size = 2 } }, new { kind = "fake" }, new { source = "fake" });
        string calls = Path.Combine(dir, "calls.txt");
        string script = Path.Combine(dir, "fake-memopt.sh");
        File.WriteAllText(script, $$"""
            echo "$*" >> '{{calls}}'
            while [ $# -gt 0 ]; do
              case "$1" in
                --results-dir) dir=$2 ;;
                --technique) tech=$2 ;;
                --batch-size) batch=$2 ;;
              esac
              shift
            done
            {{rules}}
            mkdir -p "$dir"
            cp '{{template}}/synthetic_baseline_metrics.json' "$dir/synthetic_${tech}_metrics.json"
            cp '{{template}}/synthetic_baseline_memory.json' "$dir/synthetic_${tech}_memory.json"
            echo "step 1/1 loss 1.0"
            """.Replace("\r\n", "\n"));
        return (new ChildProgram("/bin/sh", [script]), calls);
    }

    private static RunMetrics TemplateMetrics() => new()
    {
        Technique = "baseline", Dataset = "synthetic", Parameters = 1000, Steps = 1, TokensSeen = 32, StepMsMean = 10, StepMsMedian = 10,
        TimedSteps = 1, EpochSeconds = 1, TokensPerSecond = 3200, TrainLoss = 2, ValLoss = 2, FirstLossFinite = true, Evaluations = [], LossCurve = [2],
        Memory = new MemoryReport(4096, 8192, null, 3000, 4096, 2048,
            new Dictionary<string, long> { ["parameters"] = 1024, ["activations"] = 3072 },
            new Dictionary<string, long> { ["parameters"] = 1024, ["activations"] = 3072 }, 1024),
    };

    /// <summary>Parses a verb's arguments as `memopt` does (the test then runs the command with its own child program).</summary>
    public static T Parse<T>(params string[] args)
    {
        using var parser = new Parser(s => { s.HelpWriter = null; s.CaseInsensitiveEnumValues = true; });
        var parsed = parser.ParseArguments<ExperimentsOptions, MaxBatchOptions, CompareOptions>(args);
        Assert.True(parsed is Parsed<object>, $"arguments did not parse: {string.Join(' ', args)}");
        return (T)((Parsed<object>)parsed).Value;
    }

    /// <summary>Runs memopt's Main in this process with its output captured (only for input that fails before any child starts).</summary>
    public static (int Code, string Out, string Err) Main(params string[] args) => Cli.Run(args);

    public static bool IsPng(string path)
    {
        byte[] signature = [0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A];
        using var f = File.OpenRead(path);
        var head = new byte[8];
        return f.Read(head, 0, 8) == 8 && head.SequenceEqual(signature) && f.Length > 1000;
    }
}

/// <summary>One tokenized-data cache for every real child of a test class: the BPE is trained once, not per run.</summary>
public sealed class SharedDataCache : IDisposable
{
    public string Dir { get; } = Directory.CreateTempSubdirectory("memopt-exp-cache").FullName;
    public void Dispose() => Directory.Delete(Dir, recursive: true);
}
