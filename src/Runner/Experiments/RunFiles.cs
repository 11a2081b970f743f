using System.Text.Json;
using Memopt.Model.Training;

namespace Memopt.Runner.Experiments;

/// <summary>Reads what <c>memopt train</c> wrote (ResultsWriter's _metrics.json and _memory.json) into a <see cref="RunSnapshot"/>.</summary>
public static class RunFiles
{
    public static string MetricsName(string dataset, string technique) =>
        $"{ResultsWriter.Sanitize(dataset)}_{ResultsWriter.Sanitize(technique)}_metrics.json";

    public static string MemoryName(string dataset, string technique) =>
        $"{ResultsWriter.Sanitize(dataset)}_{ResultsWriter.Sanitize(technique)}_memory.json";

    /// <summary>The snapshot, or an exception naming the file when it is missing a field or is not JSON.</summary>
    public static RunSnapshot Read(string metricsPath, string? memoryPath)
    {
        try
        {
            using var metricsDoc = JsonDocument.Parse(File.ReadAllText(metricsPath));
            var m = metricsDoc.RootElement.GetProperty("metrics");
            var s = new RunSnapshot
            {
                Parameters = m.GetProperty("parameters").GetInt64(),
                Steps = m.GetProperty("steps").GetInt64(),
                TokensSeen = m.GetProperty("tokens_seen").GetInt64(),
                TrainLoss = Number(m, "train_loss"),
                ValLoss = Number(m, "val_loss"),
                ValPerplexity = Number(m, "val_perplexity"),
                OptimalValPerplexity = NullableNumber(m, "optimal_val_perplexity"),
                StepMsMean = Number(m, "step_ms_mean"),
                StepMsMedian = Number(m, "step_ms_median"),
                EpochSeconds = Number(m, "epoch_seconds"),
                TokensPerSecond = Number(m, "tokens_per_second"),
                PeakMemoryBytes = m.GetProperty("peak_memory_bytes").GetInt64(),
                PeakReservedBytes = m.GetProperty("peak_reserved_bytes").GetInt64(),
                DriverUsedBytes = m.TryGetProperty("driver_used_bytes", out var d) && d.ValueKind == JsonValueKind.Number ? d.GetInt64() : null,
            };
            if (memoryPath is not null && File.Exists(memoryPath))
            {
                using var memoryDoc = JsonDocument.Parse(File.ReadAllText(memoryPath));
                var mem = memoryDoc.RootElement.GetProperty("memory");
                s.ForwardPeakBytes = mem.GetProperty("forward_peak_bytes").GetInt64();
                s.BackwardPeakBytes = mem.GetProperty("backward_peak_bytes").GetInt64();
                s.OptimizerPeakBytes = mem.GetProperty("optimizer_peak_bytes").GetInt64();
                s.AtPeakPerCategory = Categories(mem.GetProperty("at_peak_per_category"));
                s.PeakPerCategory = Categories(mem.GetProperty("peak_per_category"));
            }
            return s;
        }
        catch (Exception e) when (e is JsonException or KeyNotFoundException or InvalidOperationException or FormatException)
        {
            throw new InvalidDataException($"{metricsPath}: not a memopt metrics file ({e.Message})", e);
        }
    }

    /// <summary>The batch size recorded in a metrics file's configuration (config.training.batch_size).</summary>
    public static int? BatchSize(string metricsPath)
    {
        using var doc = JsonDocument.Parse(File.ReadAllText(metricsPath));
        return doc.RootElement.TryGetProperty("config", out var c) && c.TryGetProperty("training", out var t) &&
               t.TryGetProperty("batch_size", out var b) && b.ValueKind == JsonValueKind.Number ? b.GetInt32() : null;
    }

    /// <summary>The command line (after the program) that produced a metrics file (config.flags), or null when the file has none.</summary>
    public static List<string>? CommandLine(string metricsPath)
    {
        using var doc = JsonDocument.Parse(File.ReadAllText(metricsPath));
        return doc.RootElement.TryGetProperty("config", out var c) && c.TryGetProperty("flags", out var f) && f.ValueKind == JsonValueKind.Array
            ? [.. f.EnumerateArray().Select(x => x.GetString() ?? "")]
            : null;
    }

    private static Dictionary<string, long> Categories(JsonElement e) =>
        e.EnumerateObject().ToDictionary(p => p.Name, p => p.Value.GetInt64());

    // ResultsWriter writes non-finite doubles as "NaN"/"Infinity" strings.
    private static double Number(JsonElement parent, string name)
    {
        var e = parent.GetProperty(name);
        return e.ValueKind == JsonValueKind.String ? double.Parse(e.GetString()!, System.Globalization.CultureInfo.InvariantCulture) : e.GetDouble();
    }

    private static double? NullableNumber(JsonElement parent, string name) =>
        parent.TryGetProperty(name, out var e) && e.ValueKind != JsonValueKind.Null ? Number(parent, name) : null;
}
