using CommandLine;
using Memopt.Model;

namespace Memopt.Runner.Experiments;

[Verb("compare", HelpText = "Compare the runs of `memopt experiments`: table and analysis (stdout, comparison_report.txt/.csv/.md) and plots (plots/*.png).")]
public sealed class CompareOptions
{
    [Option("results-dir", Default = "results")] public string ResultsDir { get; set; } = "results";

    [Option("batch", HelpText = "Batch size of the per-technique analysis and bar charts (default 128, else the largest with results).")]
    public int? Batch { get; set; }

    [Option("pytorch", HelpText = "A directory of PyTorch reference runs (*_metrics.json and *_memory.json in memopt's format) shown beside memopt's.")]
    public string? PyTorch { get; set; }

    [Option("no-plots", HelpText = "Only the table and the analysis.")] public bool NoPlots { get; set; }
}

/// <summary>`memopt compare`: reads results/experiment_summary.json and writes the report and the plots next to it.</summary>
public static class CompareCommand
{
    public const string ReportName = "comparison_report";

    public static int Run(CompareOptions o) => Run(o, Console.Out);

    public static int Run(CompareOptions o, TextWriter output)
    {
        var summary = ExperimentSummary.Load(o.ResultsDir)
            ?? throw new UserError($"no {ExperimentSummary.FileName} in {o.ResultsDir}: run `memopt experiments` first (or pass --results-dir)");
        var reference = o.PyTorch is null ? null : Comparison.ReadReference(o.PyTorch);
        var comparison = Comparison.Build(summary, reference, o.Batch);

        string text = ComparisonReport.Text(comparison);
        output.Write(text);
        var stem = Path.Combine(o.ResultsDir, ReportName);
        AtomicFile.WriteAllText(stem + ".txt", text);
        AtomicFile.WriteAllText(stem + ".csv", ComparisonReport.Csv(comparison));
        AtomicFile.WriteAllText(stem + ".md", ComparisonReport.Markdown(comparison));
        output.WriteLine();
        output.WriteLine($"wrote {stem}.txt, .csv, .md");
        if (!o.NoPlots)
        {
            var plots = ExperimentPlots.Write(comparison, Path.Combine(o.ResultsDir, "plots"));
            output.WriteLine($"wrote {plots.Count} plots in {Path.Combine(o.ResultsDir, "plots")}: {string.Join(", ", plots.Select(Path.GetFileName))}");
        }
        return 0;
    }
}
