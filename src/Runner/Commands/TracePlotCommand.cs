using CommandLine;
using Memopt.Runner.Memory;

namespace Memopt.Runner.Commands;

[Verb("trace-plot", HelpText = "Render a Chrome trace written by --trace as a PNG: memory over time stacked by category, the peak marked, the phases along the time axis.")]
public sealed class TracePlotOptions
{
    [Value(0, MetaName = "trace", Required = true, HelpText = "The trace file (JSON, from `memopt train --trace` or `memopt memory --measure --trace`).")]
    public string Trace { get; set; } = "";

    [Option("out", HelpText = "The PNG to write (default: the trace's path with .png for .json).")]
    public string? Out { get; set; }

    [Option("title", HelpText = "The plot's title (default: \"Memory over time: \" and the device the trace was recorded on).")]
    public string? Title { get; set; }

    [Option("width", Default = TracePlot.DefaultWidth, HelpText = "Image width in pixels.")]
    public int Width { get; set; } = TracePlot.DefaultWidth;

    [Option("height", Default = TracePlot.DefaultHeight, HelpText = "Image height in pixels.")]
    public int Height { get; set; } = TracePlot.DefaultHeight;
}

/// <summary>`memopt trace-plot`: a trace's memory timeline as a picture (for the README, a report, or a quick look without Perfetto).</summary>
public static class TracePlotCommand
{
    private const int MinSide = 200, MaxSide = 10_000;

    public static int Run(TracePlotOptions o)
    {
        if (o.Width is < MinSide or > MaxSide || o.Height is < MinSide or > MaxSide)
            throw new UserError($"trace-plot: --width and --height must be within {MinSide}..{MaxSide} pixels, got {o.Width}x{o.Height}");
        string output = o.Out ?? Path.ChangeExtension(o.Trace, ".png");
        if (Path.GetFullPath(output) == Path.GetFullPath(o.Trace)) throw new UserError($"trace-plot: --out {output} would overwrite the trace");
        MemoryTraceFile trace;
        try { trace = MemoryTraceFile.Read(o.Trace); }
        catch (Exception e) when (e is InvalidDataException or FileNotFoundException or IOException or UnauthorizedAccessException)
        {
            throw new UserError($"trace-plot: {e.Message}", e);
        }
        try { TracePlot.Save(trace, output, o.Title, o.Width, o.Height); }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new UserError($"trace-plot: cannot write {output}: {e.Message}", e);
        }
        Console.WriteLine($"wrote {output} ({trace.Samples.Count:N0} counter events, {trace.StepEndsMs.Count} steps, {trace.EndMs:F1} ms)");
        return 0;
    }
}
