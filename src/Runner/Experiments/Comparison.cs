namespace Memopt.Runner.Experiments;

/// <summary>One line of the comparison table: a run, its metrics and how it compares with the baseline at the same batch size.</summary>
public sealed record ComparisonRow(
    string Source, string Technique, string Family, int? WindowSize, int BatchSize, RunStatus Status, string? Message,
    RunSnapshot? Metrics,
    /// <summary>The largest batch the max-batch search found with real steps (null without --max-batch).</summary>
    int? MaxBatch,
    /// <summary>The memory model's largest batch (MaxBatchPrediction; null without --memory-limit).</summary>
    int? PredictedMaxBatch,
    /// <summary>Whether the prediction is within one search step (the search's precision) of the measured answer; null unless both exist.</summary>
    bool? PredictionWithinStep,
    /// <summary>(1 − peak / baseline peak) × 100 at the same batch: positive saves memory.</summary>
    double? MemoryReductionPct,
    /// <summary>(baseline step time / step time − 1) × 100 at the same batch: positive is faster.</summary>
    double? SpeedChangePct,
    /// <summary>(val ppl / baseline val ppl − 1) × 100: positive is worse.</summary>
    double? PerplexityChangePct)
{
    public bool Ok => Status == RunStatus.Ok && Metrics is not null;
}

/// <summary>
/// The numbers of a study, from the experiment summary (and optionally PyTorch reference runs in the same metrics
/// format): rows ordered by batch then technique, and the comparison batch the analysis and bar charts use.
/// </summary>
public sealed class Comparison
{
    public required ExperimentSummary Summary { get; init; }
    public required IReadOnlyList<ComparisonRow> Rows { get; init; }
    /// <summary>The batch the per-technique analysis and the bar charts use: the one asked for, else 128 (the study's), else the largest with results.</summary>
    public required int? FocusBatch { get; init; }

    public IEnumerable<ComparisonRow> Memopt => Rows.Where(r => r.Source == "memopt");
    public IEnumerable<ComparisonRow> AtFocus => Memopt.Where(r => r.BatchSize == FocusBatch);
    public ComparisonRow? Baseline(int batch) => Memopt.FirstOrDefault(r => r.Family == Techniques.Baseline && r.BatchSize == batch && r.Ok);

    public static Comparison Build(ExperimentSummary summary, IReadOnlyList<RunRecord>? reference = null, int? focusBatch = null)
    {
        var order = Techniques.AllFamilies.ToList();
        var maxBatch = summary.MaxBatch.ToDictionary(m => m.Technique);
        var predicted = summary.MaxBatchPredictions.ToDictionary(p => p.Technique, p => p.MaxBatch);
        var runs = summary.Runs
            .OrderBy(r => r.BatchSize).ThenBy(r => order.IndexOf(r.Family) is var i && i < 0 ? int.MaxValue : i).ThenBy(r => r.WindowSize ?? 0)
            .Select(r => (Source: "memopt", Run: r))
            .Concat((reference ?? []).OrderBy(r => r.BatchSize).ThenBy(r => r.Technique).Select(r => (Source: "pytorch", Run: r)))
            .ToList();
        var baselines = summary.Runs.Where(r => r.Family == Techniques.Baseline && r.Status == RunStatus.Ok && r.Metrics is not null)
            .ToDictionary(r => r.BatchSize, r => r.Metrics!);
        var rows = runs.Select(x =>
        {
            var (source, r) = x;
            var m = r.Status == RunStatus.Ok ? r.Metrics : null;
            baselines.TryGetValue(r.BatchSize, out var b);
            bool compare = m is not null && b is not null && !(source == "memopt" && r.Family == Techniques.Baseline);
            maxBatch.TryGetValue(r.Technique, out var mb);
            int? p = source != "memopt" ? null : predicted.TryGetValue(r.Technique, out var fresh) ? fresh : mb?.PredictedMaxBatch;
            return new ComparisonRow(source, r.Technique, r.Family, r.WindowSize, r.BatchSize, r.Status, r.Message, m,
                source == "memopt" ? mb?.MaxBatch : null, p, source == "memopt" ? WithinStep(p, mb) : null,
                compare && b!.PeakMemoryBytes > 0 ? 100 * (1 - (double)m!.PeakMemoryBytes / b.PeakMemoryBytes) : null,
                compare && m!.StepMsMedian > 0 ? 100 * (b!.StepMsMedian / m.StepMsMedian - 1) : null,
                compare && b!.ValPerplexity > 0 ? 100 * (m!.ValPerplexity / b.ValPerplexity - 1) : null);
        }).ToList();

        var okBatches = rows.Where(r => r.Ok && r.Source == "memopt").Select(r => r.BatchSize).Distinct().ToList();
        int? focus = focusBatch is int f && okBatches.Contains(f) ? f
            : okBatches.Contains(128) ? 128
            : okBatches.Count > 0 ? okBatches.Max() : null;
        return new Comparison { Summary = summary, Rows = rows, FocusBatch = focus };
    }

    /// <summary>
    /// Whether a prediction is within one search step of what the search found: |predicted − found| ≤ its precision
    /// (none fitting counts as 0; when the cap fits, a prediction at or above it, less the precision, agrees). Null when
    /// either is missing or the search failed.
    /// </summary>
    public static bool? WithinStep(int? predicted, MaxBatchRecord? search) => (predicted, search) switch
    {
        (int p, { Status: MaxBatchSearch.Found, MaxBatch: int found }) => Math.Abs(p - found) <= search.Precision,
        (int p, { Status: MaxBatchSearch.NoneFits }) => p <= search.Precision,
        (int p, { Status: MaxBatchSearch.AtCap, MaxBatch: int cap }) => p >= cap - search.Precision,
        _ => null,
    };

    /// <summary>
    /// PyTorch reference runs: every *_metrics.json (with its _memory.json) under <paramref name="dir"/>, in memopt's
    /// metrics format (technique and config.training.batch_size name the run).
    /// </summary>
    public static List<RunRecord> ReadReference(string dir)
    {
        if (!Directory.Exists(dir)) throw new UserError($"--pytorch: no directory {dir}");
        var records = new List<RunRecord>();
        foreach (var metrics in Directory.EnumerateFiles(dir, "*_metrics.json", SearchOption.AllDirectories).Order())
        {
            try
            {
                using var doc = System.Text.Json.JsonDocument.Parse(File.ReadAllText(metrics));
                string technique = doc.RootElement.GetProperty("technique").GetString() ?? Path.GetFileNameWithoutExtension(metrics);
                int batch = RunFiles.BatchSize(metrics) ?? throw new InvalidDataException($"{metrics}: no config.training.batch_size");
                string memory = metrics[..^"_metrics.json".Length] + "_memory.json";
                records.Add(new RunRecord
                {
                    Technique = technique, Family = technique, BatchSize = batch, Status = RunStatus.Ok,
                    MetricsFile = metrics, MemoryFile = File.Exists(memory) ? memory : null,
                    Metrics = RunFiles.Read(metrics, File.Exists(memory) ? memory : null),
                });
            }
            catch (Exception e) when (e is InvalidDataException or System.Text.Json.JsonException or KeyNotFoundException)
            {
                throw new UserError($"--pytorch: {e.Message}", e);
            }
        }
        return records;
    }
}
