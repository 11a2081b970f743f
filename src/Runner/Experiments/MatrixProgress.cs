using System.Diagnostics;
using System.Text.RegularExpressions;
using Spectre.Console;

namespace Memopt.Runner.Experiments;

/// <summary>Progress of a sequence of child runs: which run, how far it is (from the child's step lines), and an ETA for the whole.</summary>
public interface IMatrixProgress
{
    /// <summary>Run <paramref name="index"/> (0-based) of the total starts.</summary>
    void Starting(int index, string what);
    /// <summary>A line the running child printed; "step i/n" lines move the bar within the run.</summary>
    void ChildLine(string line);
    /// <summary>The run ended; <paramref name="line"/> says how.</summary>
    void Finished(string line);
    /// <summary>A message that is not about one run.</summary>
    void Note(string line);
}

/// <summary>
/// A live Spectre.Console bar with remaining time when the console is interactive (as train does), else one plain line
/// per run with its own ETA (mean time of the runs so far × runs left), which reads well in logs and CI.
/// </summary>
public static partial class MatrixProgress
{
    [GeneratedRegex(@"^\s*step\s+(\d+)/(\d+)")]
    internal static partial Regex StepLine();

    public static void Run(int total, TextWriter output, Action<IMatrixProgress> body)
    {
        bool interactive = ReferenceEquals(output, Console.Out) && !Console.IsOutputRedirected && AnsiConsole.Profile.Capabilities.Interactive;
        if (!interactive || total == 0)
        {
            body(new Plain(total, output));
            return;
        }
        AnsiConsole.Progress()
            .AutoClear(false)
            .Columns(new TaskDescriptionColumn(), new ProgressBarColumn(), new PercentageColumn(), new ElapsedTimeColumn(), new RemainingTimeColumn())
            .Start(ctx => body(new Live(ctx.AddTask("experiments", maxValue: total), total)));
    }

    internal static double? StepFraction(string line)
    {
        var m = StepLine().Match(line);
        return m.Success && long.TryParse(m.Groups[2].Value, out var n) && n > 0 && long.TryParse(m.Groups[1].Value, out var i)
            ? Math.Clamp((double)i / n, 0, 1) : null;
    }

    private sealed class Live(ProgressTask task, int total) : IMatrixProgress
    {
        private int _index;
        private string _what = "";

        public void Starting(int index, string what)
        {
            _index = index;
            _what = what;
            task.Value = index;
            task.Description = Markup.Escape($"[{index + 1}/{total}] {what}");
        }

        public void ChildLine(string line)
        {
            if (StepFraction(line) is double f)
            {
                task.Value = _index + f;
                task.Description = Markup.Escape($"[{_index + 1}/{total}] {_what} {StepLine().Match(line).Value.Trim()}");
            }
        }

        public void Finished(string line)
        {
            task.Value = _index + 1;
            AnsiConsole.MarkupLine(Markup.Escape(line));
        }

        public void Note(string line) => AnsiConsole.MarkupLine(Markup.Escape(line));
    }

    private sealed class Plain(int total, TextWriter output) : IMatrixProgress
    {
        private readonly Stopwatch _clock = Stopwatch.StartNew();
        private int _done;

        public void Starting(int index, string what) => output.WriteLine($"[{index + 1}/{total}] {what} ...");
        public void ChildLine(string line) { }

        public void Finished(string line)
        {
            _done++;
            var eta = _done < total ? $"; ETA {Format(TimeSpan.FromSeconds(_clock.Elapsed.TotalSeconds / _done * (total - _done)))}" : "";
            output.WriteLine($"{line}{eta}");
        }

        public void Note(string line) => output.WriteLine(line);
    }

    public static string Format(TimeSpan t) =>
        t.TotalHours >= 1 ? $"{(int)t.TotalHours}h{t.Minutes:D2}m" : t.TotalMinutes >= 1 ? $"{(int)t.TotalMinutes}m{t.Seconds:D2}s" : $"{t.TotalSeconds:F0}s";
}
