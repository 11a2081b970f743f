using System.Globalization;
using System.Text;
using Memopt.Tensors;

namespace Memopt.Runner.Experiments;

/// <summary>
/// Renders a <see cref="Comparison"/>: the table (aligned text, CSV, Markdown) and the analysis the study wrote by hand,
/// derived from the numbers: best technique per metric, change against the baseline, where the memory goes at the peak.
/// </summary>
public static class ComparisonReport
{
    private static readonly CultureInfo Inv = CultureInfo.InvariantCulture;

    public static readonly string[] Columns =
    [
        "source", "technique", "batch", "status", "val ppl", "epoch s", "step ms", "peak memory", "max batch predicted",
        "max batch measured", "within a step", "parameters", "memory reduction %", "speed change %",
    ];

    private static string[] Cells(ComparisonRow r)
    {
        var m = r.Metrics;
        return
        [
            r.Source, r.Technique, r.BatchSize.ToString(Inv), r.Status.Label(),
            m is null ? "—" : m.ValPerplexity.ToString("F2", Inv),
            m is null ? "—" : m.EpochSeconds.ToString("F1", Inv),
            m is null ? "—" : m.StepMsMedian.ToString("F1", Inv),
            m is null ? "—" : ByteSize.Format(m.PeakMemoryBytes),
            r.PredictedMaxBatch?.ToString(Inv) ?? "—", r.MaxBatch?.ToString(Inv) ?? "—",
            r.PredictionWithinStep switch { true => "yes", false => "no", null => "—" },
            m is null ? "—" : m.Parameters.ToString("N0", Inv),
            Signed(r.MemoryReductionPct), Signed(r.SpeedChangePct),
        ];
    }

    private const string MaxBatchLegend =
        "max batch predicted = the analytic memory model's largest batch under the budget; measured = the search with real steps (--max-batch); " +
        "within a step = they differ by at most the search's precision.";

    private static string Signed(double? v) => v is double d ? d.ToString("+0.0;-0.0;0.0", Inv) : "—";

    public static string Text(Comparison c)
    {
        var sb = new StringBuilder();
        sb.AppendLine(Header(c));
        sb.AppendLine("memory reduction % = (1 - peak / baseline peak) x 100 and speed change % = (baseline step / step - 1) x 100, " +
                      "both against the baseline at the same batch size (positive = less memory, faster). Peak = tracked bytes of live tensors; step = median.");
        sb.AppendLine(MaxBatchLegend);
        sb.AppendLine();
        var rows = c.Rows.Select(Cells).ToList();
        var widths = Columns.Select((h, i) => Math.Max(h.Length, rows.Count == 0 ? 0 : rows.Max(r => r[i].Length))).ToArray();
        string Line(string[] cells) => string.Join("  ", cells.Select((x, i) => i <= 1 || i == 3 ? x.PadRight(widths[i]) : x.PadLeft(widths[i]))).TrimEnd();
        sb.AppendLine(Line(Columns));
        sb.AppendLine(string.Join("  ", widths.Select(w => new string('-', w))));
        foreach (var r in rows) sb.AppendLine(Line(r));
        sb.AppendLine();
        sb.AppendLine("Analysis");
        foreach (var line in Analysis(c)) sb.AppendLine(line.StartsWith("  ", StringComparison.Ordinal) ? line : "- " + line);
        return sb.ToString();
    }

    public static string Csv(Comparison c)
    {
        string[] header =
        [
            "source", "technique", "family", "window_size", "batch_size", "status", "message", "val_perplexity", "val_loss",
            "epoch_seconds", "step_ms_median", "step_ms_mean", "tokens_per_second", "peak_memory_bytes", "peak_reserved_bytes",
            "driver_used_bytes", "max_batch", "predicted_max_batch", "prediction_within_step", "parameters", "memory_reduction_pct", "speed_change_pct",
            "perplexity_change_pct",
        ];
        var sb = new StringBuilder();
        sb.AppendLine(string.Join(',', header));
        foreach (var r in c.Rows)
        {
            var m = r.Metrics;
            string?[] cells =
            [
                r.Source, r.Technique, r.Family, r.WindowSize?.ToString(Inv), r.BatchSize.ToString(Inv), r.Status.Label(), r.Message,
                m?.ValPerplexity.ToString("R", Inv), m?.ValLoss.ToString("R", Inv), m?.EpochSeconds.ToString("R", Inv),
                m?.StepMsMedian.ToString("R", Inv), m?.StepMsMean.ToString("R", Inv), m?.TokensPerSecond.ToString("R", Inv),
                m?.PeakMemoryBytes.ToString(Inv), m?.PeakReservedBytes.ToString(Inv), m?.DriverUsedBytes?.ToString(Inv),
                r.MaxBatch?.ToString(Inv), r.PredictedMaxBatch?.ToString(Inv), r.PredictionWithinStep?.ToString().ToLowerInvariant(), m?.Parameters.ToString(Inv),
                r.MemoryReductionPct?.ToString("F2", Inv), r.SpeedChangePct?.ToString("F2", Inv), r.PerplexityChangePct?.ToString("F2", Inv),
            ];
            sb.AppendLine(string.Join(',', cells.Select(CsvCell)));
        }
        return sb.ToString();
    }

    private static string CsvCell(string? s) =>
        s is null ? "" : s.IndexOfAny([',', '"', '\n', '\r']) >= 0 ? $"\"{s.Replace("\"", "\"\"")}\"" : s;

    public static string Markdown(Comparison c)
    {
        var sb = new StringBuilder();
        sb.AppendLine("# Comparison");
        sb.AppendLine();
        sb.AppendLine(Header(c));
        sb.AppendLine();
        sb.AppendLine("| " + string.Join(" | ", Columns) + " |");
        sb.AppendLine("|" + string.Join("|", Columns.Select((_, i) => i <= 1 || i == 3 ? "---" : "---:")) + "|");
        foreach (var r in c.Rows) sb.AppendLine("| " + string.Join(" | ", Cells(r).Select(x => x.Replace("|", "\\|"))) + " |");
        sb.AppendLine();
        sb.AppendLine("Memory reduction and speed change are against the baseline at the same batch size (positive = less memory, faster).");
        sb.AppendLine(MaxBatchLegend);
        sb.AppendLine();
        sb.AppendLine("## Analysis");
        sb.AppendLine();
        foreach (var line in Analysis(c)) sb.AppendLine(line.StartsWith("  ", StringComparison.Ordinal) ? "  - " + line.Trim() : "- " + line);
        return sb.ToString();
    }

    private static string Header(Comparison c)
    {
        var s = c.Summary;
        return $"Comparison: dataset {s.Dataset}, preset {s.Preset}, device {s.Device}, budget {s.MemoryLimit ?? "device memory"}" +
               (s.TrainArgs.Count > 0 ? $", train args {string.Join(' ', s.TrainArgs)}" : "") + $" (summary updated {s.Updated:yyyy-MM-dd HH:mm} UTC)";
    }

    /// <summary>The derived findings, one per line; lines starting with two spaces belong to the line above.</summary>
    public static List<string> Analysis(Comparison c)
    {
        var lines = new List<string>();
        if (c.FocusBatch is not int batch)
        {
            lines.Add("no run finished; nothing to compare yet.");
            return lines;
        }
        var at = c.AtFocus.Where(r => r.Ok).ToList();
        var baseline = c.Baseline(batch);
        string Vs(double v, double b) => b == 0 ? "" : $" ({(v / b - 1) * 100:+0.0;-0.0;0.0}% vs baseline {b.ToString("G4", Inv)})";

        lines.Add($"At batch {batch} ({at.Count} technique{(at.Count == 1 ? "" : "s")} finished):");
        if (at.MinBy(r => r.Metrics!.PeakMemoryBytes) is { } mem)
            lines.Add($"  lowest peak memory: {mem.Technique}, {ByteSize.Format(mem.Metrics!.PeakMemoryBytes)}" +
                      (baseline is null || mem == baseline ? "" : $" ({Reduction(mem.MemoryReductionPct)} than baseline {ByteSize.Format(baseline.Metrics!.PeakMemoryBytes)})"));
        if (at.MinBy(r => r.Metrics!.StepMsMedian) is { } fast)
            lines.Add($"  fastest step: {fast.Technique}, {fast.Metrics!.StepMsMedian:F1} ms" +
                      (baseline is null || fast == baseline ? "" : Vs(fast.Metrics.StepMsMedian, baseline.Metrics!.StepMsMedian).Replace("vs baseline", "time vs baseline")));
        if (at.MinBy(r => r.Metrics!.ValPerplexity) is { } ppl)
            lines.Add($"  lowest validation perplexity: {ppl.Technique}, {ppl.Metrics!.ValPerplexity:F2}" +
                      (baseline is null || ppl == baseline ? "" : Vs(ppl.Metrics.ValPerplexity, baseline.Metrics!.ValPerplexity)));
        if (at.MaxBy(r => r.Metrics!.TokensPerSecond) is { } tput)
            lines.Add($"  highest throughput: {tput.Technique}, {tput.Metrics!.TokensPerSecond.ToString("N0", Inv)} tokens/s");
        var withMax = c.Summary.MaxBatch.Where(m => m.MaxBatch is not null).ToList();
        if (withMax.MaxBy(m => m.MaxBatch) is { } big)
        {
            var baseMax = withMax.FirstOrDefault(m => m.Family == Techniques.Baseline)?.MaxBatch;
            lines.Add($"Largest batch that fits{(c.Summary.MemoryLimit is string l ? $" in {l}" : "")}: {big.Technique}, {big.MaxBatch}" +
                      (baseMax is int bm && bm > 0 ? $" ({(double)big.MaxBatch!.Value / bm:F2}x the baseline's {bm})" : ""));
        }

        lines.AddRange(PredictionLines(c));

        if (baseline is not null)
        {
            lines.Add($"Against the baseline at batch {batch}:");
            foreach (var r in at.Where(r => r != baseline))
                lines.Add($"  {r.Technique}: memory {Reduction(r.MemoryReductionPct)}, speed {Change(r.SpeedChangePct, "faster", "slower")}, " +
                          $"val perplexity {Change(r.PerplexityChangePct, "higher", "lower")}");
        }
        else lines.Add($"No baseline result at batch {batch}: changes against the baseline are not available there.");

        lines.Add($"Where the memory goes at the peak (batch {batch}; live bytes per category at the moment of the overall peak):");
        foreach (var r in at.Where(r => r.Metrics!.AtPeakPerCategory.Count > 0))
        {
            long total = Math.Max(1, r.Metrics!.AtPeakPerCategory.Values.Sum());
            var top = r.Metrics.AtPeakPerCategory.Where(kv => kv.Value > 0).OrderByDescending(kv => kv.Value).Take(4)
                .Select(kv => $"{kv.Key} {100.0 * kv.Value / total:F0}%");
            lines.Add($"  {r.Technique}: {ByteSize.Format(r.Metrics.PeakMemoryBytes)} = {string.Join(", ", top)}");
        }

        var oom = c.Memopt.Where(r => r.Status == RunStatus.Oom).ToList();
        if (oom.Count > 0) lines.Add("Out of memory: " + string.Join(", ", oom.Select(r => $"{r.Technique} b{r.BatchSize}")));
        var failed = c.Memopt.Where(r => r.Status == RunStatus.Failed).ToList();
        if (failed.Count > 0)
        {
            lines.Add("Failed (not results; re-run `memopt experiments` to retry):");
            foreach (var r in failed) lines.Add($"  {r.Technique} b{r.BatchSize}: {r.Message}");
        }
        var reference = c.Rows.Where(r => r.Source == "pytorch" && r.Ok).ToList();
        if (reference.Count > 0)
        {
            lines.Add("PyTorch reference runs against memopt's baseline at the same batch:");
            foreach (var r in reference)
                lines.Add($"  {r.Technique} b{r.BatchSize}: peak {ByteSize.Format(r.Metrics!.PeakMemoryBytes)} (memory {Reduction(r.MemoryReductionPct)}), " +
                          $"step {r.Metrics.StepMsMedian:F1} ms (speed {Change(r.SpeedChangePct, "faster", "slower")})");
        }
        return lines;
    }

    /// <summary>The memory model's largest batch per technique, and how many searches it agreed with (within a step).</summary>
    private static IEnumerable<string> PredictionLines(Comparison c)
    {
        var predictions = c.Summary.MaxBatchPredictions;
        if (predictions.Count == 0) yield break;
        if (predictions.FirstOrDefault(p => p.MaxBatch is not null) is not { } any)
        {
            yield return $"No max-batch prediction: {predictions[0].Basis}.";
            yield break;
        }
        yield return $"Predicted largest batch (memory model; {any.Basis}): " +
                     string.Join(", ", predictions.Select(p => $"{p.Technique} {p.MaxBatch?.ToString(Inv) ?? "n/a"}"));
        var checkedOnes = predictions.Select(p => Comparison.WithinStep(p.MaxBatch, c.Summary.MaxBatch.FirstOrDefault(m => m.Technique == p.Technique)))
            .Where(w => w is not null).ToList();
        if (checkedOnes.Count > 0)
            yield return $"  within one search step of the measured largest batch for {checkedOnes.Count(w => w == true)} of {checkedOnes.Count} searched techniques";
    }

    private static string Reduction(double? pct) => pct switch
    {
        null => "n/a",
        >= 0 => $"{pct:F1}% less",
        _ => $"{-pct:F1}% more",
    };

    private static string Change(double? pct, string up, string down) => pct switch
    {
        null => "n/a",
        >= 0 => $"{pct:F1}% {up}",
        _ => $"{-pct:F1}% {down}",
    };
}
