using Memopt.Model;
using Memopt.Runner.Plots;
using Memopt.Tensors;
using ScottPlot;

namespace Memopt.Runner.Memory;

/// <summary>
/// Memory-over-time plots (PNG, ScottPlot): tracked live bytes against time (or event number), one line per run or
/// technique, each run's peak marked and labelled. <see cref="Save"/> takes ready series (the compare report passes one
/// per technique); <see cref="FromTimeline"/> turns a tracker timeline (or the model's predicted one) into a series.
/// </summary>
public static class MemoryPlot
{
    /// <summary>One line: x (ms, or event number), y (bytes), and the label of its legend entry.</summary>
    public sealed record Series(string Label, double[] X, double[] Y);

    /// <summary>Live tracked bytes after every event of a timeline (x = the event's TimeMs: milliseconds, or the event number for a prediction).</summary>
    public static Series FromTimeline(string label, IReadOnlyList<MemoryEvent> timeline)
    {
        var x = new double[timeline.Count];
        var y = new double[timeline.Count];
        for (int i = 0; i < timeline.Count; i++)
        {
            x[i] = timeline[i].TimeMs;
            y[i] = timeline[i].LiveBytes;
        }
        return new Series(label, x, y);
    }

    /// <summary>Writes the plot to <paramref name="path"/> (atomically: a temporary PNG renamed into place).</summary>
    public static void Save(string path, string title, string xLabel, IReadOnlyList<Series> series, int width = 1200, int height = 650)
    {
        if (series.Count == 0 || series.All(s => s.Y.Length == 0)) throw new ArgumentException("memory plot: nothing to plot (empty timeline)");
        double maxBytes = series.Max(s => s.Y.Length == 0 ? 0 : s.Y.Max());
        var (unit, scale) = Unit(maxBytes);
        PlotFonts.EnsureRegistered();
        var plot = new Plot();
        plot.Title(title);
        plot.XLabel(xLabel);
        plot.YLabel($"tracked live memory ({unit})");
        var palette = new ScottPlot.Palettes.Category10();
        for (int i = 0; i < series.Count; i++)
        {
            var s = series[i];
            if (s.Y.Length == 0) continue;
            var color = palette.GetColor(i);
            var ys = s.Y.Select(v => v / scale).ToArray();
            var line = plot.Add.ScatterLine(s.X, ys);
            line.Color = color;
            line.LineWidth = 1.5f;
            line.ConnectStyle = ConnectStyle.StepHorizontal; // live bytes hold until the next event
            line.LegendText = s.Label;
            int peak = Array.IndexOf(s.Y, s.Y.Max());
            var marker = plot.Add.Marker(s.X[peak], ys[peak]);
            marker.Color = color;
            marker.Size = 10;
            var text = plot.Add.Text($"peak {ByteSize.Format((long)s.Y[peak])}", s.X[peak], ys[peak]);
            text.LabelFontColor = color;
            text.LabelFontSize = 13;
            text.LabelAlignment = Alignment.LowerLeft;
            text.OffsetY = -6;
        }
        plot.Axes.SetLimitsY(0, maxBytes / scale * 1.12);
        plot.ShowLegend(Alignment.UpperLeft);
        AtomicFile.WriteThroughPath(path, temp => plot.SavePng(temp, width, height), ".png");
    }

    /// <summary>KiB, MiB or GiB, whichever keeps <paramref name="bytes"/> between 1 and 1024.</summary>
    internal static (string Unit, double Scale) Unit(double bytes) =>
        bytes >= 1L << 30 ? ("GiB", 1L << 30) : bytes >= 1L << 20 ? ("MiB", 1L << 20) : ("KiB", 1024);
}
