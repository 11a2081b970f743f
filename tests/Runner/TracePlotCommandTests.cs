using Memopt.Runner.Memory;
using Memopt.Tests.Harness;

namespace Memopt.Tests.Runner;

/// <summary>`memopt trace-plot`: a trace from a real training run becomes a PNG of the requested size; bad input exits 2 with a message naming the file.</summary>
public class TracePlotCommandTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("memopt-trace-plot").FullName;
    public void Dispose() => Directory.Delete(_dir, recursive: true);

    /// <summary>Width and height from a PNG's IHDR chunk (big-endian at bytes 16 and 20), after checking the signature.</summary>
    private static (int Width, int Height) PngSize(string path)
    {
        var b = File.ReadAllBytes(path);
        Assert.True(b.Length > 24 && b[1] == 'P' && b[2] == 'N' && b[3] == 'G', $"{path} is not a PNG");
        return (b[16] << 24 | b[17] << 16 | b[18] << 8 | b[19], b[20] << 24 | b[21] << 16 | b[22] << 8 | b[23]);
    }

    [Fact]
    public void A_trace_of_a_tiny_CPU_training_run_renders_to_a_png_of_the_requested_size()
    {
        string trace = Path.Combine(_dir, "run.trace.json"), png = Path.Combine(_dir, "plots", "run.png");
        var (code, output, err) = Cli.Run(Cli.Small("train", _dir, 2,
            ["--results-dir", Path.Combine(_dir, "results"), "--eval-batches", "1", "--steps", "2", "--trace", trace, "--trace-steps", "2"]));
        Assert.True(code == 0, err + output);

        var t = MemoryTraceFile.Read(trace);
        Assert.Equal(2, t.StepEndsMs.Count);
        Assert.Superset(new HashSet<string> { "forward", "backward", "optimizer" }, t.Phases.Select(p => p.Phase).ToHashSet());
        Assert.Contains(t.Samples, s => s.Track == "saved_for_backward" && s.Bytes > 0);
        Assert.Contains(t.Ops, o => o.Name == "cross_entropy" && o.Pass == "backward");

        (code, output, err) = Cli.Run("trace-plot", trace, "--out", png, "--title", "tiny CPU run", "--width", "900", "--height", "700");
        Assert.True(code == 0, err + output);
        Assert.Contains($"wrote {png}", output);
        Assert.Equal((900, 700), PngSize(png));
        Assert.True(PlotFontsTests.DarkPixels(png, 0, 20) > 0, "no title text at the top");
        Assert.Empty(Directory.GetFiles(Path.GetDirectoryName(png)!, "*.tmp*"));

        // Without --out the PNG goes next to the trace, named like it; the default size.
        (code, output, err) = Cli.Run("trace-plot", trace);
        Assert.True(code == 0, err + output);
        Assert.Equal((TracePlot.DefaultWidth, TracePlot.DefaultHeight), PngSize(Path.Combine(_dir, "run.trace.png")));
    }

    [Fact]
    public void The_H100_trace_in_the_repository_peaks_at_the_reports_measured_peak_and_renders()
    {
        string? docs = null;
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null && docs is null; dir = dir.Parent)
            if (Directory.Exists(Path.Combine(dir.FullName, "docs", "runs"))) docs = Path.Combine(dir.FullName, "docs", "runs", "h100-memory-reports");
        if (docs is null) Assert.Skip("docs/runs is not above the test binaries");
        var t = MemoryTraceFile.Read(Path.Combine(docs, "rtx5090-b32-bf16_flash.trace.json"));
        // rtx5090-b32-bf16_flash.txt: "peak (tracked)  2,420,729,624  2,420,729,624   0.00%" (predicted, measured)
        Assert.Equal(2_420_729_624L, t.Samples.Where(s => s.Track == MemoryTraceFile.TrackedTotal).Max(s => s.Bytes));
        Assert.Equal(3, t.StepEndsMs.Count);
        Assert.Equal("memopt NVIDIA H100 80GB HBM3", t.ProcessName);
        string png = Path.Combine(_dir, "h100.png");
        TracePlot.Save(t, png, width: 800, height: 600);
        Assert.Equal((800, 600), PngSize(png));
    }

    public static TheoryData<string, string?, string> BadTraces => new()
    {
        { "missing.json", null, "missing.json: no such file" },
        { "text.json", "this is not json", "text.json: not JSON" },
        { "truncated.json", "{\"traceEvents\":[{\"name\":\"x\",\"ph\":\"C\"", "truncated.json: not JSON" },
        { "object.json", "{\"events\":[]}", "object.json: not a Chrome trace (no \"traceEvents\" array)" },
        { "slices.json", "{\"traceEvents\":[{\"name\":\"forward\",\"cat\":\"phase\",\"ph\":\"X\",\"ts\":0,\"dur\":5,\"pid\":1,\"tid\":1}]}", "slices.json: no memory counter events" },
        { "empty.json", "[]", "empty.json: no memory counter events" },
    };

    [Theory]
    [MemberData(nameof(BadTraces))]
    public void Bad_traces_exit_2_with_a_message_naming_the_file_and_the_problem(string name, string? content, string message)
    {
        string path = Path.Combine(_dir, name), png = Path.Combine(_dir, "out.png");
        if (content is not null) File.WriteAllText(path, content);
        var (code, _, err) = Cli.Run("trace-plot", path, "--out", png);
        Assert.Equal(2, code);
        Assert.Contains("memopt: trace-plot: ", err);
        Assert.Contains(message, err);
        Assert.False(File.Exists(png));
    }

    [Fact]
    public void Bad_options_exit_2_with_a_message()
    {
        string path = Path.Combine(_dir, "t.json");
        File.WriteAllText(path, "{\"traceEvents\":[{\"name\":\"tracked_total\",\"ph\":\"C\",\"ts\":1,\"pid\":1,\"tid\":0,\"args\":{\"bytes\":10}}]}");
        var (code, _, err) = Cli.Run("trace-plot", path, "--width", "10");
        Assert.Equal(2, code);
        Assert.Contains("--width and --height must be within 200..10000 pixels, got 10x", err);
        (code, _, err) = Cli.Run("trace-plot", path, "--out", path);
        Assert.Equal(2, code);
        Assert.Contains("would overwrite the trace", err);
        // One counter, no phases and no steps: still a plot.
        (code, _, err) = Cli.Run("trace-plot", path, "--out", Path.Combine(_dir, "one.png"));
        Assert.True(code == 0, err);
    }
}
