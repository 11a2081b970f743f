using System.Text.Json;
using System.Text.Json.Serialization;
using Memopt.Model.Checkpoints;

namespace Memopt.Model.Training;

/// <summary>
/// Writes results/{dataset}_{technique}_metrics.json and _memory.json atomically (temporary file + rename: a reader
/// sees the previous file or the complete new one). The metrics file carries the full configuration and flags, so a
/// result can be traced to exactly what produced it, and its status: "completed", or "interrupted" with partial true
/// when the run stopped early (its figures then cover the completed steps; val_loss is the last evaluation, if any).
/// </summary>
public static class ResultsWriter
{
    public static readonly JsonSerializerOptions Json = new()
    {
        WriteIndented = true,
        PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower,
        DictionaryKeyPolicy = null,
        NumberHandling = JsonNumberHandling.AllowNamedFloatingPointLiterals,
        Converters = { new JsonStringEnumConverter(JsonNamingPolicy.SnakeCaseLower) },
    };

    public static (string Metrics, string Memory) Write(string resultsDir, RunMetrics metrics, object config, object device, object data)
    {
        string stem = Path.Combine(resultsDir, $"{Sanitize(metrics.Dataset)}_{Sanitize(metrics.Technique)}");
        var metricsPath = stem + "_metrics.json";
        var memoryPath = stem + "_memory.json";
        var doc = new
        {
            technique = metrics.Technique,
            dataset = metrics.Dataset,
            status = metrics.Status,
            partial = metrics.Partial,
            config,
            device,
            data,
            metrics = new
            {
                parameters = metrics.Parameters,
                steps = metrics.Steps,
                total_steps = metrics.TotalSteps,
                skipped_steps = metrics.SkippedSteps,
                resumed_at_steps = metrics.ResumedAt,
                tokens_seen = metrics.TokensSeen,
                step_ms_mean = metrics.StepMsMean,
                step_ms_median = metrics.StepMsMedian,
                timed_steps = metrics.TimedSteps,
                epoch_seconds = metrics.EpochSeconds,
                tokens_per_second = metrics.TokensPerSecond,
                train_loss = metrics.TrainLoss,
                train_perplexity = metrics.TrainPerplexity,
                val_loss = metrics.ValLoss,
                val_perplexity = metrics.ValPerplexity,
                optimal_val_loss = metrics.OptimalValLoss,
                optimal_val_perplexity = metrics.OptimalValPerplexity,
                bigram_baseline_val_loss = metrics.BigramBaselineValLoss,
                peak_memory_bytes = metrics.Memory.PeakBytes,
                peak_reserved_bytes = metrics.Memory.PeakReservedBytes,
                driver_used_bytes = metrics.Memory.DriverUsedBytes,
            },
            evaluations = metrics.Evaluations,
            loss_curve = metrics.LossCurve,
            checkpoint = metrics.Checkpoint,
        };
        AtomicFile.WriteAllText(metricsPath, JsonSerializer.Serialize(doc, Json));
        AtomicFile.WriteAllText(memoryPath, JsonSerializer.Serialize(new { technique = metrics.Technique, dataset = metrics.Dataset, status = metrics.Status, partial = metrics.Partial, memory = metrics.Memory }, Json));
        return (metricsPath, memoryPath);
    }

    public static string Sanitize(string s) => string.Concat(s.Select(ch => char.IsLetterOrDigit(ch) || ch is '-' or '.' ? ch : '_'));
}
