using System.Globalization;

namespace Memopt.Runner.Experiments;

/// <summary>
/// Runs a max-batch search for one technique with real training steps, each probe a child <c>memopt train</c>
/// (fresh process, fresh device memory) of a few steps and one validation batch. Probe logs stay in
/// {results}/max_batch/{technique}/b{batch}.log; the probe's own result files are deleted.
/// </summary>
public sealed class MaxBatchProber(ChildProgram program, string resultsDir, IReadOnlyList<string> sharedArgs,
    IReadOnlyList<string> trainArgs, int probeSteps, TimeSpan? timeout)
{
    public MaxBatchRecord Search(Technique technique, int start, int cap, int precision, IEnumerable<ProbeOutcome> known,
        MaxBatchForecast forecast, string? memoryLimit, Action<string> note, CancellationToken cancel)
    {
        var result = MaxBatchSearch.Run(b => Probe(technique, b, note, cancel), start, cap, precision, known, hint: forecast.MaxBatch);
        return new MaxBatchRecord
        {
            Technique = technique.Label,
            Family = technique.Family,
            Flags = [.. technique.Flags],
            Status = result.Status,
            MaxBatch = result.MaxBatch,
            FirstOomBatch = result.FirstOom,
            Cap = cap,
            Precision = precision,
            PredictedMaxBatch = forecast.MaxBatch,
            PredictionBasis = forecast.Basis,
            MemoryLimit = memoryLimit,
            ProbeSteps = probeSteps,
            Message = result.Message,
            Args = ConfigArgs(technique),
            Probes = [.. result.Probes.Select(p => new ProbeRecord { BatchSize = p.BatchSize, Status = p.Status, Message = p.Message, Seconds = p.Seconds, Source = p.Source })],
        };
    }

    /// <summary>The probe's configuration (what decides its memory): a stored search with other arguments is stale.</summary>
    public List<string> ConfigArgs(Technique technique) =>
        [.. sharedArgs, .. technique.Flags, "--steps", $"{probeSteps}", .. WithoutEvalBatches(trainArgs)];

    private ProbeOutcome Probe(Technique technique, int batch, Action<string> note, CancellationToken cancel)
    {
        cancel.ThrowIfCancellationRequested();
        string dir = Path.Combine(resultsDir, "max_batch", ResultsName(technique.Label));
        string probeDir = Path.Combine(dir, $"probe_b{batch}");
        string log = Path.Combine(dir, $"b{batch}.log");
        var args = new List<string>
        {
            "train", "--technique", technique.Label, "--batch-size", batch.ToString(CultureInfo.InvariantCulture),
            "--results-dir", probeDir, "--checkpoint", Path.Combine(probeDir, "checkpoint.safetensors"),
            // One validation batch: the probe measures whether training fits, not the model's quality.
            "--eval-batches", "1",
        };
        args.AddRange(ConfigArgs(technique));
        note($"  {technique.Label}: probing batch {batch} ...");
        var r = ChildRun.Run(program, args, log, timeout: timeout, cancel: cancel);
        cancel.ThrowIfCancellationRequested();
        bool wrote = Directory.Exists(probeDir) && Directory.EnumerateFiles(probeDir, "*_metrics.json").Any();
        var (status, message) = RunOutcome.Classify(r, wrote);
        try { if (Directory.Exists(probeDir)) Directory.Delete(probeDir, recursive: true); }
        catch (IOException) { } // a leftover probe directory is harmless
        note($"  {technique.Label}: batch {batch} {status.Label()}{(status == RunStatus.Failed ? $": {message}" : "")} ({r.Seconds:F1} s)");
        return new ProbeOutcome(batch, status, message, r.Seconds);
    }

    private static IEnumerable<string> WithoutEvalBatches(IReadOnlyList<string> args)
    {
        for (int i = 0; i < args.Count; i++)
        {
            if (args[i] == "--eval-batches") { i++; continue; }
            if (args[i].StartsWith("--eval-batches=", StringComparison.Ordinal)) continue;
            yield return args[i];
        }
    }

    internal static string ResultsName(string label) => Memopt.Model.Training.ResultsWriter.Sanitize(label);
}
