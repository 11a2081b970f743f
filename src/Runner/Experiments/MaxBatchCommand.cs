using System.Globalization;
using System.Runtime.InteropServices;
using System.Text.Json;
using CommandLine;
using Memopt.Model;
using Memopt.Model.Training;

namespace Memopt.Runner.Experiments;

[Verb("max-batch", HelpText = "Find the largest batch size that trains without running out of memory (real steps, each probe its own process).")]
public sealed class MaxBatchOptions : ChildTrainOptions
{
    [Option("technique", HelpText = "A technique of the matrix (baseline, bf16, bf16_flash, checkpointing, combined, or a label like bf16_flash_window64) instead of the flags below.")]
    public string? Technique { get; set; }

    [Option("bf16")] public bool Bf16 { get; set; }
    [Option("flash-attn")] public bool FlashAttn { get; set; }
    [Option("window-size")] public int? WindowSize { get; set; }
    [Option("gradient-checkpointing")] public bool GradientCheckpointing { get; set; }

    [Option("start", Default = 1, HelpText = "First batch tried when there is no prediction (no --memory-limit); doubled until out of memory, then bisected. With a prediction the search starts there.")] public int Start { get; set; } = 1;
    [Option("cap", Default = 4096, HelpText = "Largest batch tried.")] public int Cap { get; set; } = 4096;
    [Option("precision", Default = 1, HelpText = "Stop when the largest fitting and the smallest failing batch are this close.")] public int Precision { get; set; } = 1;
    [Option("probe-steps", Default = 2, HelpText = "Training steps per probe.")] public int ProbeSteps { get; set; } = 2;
    [Option("run-timeout", HelpText = "Kill a probe after this many seconds (the search then fails).")] public int? RunTimeout { get; set; }
}

/// <summary>
/// `memopt max-batch`: the search of <see cref="MaxBatchSearch"/> with real probes (<see cref="MaxBatchProber"/>), printed
/// with the analytic model's prediction beside it, and written to {results}/max_batch/{technique}.json.
/// Exit code 0 when the search ended (found, cap, or nothing fits), 1 when a probe failed for a reason other than memory.
/// </summary>
public static class MaxBatchCommand
{
    public static int Run(MaxBatchOptions o) => Run(o, ChildProgram.Current(), Console.Out);

    public static int Run(MaxBatchOptions o, ChildProgram program, TextWriter output)
    {
        var trainArgs = o.ParsedTrainArgs();
        ModelConfig model = o.ModelConfig();
        o.MemoryLimitBytes(); // fail on a bad budget before any probe
        if (o.ProbeSteps <= 0) throw new UserError($"--probe-steps must be > 0, got {o.ProbeSteps}");
        var technique = Resolve(o, model);
        var prober = new MaxBatchProber(program, o.ResultsDir, o.SharedChildArgs(), trainArgs, o.ProbeSteps,
            o.RunTimeout is int s && s > 0 ? TimeSpan.FromSeconds(s) : null);

        using var cancel = new CancellationTokenSource();
        using var sigint = PosixSignalRegistration.Create(PosixSignal.SIGINT, c => { c.Cancel = true; cancel.Cancel(); });
        using var sigterm = PosixSignalRegistration.Create(PosixSignal.SIGTERM, c => { c.Cancel = true; cancel.Cancel(); });
        output.WriteLine($"max-batch {technique.Label} ({(technique.Flags.Count == 0 ? "no technique flags" : string.Join(' ', technique.Flags))}), " +
                         $"budget {o.MemoryLimit ?? "the device's memory"}, {o.ProbeSteps} steps per probe; child: {program}");
        var forecast = MaxBatchPrediction.Predict(o, technique);
        MaxBatchRecord record;
        try
        {
            record = prober.Search(technique, o.Start, o.Cap, o.Precision, [], forecast, o.MemoryLimit, output.WriteLine, cancel.Token);
        }
        catch (ArgumentException e) { throw new UserError(e.Message, e); }
        catch (OperationCanceledException)
        {
            output.WriteLine("max-batch: interrupted");
            return 130;
        }
        string path = Path.Combine(o.ResultsDir, "max_batch", MaxBatchProber.ResultsName(technique.Label) + ".json");
        AtomicFile.WriteAllText(path, JsonSerializer.Serialize(record, ResultsWriter.Json));
        output.WriteLine($"max batch  {Describe(record)}");
        output.WriteLine($"predicted  {forecast}");
        output.WriteLine($"wrote      {path}");
        return record.Status == MaxBatchSearch.Failed ? 1 : 0;
    }

    public static string Describe(MaxBatchRecord r) => r.Status switch
    {
        MaxBatchSearch.Found => $"{r.MaxBatch} (batch {r.FirstOomBatch} runs out of memory; {r.Probes.Count(p => p.Source == "probe")} probes)",
        MaxBatchSearch.AtCap => $"≥ {r.MaxBatch} (the cap fits; raise the cap to search further)",
        MaxBatchSearch.NoneFits => $"none: even batch {r.FirstOomBatch} runs out of memory",
        _ => $"unknown: {r.Message}" + (r.MaxBatch is int lo ? $" (batch {lo} fits)" : ""),
    };

    private static Technique Resolve(MaxBatchOptions o, ModelConfig model)
    {
        bool flags = o.Bf16 || o.FlashAttn || o.WindowSize is not null || o.GradientCheckpointing;
        if (o.Technique is null) return Techniques.FromFlags(o.Bf16, o.FlashAttn, o.WindowSize, o.GradientCheckpointing);
        if (flags) throw new UserError("give either --technique or technique flags (--bf16, --flash-attn, --window-size, --gradient-checkpointing), not both");
        // A window label names its own size (bf16_flash_window96); the other families need none.
        var digits = new string(o.Technique.Reverse().TakeWhile(char.IsAsciiDigit).Reverse().ToArray());
        int[] windows = digits.Length > 0 && int.TryParse(digits, CultureInfo.InvariantCulture, out var w) && w > 0
            ? [w] : Techniques.DefaultWindowSizes(model.SeqLen);
        try
        {
            var all = Techniques.Select(windows, [o.Technique], []);
            if (all.Count > 1)
                throw new UserError($"--technique {o.Technique} names {all.Count} runs ({string.Join(", ", all.Select(t => t.Label))}): name one");
            return all[0];
        }
        catch (ArgumentException e) { throw new UserError(e.Message, e); }
    }
}
