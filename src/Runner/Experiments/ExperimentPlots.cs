using Memopt.Model;
using Memopt.Runner.Plots;
using ScottPlot;

namespace Memopt.Runner.Experiments;

/// <summary>
/// The study's figures as PNGs (ScottPlot 5, rendered by SkiaSharp without a display): memory and step time against
/// batch size, the memory–speed trade-off with its Pareto front, the techniques side by side at the comparison batch,
/// the window sizes, memory savings against the baseline, and the per-category memory at the peak (stacked).
/// Every file is always written; a figure without data says so in its middle.
/// </summary>
public static class ExperimentPlots
{
    public const int Width = 1000, Height = 640;

    public static readonly string[] FileNames =
    [
        "memory_vs_batch.png", "step_time_vs_batch.png", "memory_speed_tradeoff.png", "technique_comparison.png",
        "window_sizes.png", "memory_savings.png", "memory_breakdown.png",
    ];

    /// <summary>KiB, MiB or GiB, whichever keeps the largest value of the plot between 1 and 1024 (tiny CI models to H100 runs).</summary>
    private static (double Divisor, string Name) MemoryUnit(IEnumerable<ComparisonRow> rows)
    {
        long max = rows.Where(r => r.Ok).Select(r => r.Metrics!.PeakMemoryBytes).DefaultIfEmpty(0).Max();
        return max >= 1L << 30 ? (1 << 30, "GiB") : max >= 1L << 20 ? (1 << 20, "MiB") : (1 << 10, "KiB");
    }
    private static readonly IPalette Colors = new ScottPlot.Palettes.Category10();

    public static List<string> Write(Comparison c, string dir)
    {
        Directory.CreateDirectory(dir);
        PlotFonts.EnsureRegistered();
        var unit = MemoryUnit(c.Memopt);
        var written = new List<string>
        {
            Save(PerBatch(c, "Peak memory vs batch size", $"peak tracked memory ({unit.Name})", m => m.PeakMemoryBytes / unit.Divisor), dir, FileNames[0]),
            Save(PerBatch(c, "Step time vs batch size", "median step time (ms)", m => m.StepMsMedian), dir, FileNames[1]),
            Save(TradeOff(c, unit), dir, FileNames[2]),
            SaveMulti(TechniqueBars(c, unit), dir, FileNames[3]),
            SaveMulti(WindowSizes(c, unit), dir, FileNames[4]),
            Save(Savings(c), dir, FileNames[5]),
            Save(Breakdown(c, unit), dir, FileNames[6]),
        };
        return written;
    }

    private static string Save(Plot plot, string dir, string name)
    {
        string path = Path.Combine(dir, name);
        AtomicFile.WriteThroughPath(path, temp => plot.SavePng(temp, Width, Height), ".png");
        return path;
    }

    private static string SaveMulti(Plot[] plots, string dir, string name)
    {
        string path = Path.Combine(dir, name);
        var multi = new Multiplot();
        multi.RemovePlot(multi.GetPlot(0));
        foreach (var p in plots) multi.AddPlot(p);
        multi.Layout = new ScottPlot.MultiplotLayouts.Columns();
        AtomicFile.WriteThroughPath(path, temp => multi.SavePng(temp, Width * plots.Length / 2 + Width / 2, Height), ".png");
        return path;
    }

    private static List<ComparisonRow> Ok(IEnumerable<ComparisonRow> rows) => rows.Where(r => r.Ok).ToList();

    private static void NoData(Plot plot, string why)
    {
        var text = plot.Add.Text(why, 0.5, 0.5);
        text.LabelFontSize = 18;
        text.LabelAlignment = Alignment.MiddleCenter;
        plot.Axes.SetLimits(0, 1, 0, 1);
    }

    /// <summary>One line per technique; x is log2(batch) with the batch sizes as tick labels, so 32, 64, 128 are evenly spaced.</summary>
    private static Plot PerBatch(Comparison c, string title, string yLabel, Func<RunSnapshot, double> value)
    {
        var plot = new Plot();
        plot.Title(title);
        plot.XLabel("batch size");
        plot.YLabel(yLabel);
        var rows = Ok(c.Memopt);
        if (rows.Count == 0) { NoData(plot, "no finished runs"); return plot; }
        int i = 0;
        foreach (var g in rows.GroupBy(r => r.Technique))
        {
            var points = g.OrderBy(r => r.BatchSize).ToList();
            var line = plot.Add.Scatter(points.Select(r => Math.Log2(r.BatchSize)).ToArray(), points.Select(r => value(r.Metrics!)).ToArray(), Colors.GetColor(i++));
            var oom = c.Memopt.Where(r => r.Technique == g.Key && r.Status == RunStatus.Oom).Select(r => r.BatchSize).Order().ToList();
            line.LegendText = g.Key + (oom.Count > 0 ? $" (oom at {string.Join(", ", oom)})" : "");
            line.MarkerSize = 8;
            line.LineWidth = 2;
        }
        var batches = c.Memopt.Select(r => r.BatchSize).Distinct().Order().ToArray();
        plot.Axes.Bottom.SetTicks(batches.Select(b => Math.Log2(b)).ToArray(), batches.Select(b => b.ToString()).ToArray());
        plot.ShowLegend(Alignment.UpperLeft);
        return plot;
    }

    /// <summary>
    /// Step time against peak memory at the comparison batch, one point per technique. A technique is on the Pareto front
    /// when no other is both faster and lighter; the front is drawn as a line through those points.
    /// </summary>
    private static Plot TradeOff(Comparison c, (double Divisor, string Name) unit)
    {
        var plot = new Plot();
        plot.Title($"Memory–speed trade-off at batch {c.FocusBatch}");
        plot.XLabel("median step time (ms)");
        plot.YLabel($"peak tracked memory ({unit.Name})");
        var rows = Ok(c.AtFocus);
        if (rows.Count == 0) { NoData(plot, "no finished runs"); return plot; }
        var front = ParetoFront(rows.Select(r => (r.Metrics!.StepMsMedian, r.Metrics.PeakMemoryBytes / unit.Divisor)).ToList());
        int i = 0;
        foreach (var r in rows)
        {
            double x = r.Metrics!.StepMsMedian, y = r.Metrics.PeakMemoryBytes / unit.Divisor;
            var color = Colors.GetColor(i++);
            var m = plot.Add.Marker(x, y, MarkerShape.FilledCircle, 10, color);
            bool onFront = front.Contains((x, y));
            m.LegendText = r.Technique + (onFront ? " (Pareto)" : "");
            var label = plot.Add.Text(r.Technique, x, y);
            label.LabelFontSize = 12;
            label.OffsetX = 6;
            label.OffsetY = -6;
        }
        var ordered = front.OrderBy(p => p.X).ToList();
        var line = plot.Add.Scatter(ordered.Select(p => p.X).ToArray(), ordered.Select(p => p.Y).ToArray(), Colors.GetColor(3));
        line.LinePattern = LinePattern.Dashed;
        line.MarkerShape = MarkerShape.OpenCircle;
        line.MarkerSize = 18;
        line.LegendText = "Pareto front";
        plot.ShowLegend(Edge.Right);
        plot.Axes.Margins(left: 0.08, right: 0.3, bottom: 0.1, top: 0.1); // room for the point labels
        return plot;
    }

    /// <summary>The points no other point dominates (lower or equal in both coordinates, lower in one).</summary>
    public static HashSet<(double X, double Y)> ParetoFront(IReadOnlyList<(double X, double Y)> points) =>
        points.Where(p => !points.Any(q => q.X <= p.X && q.Y <= p.Y && (q.X < p.X || q.Y < p.Y))).ToHashSet();

    private static Plot[] TechniqueBars(Comparison c, (double Divisor, string Name) unit)
    {
        var rows = Ok(c.AtFocus);
        return
        [
            Bars($"Peak memory at batch {c.FocusBatch}", unit.Name, rows, r => r.Metrics!.PeakMemoryBytes / unit.Divisor),
            Bars($"Step time at batch {c.FocusBatch}", "median ms", rows, r => r.Metrics!.StepMsMedian),
            Bars($"Validation perplexity at batch {c.FocusBatch}", "val ppl", rows, r => r.Metrics!.ValPerplexity),
        ];
    }

    private static Plot Bars(string title, string yLabel, List<ComparisonRow> rows, Func<ComparisonRow, double> value)
    {
        var plot = new Plot();
        plot.Title(title);
        plot.YLabel(yLabel);
        if (rows.Count == 0) { NoData(plot, "no finished runs"); return plot; }
        var bars = rows.Select((r, i) => new Bar { Position = i, Value = value(r), FillColor = Colors.GetColor(i), Label = value(r).ToString("G4") }).ToList();
        var plottable = plot.Add.Bars(bars);
        plottable.ValueLabelStyle.FontSize = 11;
        TechniqueTicks(plot, rows.Select(r => r.Technique).ToList());
        plot.Axes.Margins(bottom: 0);
        return plot;
    }

    private static void TechniqueTicks(Plot plot, List<string> labels)
    {
        plot.Axes.Bottom.SetTicks(Enumerable.Range(0, labels.Count).Select(i => (double)i).ToArray(), labels.ToArray());
        plot.Axes.Bottom.TickLabelStyle.Rotation = 30;
        plot.Axes.Bottom.TickLabelStyle.Alignment = Alignment.MiddleLeft;
        plot.Axes.Bottom.MinimumSize = 110;
    }

    /// <summary>
    /// Memory, step time and perplexity against the window size at the comparison batch, one line per window family;
    /// the family's run without a window (bf16_flash for bf16_flash_window, baseline for window) is drawn at x = T as "full".
    /// </summary>
    private static Plot[] WindowSizes(Comparison c, (double Divisor, string Name) unit)
    {
        (string Title, string Y, Func<RunSnapshot, double> V)[] panels =
        [
            ("Peak memory", unit.Name, m => m.PeakMemoryBytes / unit.Divisor),
            ("Step time", "median ms", m => m.StepMsMedian),
            ("Validation perplexity", "val ppl", m => m.ValPerplexity),
        ];
        var at = Ok(c.AtFocus);
        var families = new[] { (Techniques.Bf16FlashWindow, Techniques.Bf16Flash), (Techniques.Window, Techniques.Baseline) }
            .Where(f => at.Any(r => r.Family == f.Item1)).ToList();
        int full = at.Where(r => r.WindowSize is not null).Select(r => r.WindowSize!.Value).DefaultIfEmpty(0).Max() * 2;
        return panels.Select(p =>
        {
            var plot = new Plot();
            plot.Title($"{p.Title} vs window size (batch {c.FocusBatch})");
            plot.XLabel("window size (full = no window)");
            plot.YLabel(p.Y);
            if (families.Count == 0) { NoData(plot, "no window runs"); return plot; }
            int i = 0;
            var ticks = new SortedDictionary<double, string>();
            foreach (var (family, reference) in families)
            {
                var points = at.Where(r => r.Family == family).OrderBy(r => r.WindowSize).Select(r => (X: (double)r.WindowSize!.Value, Y: p.V(r.Metrics!))).ToList();
                foreach (var pt in points) ticks[pt.X] = pt.X.ToString("G");
                if (at.FirstOrDefault(r => r.Family == reference) is { } refRun)
                {
                    points.Add((full, p.V(refRun.Metrics!)));
                    ticks[full] = "full";
                }
                var line = plot.Add.Scatter(points.Select(q => q.X).ToArray(), points.Select(q => q.Y).ToArray(), Colors.GetColor(i++));
                line.LegendText = family;
                line.MarkerSize = 8;
            }
            plot.Axes.Bottom.SetTicks([.. ticks.Keys], [.. ticks.Values]);
            plot.ShowLegend(Alignment.UpperLeft);
            return plot;
        }).ToArray();
    }

    /// <summary>Memory saved against the baseline at the same batch, grouped by technique, one bar per batch size.</summary>
    private static Plot Savings(Comparison c)
    {
        var plot = new Plot();
        plot.Title("Memory savings vs baseline (same batch size)");
        plot.YLabel("peak memory reduction (%)");
        var rows = c.Memopt.Where(r => r.MemoryReductionPct is not null).ToList();
        if (rows.Count == 0) { NoData(plot, "no technique with a baseline at the same batch"); return plot; }
        var techniques = rows.Select(r => r.Technique).Distinct().ToList();
        var batches = rows.Select(r => r.BatchSize).Distinct().Order().ToList();
        double width = 0.8 / batches.Count;
        var bars = new List<Bar>();
        for (int t = 0; t < techniques.Count; t++)
            for (int b = 0; b < batches.Count; b++)
                if (rows.FirstOrDefault(r => r.Technique == techniques[t] && r.BatchSize == batches[b]) is { } r)
                    bars.Add(new Bar
                    {
                        Position = t - 0.4 + width * (b + 0.5), Value = r.MemoryReductionPct!.Value, Size = width * 0.95,
                        FillColor = Colors.GetColor(b), Label = $"{r.MemoryReductionPct:F0}%",
                    });
        plot.Add.Bars(bars);
        for (int b = 0; b < batches.Count; b++)
            plot.Legend.ManualItems.Add(new LegendItem { LabelText = $"batch {batches[b]}", FillColor = Colors.GetColor(b) });
        TechniqueTicks(plot, techniques);
        plot.Add.HorizontalLine(0, 1, Colors.GetColor(7));
        plot.ShowLegend(Alignment.UpperLeft);
        return plot;
    }

    /// <summary>Live bytes per memory category at the moment of each technique's peak, stacked, at the comparison batch.</summary>
    private static Plot Breakdown(Comparison c, (double Divisor, string Name) unit)
    {
        var plot = new Plot();
        plot.Title($"Memory at the peak by category (batch {c.FocusBatch})");
        plot.YLabel(unit.Name);
        var rows = Ok(c.AtFocus).Where(r => r.Metrics!.AtPeakPerCategory.Count > 0).ToList();
        if (rows.Count == 0) { NoData(plot, "no per-category memory data"); return plot; }
        var categories = rows.SelectMany(r => r.Metrics!.AtPeakPerCategory.Where(kv => kv.Value > 0).Select(kv => kv.Key)).Distinct().ToList();
        var bars = new List<Bar>();
        for (int t = 0; t < rows.Count; t++)
        {
            double bottom = 0;
            for (int k = 0; k < categories.Count; k++)
            {
                double v = rows[t].Metrics!.AtPeakPerCategory.GetValueOrDefault(categories[k]) / unit.Divisor;
                if (v <= 0) continue;
                bars.Add(new Bar { Position = t, ValueBase = bottom, Value = bottom + v, FillColor = Colors.GetColor(k) });
                bottom += v;
            }
        }
        plot.Add.Bars(bars);
        for (int k = 0; k < categories.Count; k++)
            plot.Legend.ManualItems.Add(new LegendItem { LabelText = categories[k], FillColor = Colors.GetColor(k) });
        TechniqueTicks(plot, rows.Select(r => r.Technique).ToList());
        plot.Axes.Margins(bottom: 0);
        plot.ShowLegend(Edge.Right);
        return plot;
    }
}
