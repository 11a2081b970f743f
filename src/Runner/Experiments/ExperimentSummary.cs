using System.Text.Json;
using Memopt.Model;
using Memopt.Model.Training;

namespace Memopt.Runner.Experiments;

/// <summary>
/// results/experiment_summary.json: every run of the matrix with its status and metrics, and the maximum batch per
/// technique. Rewritten atomically after every run, so an interrupted matrix keeps all it finished. Field names are
/// snake_case in the file (ResultsWriter.Json).
/// </summary>
public sealed class ExperimentSummary
{
    public const string FileName = "experiment_summary.json";
    public const int CurrentSchema = 1;

    public int Schema { get; set; } = CurrentSchema;
    public DateTimeOffset Updated { get; set; }
    public string Dataset { get; set; } = "";
    public string Preset { get; set; } = "";
    public string Device { get; set; } = "";
    public string? MemoryLimit { get; set; }
    public List<int> BatchSizes { get; set; } = [];
    public List<int> WindowSizes { get; set; } = [];
    public List<string> TrainArgs { get; set; } = [];
    public List<RunRecord> Runs { get; set; } = [];
    public List<MaxBatchRecord> MaxBatch { get; set; } = [];
    /// <summary>The memory model's largest batch for every technique of the summary, made on every invocation (analytic: no run needed).</summary>
    public List<MaxBatchPredictionRecord> MaxBatchPredictions { get; set; } = [];

    public RunRecord? Find(string technique, int batch) =>
        Runs.FirstOrDefault(r => r.Technique == technique && r.BatchSize == batch);

    public void Put(RunRecord record)
    {
        Runs.RemoveAll(r => r.Technique == record.Technique && r.BatchSize == record.BatchSize);
        Runs.Add(record);
    }

    public void Put(MaxBatchRecord record)
    {
        MaxBatch.RemoveAll(r => r.Technique == record.Technique);
        MaxBatch.Add(record);
    }

    public static string PathIn(string resultsDir) => Path.Combine(resultsDir, FileName);

    /// <summary>The summary in <paramref name="resultsDir"/>, or null when there is none.</summary>
    public static ExperimentSummary? Load(string resultsDir)
    {
        var path = PathIn(resultsDir);
        if (!File.Exists(path)) return null;
        try
        {
            var s = JsonSerializer.Deserialize<ExperimentSummary>(File.ReadAllText(path), ResultsWriter.Json)
                    ?? throw new JsonException("empty document");
            if (s.Schema != CurrentSchema) throw new JsonException($"schema {s.Schema}, expected {CurrentSchema}");
            return s;
        }
        catch (JsonException e)
        {
            throw new UserError($"{path} is not a readable experiment summary ({e.Message}); move it away to start a new one", e);
        }
    }

    public void Save(string resultsDir)
    {
        Updated = DateTimeOffset.UtcNow;
        AtomicFile.WriteAllText(PathIn(resultsDir), JsonSerializer.Serialize(this, ResultsWriter.Json));
    }
}

/// <summary>One technique at one batch size.</summary>
public sealed class RunRecord
{
    /// <summary>The run's label, e.g. bf16_flash_window64.</summary>
    public string Technique { get; set; } = "";
    public string Family { get; set; } = "";
    /// <summary>The train flags that switch the technique on.</summary>
    public List<string> Flags { get; set; } = [];
    public int? WindowSize { get; set; }
    public int BatchSize { get; set; }
    public RunStatus Status { get; set; }
    /// <summary>Why an oom or failed run ended (the child's error line); null when ok.</summary>
    public string? Message { get; set; }
    /// <summary>The child's exit code; null when it was killed (timeout).</summary>
    public int? ExitCode { get; set; }
    public double Seconds { get; set; }
    public DateTimeOffset FinishedAt { get; set; }
    /// <summary>The child's configuration arguments (its train command line less output paths): a run whose arguments changed is stale and runs again.</summary>
    public List<string> Args { get; set; } = [];
    /// <summary>Paths relative to the results directory.</summary>
    public string RunDir { get; set; } = "";
    public string Log { get; set; } = "";
    public string? MetricsFile { get; set; }
    public string? MemoryFile { get; set; }
    /// <summary>The run's metrics (status ok only).</summary>
    public RunSnapshot? Metrics { get; set; }
}

/// <summary>The fields of a run's metrics and memory files that reports and plots use.</summary>
public sealed class RunSnapshot
{
    public long Parameters { get; set; }
    public long Steps { get; set; }
    public long TokensSeen { get; set; }
    public double TrainLoss { get; set; }
    public double ValLoss { get; set; }
    public double ValPerplexity { get; set; }
    public double? OptimalValPerplexity { get; set; }
    public double StepMsMean { get; set; }
    public double StepMsMedian { get; set; }
    public double EpochSeconds { get; set; }
    public double TokensPerSecond { get; set; }
    /// <summary>Peak tracked bytes (live tensors).</summary>
    public long PeakMemoryBytes { get; set; }
    public long PeakReservedBytes { get; set; }
    public long? DriverUsedBytes { get; set; }
    public long ForwardPeakBytes { get; set; }
    public long BackwardPeakBytes { get; set; }
    public long OptimizerPeakBytes { get; set; }
    /// <summary>Live bytes per memory category at the moment of the overall peak (sums to the peak).</summary>
    public Dictionary<string, long> AtPeakPerCategory { get; set; } = [];
    /// <summary>Each category's own peak (they need not coincide).</summary>
    public Dictionary<string, long> PeakPerCategory { get; set; } = [];
}

/// <summary>The largest batch one technique trains at without running out of memory, found by real steps.</summary>
public sealed class MaxBatchRecord
{
    public string Technique { get; set; } = "";
    public string Family { get; set; } = "";
    public List<string> Flags { get; set; } = [];
    /// <summary>ok: found (between max_batch and first_oom_batch); cap: even the cap fits; none_fits: batch 1 runs out of memory; failed: a probe failed for another reason (message).</summary>
    public string Status { get; set; } = "";
    public int? MaxBatch { get; set; }
    public int? FirstOomBatch { get; set; }
    public int Cap { get; set; }
    public int Precision { get; set; }
    /// <summary>The analytic memory model's largest batch for the same budget (MaxBatchPrediction); null without --memory-limit.</summary>
    public int? PredictedMaxBatch { get; set; }
    /// <summary>What the prediction was made against, or why there is none.</summary>
    public string? PredictionBasis { get; set; }
    public string? MemoryLimit { get; set; }
    public int ProbeSteps { get; set; }
    public string? Message { get; set; }
    public List<string> Args { get; set; } = [];
    public List<ProbeRecord> Probes { get; set; } = [];
}

/// <summary>The memory model's largest batch for one technique under the summary's configuration (MaxBatchPrediction).</summary>
public sealed class MaxBatchPredictionRecord
{
    public string Technique { get; set; } = "";
    public string Family { get; set; } = "";
    /// <summary>The largest batch whose step fits (0: not even batch 1); null when there is no prediction (see Basis).</summary>
    public int? MaxBatch { get; set; }
    /// <summary>What the prediction was made against, or why there is none (e.g. no --memory-limit).</summary>
    public string Basis { get; set; } = "";
}

/// <summary>One probe of a max-batch search; probes seeded from matrix runs have Source "matrix".</summary>
public sealed class ProbeRecord
{
    public int BatchSize { get; set; }
    public RunStatus Status { get; set; }
    public string? Message { get; set; }
    public double Seconds { get; set; }
    public string Source { get; set; } = "probe";
}
