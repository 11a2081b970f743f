using Memopt.Model;
using Memopt.Runner.Plots;
using Memopt.Tensors;
using ScottPlot;

namespace Memopt.Runner.Memory;

/// <summary>
/// A memopt Chrome trace as a PNG: tracked live memory over time (ms) stacked by category, the tracked total and the
/// pool's reserved bytes as lines, the peak marked and labelled with its bytes, time, phase and op, and a ribbon above
/// the data naming the phases (forward, backward, recompute, optimizer). The first traced step includes the kernels'
/// JIT compilation and can take seconds where a later step takes milliseconds, so when the trace holds two or more
/// steps a second panel shows the last step alone.
/// </summary>
public static class TracePlot
{
    public const int DefaultWidth = 1400, DefaultHeight = 1000;

    /// <summary>Bottom to top of the stack: what lives for the whole run first, then what comes and goes with the step.</summary>
    private static readonly (MemoryCategory Category, string Hex)[] CategoryColors =
    [
        (MemoryCategory.Parameters, "#1f77b4"), (MemoryCategory.Gradients, "#ff7f0e"), (MemoryCategory.OptimizerState, "#2ca02c"),
        (MemoryCategory.Data, "#7f7f7f"), (MemoryCategory.SavedForBackward, "#d62728"), (MemoryCategory.Activations, "#9467bd"),
        (MemoryCategory.AttentionScores, "#8c564b"), (MemoryCategory.ActivationGradients, "#e377c2"), (MemoryCategory.Workspace, "#bcbd22"),
    ];
    private static readonly Color UnknownCategory = Color.FromHex("#17becf");

    /// <summary>Ribbon colors, in legend order; setup is left blank.</summary>
    private static readonly Dictionary<string, Color> PhaseColors = new()
    {
        ["forward"] = Color.FromHex("#aec7e8"), ["backward"] = Color.FromHex("#ffbb78"), ["recompute"] = Color.FromHex("#c5b0d5"),
        ["optimizer"] = Color.FromHex("#98df8a"), ["evaluation"] = Color.FromHex("#dbdb8d"),
    };

    /// <summary>Renders <paramref name="trace"/> to <paramref name="path"/> (atomically). The default title names the device and the steps.</summary>
    public static void Save(MemoryTraceFile trace, string path, string? title = null, int width = DefaultWidth, int height = DefaultHeight)
    {
        PlotFonts.EnsureRegistered();
        var tracks = CategoryTracks(trace);
        long maxBytes = trace.Samples.Max(s => s.Bytes);
        var unit = MemoryPlot.Unit(maxBytes);
        int steps = trace.StepEndsMs.Count;
        title ??= $"Memory over time{(trace.ProcessName is { } p ? $": {p}" : "")}";
        string whole = steps == 0 ? title : $"{title}\n{steps} step{(steps == 1 ? "" : "s")} traced in {trace.EndMs:F0} ms";
        var top = Panel(trace, tracks, 0, Math.Max(trace.EndMs, 1e-3), whole, unit); // a one-instant trace still gets an x range
        if (steps < 2)
        {
            AtomicFile.WriteThroughPath(path, temp => top.SavePng(temp, width, height), ".png");
            return;
        }
        double from = trace.StepEndsMs[^2], to = trace.StepEndsMs[^1];
        var bottom = Panel(trace, tracks, from, to, $"the last step alone (step {steps} of {steps}): {to - from:F1} ms — step 1 ended at {trace.StepEndsMs[0]:F0} ms (setup and kernel compilation)", unit);
        var multi = new Multiplot();
        multi.RemovePlot(multi.GetPlot(0));
        multi.AddPlot(top);
        multi.AddPlot(bottom);
        multi.Layout = new ScottPlot.MultiplotLayouts.Rows();
        AtomicFile.WriteThroughPath(path, temp => multi.SavePng(temp, width, height), ".png");
    }

    /// <summary>The trace's category tracks in stacking order (known categories first, any other counter after them).</summary>
    private static List<(string Name, Color Color)> CategoryTracks(MemoryTraceFile trace)
    {
        var names = trace.Samples.Select(s => s.Track).Where(t => t is not MemoryTraceFile.TrackedTotal and not MemoryTraceFile.PoolReserved).ToHashSet();
        var tracks = CategoryColors.Where(c => names.Remove(c.Category.Label())).Select(c => (c.Category.Label(), Color.FromHex(c.Hex))).ToList();
        tracks.AddRange(names.Order().Select(n => (n, UnknownCategory)));
        return tracks;
    }

    /// <summary>Every track's value after each counter update inside [from, to], starting from the values at <paramref name="from"/>.</summary>
    private sealed class Timeline
    {
        public readonly List<double> X = [];
        public readonly Dictionary<string, List<double>> Values = [];

        public Timeline(MemoryTraceFile trace, IEnumerable<string> tracks, double from, double to, double scale)
        {
            var state = new Dictionary<string, long>();
            foreach (var t in tracks) Values[t] = [];
            void Row(double x)
            {
                X.Add(x);
                foreach (var (t, v) in Values) v.Add(state.GetValueOrDefault(t) / scale);
            }
            foreach (var s in trace.Samples)
            {
                if (s.Ms > to) break;
                if (s.Ms > from && X.Count == 0) Row(from);
                state[s.Track] = s.Bytes;
                if (s.Ms > from) Row(s.Ms);
            }
            if (X.Count == 0) Row(from);
            Row(to); // the last values hold until the window's end
        }

        /// <summary>Step-shaped x: each value holds until the next update.</summary>
        public double[] StepX() => [.. X.SelectMany((x, i) => i == 0 ? new[] { x } : new[] { x, x })];

        public static double[] StepY(List<double> y) => [.. y.SelectMany((v, i) => i == 0 ? new[] { v } : new[] { y[i - 1], v })];
    }

    private static Plot Panel(MemoryTraceFile trace, List<(string Name, Color Color)> tracks, double from, double to, string title, (string Name, double Scale) unit)
    {
        var plot = new Plot();
        plot.Title(title);
        plot.XLabel("time since the trace started (ms)");
        plot.YLabel($"tracked live memory ({unit.Name})");
        var timeline = new Timeline(trace, tracks.Select(t => t.Name).Append(MemoryTraceFile.TrackedTotal).Append(MemoryTraceFile.PoolReserved), from, to, unit.Scale);
        double[] xs = timeline.StepX();

        var below = new double[xs.Length];
        var legend = new List<LegendItem>();
        foreach (var (name, color) in tracks)
        {
            var values = timeline.Values[name];
            if (values.All(v => v == 0)) continue; // e.g. attention_scores with flash attention: no legend entry for nothing
            double[] step = Timeline.StepY(values);
            double[] above = [.. below.Zip(step, (a, b) => a + b)];
            var fill = plot.Add.FillY(xs, below, above);
            fill.FillColor = color;
            fill.LineWidth = 0;
            below = above;
            legend.Insert(0, new LegendItem { LabelText = name, FillColor = color }); // legend top to bottom = stack top to bottom
        }

        var reservedY = timeline.Values[MemoryTraceFile.PoolReserved];
        bool hasReserved = trace.Samples.Any(s => s.Track == MemoryTraceFile.PoolReserved);
        if (hasReserved)
        {
            var reserved = plot.Add.ScatterLine(timeline.X.ToArray(), reservedY.ToArray(), Colors.DimGray);
            reserved.ConnectStyle = ConnectStyle.StepHorizontal;
            reserved.LinePattern = LinePattern.Dashed;
            reserved.LineWidth = 1.5f;
        }
        var totalY = timeline.Values[MemoryTraceFile.TrackedTotal];
        var total = plot.Add.ScatterLine(timeline.X.ToArray(), totalY.ToArray(), Colors.Black);
        total.ConnectStyle = ConnectStyle.StepHorizontal;
        total.LineWidth = 1.5f;
        legend.Insert(0, new LegendItem { LabelText = "tracked total", LineColor = Colors.Black, LineWidth = 1.5f });
        if (hasReserved) legend.Insert(0, new LegendItem { LabelText = "pool reserved", LineColor = Colors.DimGray, LineWidth = 1.5f, LinePattern = LinePattern.Dashed });

        double yMax = Math.Max(totalY.Max(), reservedY.Max());
        if (yMax <= 0) yMax = 1;
        MarkPeak(plot, trace, timeline, from, to, unit);
        var phasesShown = PhaseRibbon(plot, trace, from, to, yMax * 1.06, yMax * 1.14);
        legend.AddRange(PhaseColors.Where(p => phasesShown.Contains(p.Key)).Select(p => new LegendItem { LabelText = $"phase: {p.Key}", FillColor = p.Value }));

        plot.Axes.SetLimits(from, to, 0, yMax * 1.16);
        foreach (var item in legend) plot.Legend.ManualItems.Add(item);
        plot.ShowLegend(Edge.Right);
        plot.Legend.FontSize = 13;
        return plot;
    }

    /// <summary>The tracked total's highest value in the window (its first moment), with its bytes, time, phase and the op running then.</summary>
    private static void MarkPeak(Plot plot, MemoryTraceFile trace, Timeline timeline, double from, double to, (string Name, double Scale) unit)
    {
        var totals = timeline.Values[MemoryTraceFile.TrackedTotal];
        int i = totals.IndexOf(totals.Max());
        double x = timeline.X[i], y = totals[i];
        long bytes = (long)Math.Round(y * unit.Scale);
        var op = trace.Ops.Where(o => o.BeginMs <= x && x <= o.EndMs).MinBy(o => o.EndMs - o.BeginMs); // innermost slice
        string phase = op?.Phase ?? trace.Phases.FirstOrDefault(p => p.BeginMs <= x && x <= p.EndMs)?.Phase ?? "";
        string where = op is null ? phase : $"{phase}, {op.Name}{(op.Layer >= 0 ? $" (block {op.Layer})" : "")}";
        var marker = plot.Add.Marker(x, y, MarkerShape.FilledCircle, 11, Colors.Red);
        var text = plot.Add.Text($"peak {ByteSize.Format(bytes)} at {x:F1} ms{(where.Length > 0 ? $"\n{where}" : "")}", x, y);
        bool right = x > from + 0.6 * (to - from);
        text.LabelAlignment = right ? Alignment.LowerRight : Alignment.LowerLeft;
        text.OffsetX = right ? -8 : 8;
        text.OffsetY = -4;
        text.LabelFontSize = 14;
        text.LabelBold = true;
        text.LabelFontColor = Colors.DarkRed;
        text.LabelBackgroundColor = Colors.White.WithAlpha(0.85);
        marker.LegendText = "";
    }

    /// <summary>One box per phase slice in a band above the data, named inside when there is room; returns the phases drawn.</summary>
    private static HashSet<string> PhaseRibbon(Plot plot, MemoryTraceFile trace, double from, double to, double bottom, double top)
    {
        var shown = new HashSet<string>();
        foreach (var p in trace.Phases)
        {
            double a = Math.Max(p.BeginMs, from), b = Math.Min(p.EndMs, to);
            if (b <= a || !PhaseColors.TryGetValue(p.Phase, out var color)) continue;
            var box = plot.Add.Rectangle(a, b, bottom, top);
            box.FillColor = color;
            box.LineWidth = 0;
            shown.Add(p.Phase);
            if ((b - a) / (to - from) < 0.06) continue;
            var label = plot.Add.Text(p.Phase, (a + b) / 2, (bottom + top) / 2);
            label.LabelAlignment = Alignment.MiddleCenter;
            label.LabelFontSize = 13;
        }
        return shown;
    }
}
