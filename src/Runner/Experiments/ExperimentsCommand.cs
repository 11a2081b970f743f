using System.Globalization;
using System.Runtime.InteropServices;
using CommandLine;
using Memopt.Runner.Commands;

namespace Memopt.Runner.Experiments;

[Verb("experiments", HelpText = "Run the study's matrix (techniques × batch sizes), each run its own `memopt train` process; writes results/experiment_summary.json.")]
public sealed class ExperimentsOptions : ChildTrainOptions
{
    [Option("batch-sizes", Separator = ',', HelpText = "Batch sizes (default 32,64,128).")]
    public IEnumerable<int> BatchSizes { get; set; } = [];

    [Option("window-sizes", Separator = ',', HelpText = "Sliding-window sizes (default T/4,T/2 of the model's sequence length).")]
    public IEnumerable<int> WindowSizes { get; set; } = [];

    [Option("only", Separator = ',', HelpText = "Run only these techniques: baseline, bf16, bf16_flash, bf16_flash_window, checkpointing, combined, window (fp32 + window, not in the default matrix), or a label like bf16_flash_window64.")]
    public IEnumerable<string> Only { get; set; } = [];

    [Option("skip", Separator = ',', HelpText = "Leave out these techniques.")]
    public IEnumerable<string> Skip { get; set; } = [];

    [Option("epochs", HelpText = "Epochs per run (train's default: 1).")] public int? Epochs { get; set; }
    [Option("steps", HelpText = "Optimizer steps per run (overrides --epochs).")] public int? Steps { get; set; }

    [Option("force", HelpText = "Run again even runs that have results.")] public bool Force { get; set; }
    [Option("retry-oom", HelpText = "Run again runs recorded as out of memory (otherwise an OOM is a result and kept).")] public bool RetryOom { get; set; }
    [Option("keep-checkpoints", HelpText = "Keep each run's weights (runs/{run}/checkpoint.safetensors); deleted by default.")] public bool KeepCheckpoints { get; set; }
    [Option("run-timeout", HelpText = "Kill a run after this many seconds and record it as failed.")] public int? RunTimeout { get; set; }

    [Option("max-batch", HelpText = "Also search the largest batch per technique (real steps in child processes; costs time).")] public bool MaxBatch { get; set; }
    [Option("max-batch-cap", Default = 4096, HelpText = "With --max-batch: largest batch tried.")] public int MaxBatchCap { get; set; } = 4096;
    [Option("max-batch-precision", Default = 1, HelpText = "With --max-batch: stop when the bounds are this close.")] public int MaxBatchPrecision { get; set; } = 1;
    [Option("probe-steps", Default = 2, HelpText = "With --max-batch: training steps per probe.")] public int ProbeSteps { get; set; } = 2;
}

/// <summary>
/// The study in one command. Runs go batch size by batch size (every technique at the smallest batch first, so an
/// interrupted matrix still compares all techniques), each as a child `memopt train` into results/runs/{technique}_b{batch}/
/// with its log there. A run with a metrics file from the same arguments is skipped (unless --force); out-of-memory is
/// recorded as a result and not retried (unless --retry-oom); failed runs are retried on the next invocation. The
/// summary is rewritten atomically after every run. Exit code 0 when no run failed (oom is not a failure), 1 otherwise.
/// </summary>
public static class ExperimentsCommand
{
    public static readonly int[] DefaultBatchSizes = [32, 64, 128];

    public static int Run(ExperimentsOptions o) => Run(o, ChildProgram.Current(), Console.Out);

    public static int Run(ExperimentsOptions o, ChildProgram program, TextWriter output)
    {
        var plan = Plan.From(o);
        Directory.CreateDirectory(o.ResultsDir);
        var summary = ExperimentSummary.Load(o.ResultsDir) ?? new ExperimentSummary();
        // One summary describes one configuration: runs and searches made with other shared arguments (another preset,
        // data, budget, length or train args) would be compared as if they were alike, so they leave the summary.
        var prober = new MaxBatchProber(program, o.ResultsDir, plan.SharedArgs, plan.TrainArgs, o.ProbeSteps, null);
        int dropped = summary.Runs.RemoveAll(r => !r.Args.SequenceEqual(plan.ConfigArgs(r.Flags, r.BatchSize)))
                    + summary.MaxBatch.RemoveAll(m => !m.Args.SequenceEqual(prober.ConfigArgs(new Technique(m.Family, m.Technique, m.Flags, null))));
        if (dropped > 0)
            output.WriteLine($"experiments: {dropped} result(s) in {ExperimentSummary.PathIn(o.ResultsDir)} came from another configuration and were dropped " +
                             "from the summary (their files stay until a run overwrites them; use another --results-dir to keep both studies)");
        summary.Dataset = plan.Dataset;
        summary.Preset = o.Preset;
        summary.Device = o.Device;
        summary.MemoryLimit = o.MemoryLimit;
        summary.BatchSizes = [.. plan.BatchSizes];
        summary.WindowSizes = [.. plan.WindowSizes];
        summary.TrainArgs = [.. plan.TrainArgs];
        var forecasts = Forecasts(o, plan, summary);
        summary.MaxBatchPredictions = [.. forecasts.Select(f => new MaxBatchPredictionRecord
            { Technique = f.Technique.Label, Family = f.Technique.Family, MaxBatch = f.Forecast.MaxBatch, Basis = f.Forecast.Basis })];
        output.WriteLine(forecasts.FirstOrDefault(f => f.Forecast.MaxBatch is not null).Forecast is { } basis
            ? $"memory model, largest batch: {string.Join(", ", forecasts.Select(f => $"{f.Technique.Label} {f.Forecast.MaxBatch?.ToString(CultureInfo.InvariantCulture) ?? "n/a"}"))} ({basis.Basis})"
            : $"memory model: no max-batch prediction ({forecasts[0].Forecast.Basis})");

        var pending = new List<PlannedRun>();
        int skipped = 0;
        foreach (var run in plan.Runs)
        {
            if (Settled(o, summary, run) is RunRecord kept) { summary.Put(kept); skipped++; }
            else pending.Add(run);
        }
        summary.Save(o.ResultsDir);
        output.WriteLine($"experiments: {plan.Runs.Count} runs ({plan.Techniques.Count} techniques × {plan.BatchSizes.Count} batch sizes), " +
                         $"{skipped} already done, {pending.Count} to run; child: {program}");

        using var cancel = new CancellationTokenSource();
        using var sigint = PosixSignalRegistration.Create(PosixSignal.SIGINT, c => { c.Cancel = true; cancel.Cancel(); });
        using var sigterm = PosixSignalRegistration.Create(PosixSignal.SIGTERM, c => { c.Cancel = true; cancel.Cancel(); });
        var timeout = o.RunTimeout is int s && s > 0 ? TimeSpan.FromSeconds(s) : (TimeSpan?)null;

        MatrixProgress.Run(pending.Count, output, progress =>
        {
            for (int i = 0; i < pending.Count && !cancel.IsCancellationRequested; i++)
            {
                var run = pending[i];
                progress.Starting(i, run.Name);
                var record = Execute(o, program, run, progress.ChildLine, timeout, cancel.Token);
                if (record is null) break; // interrupted: not recorded, so the next invocation runs it
                summary.Put(record);
                summary.Save(o.ResultsDir);
                progress.Finished($"{run.Name}: {Describe(record)}");
            }
        });

        if (!cancel.IsCancellationRequested && o.MaxBatch)
            MaxBatchPhase(o, program, plan, summary, forecasts.ToDictionary(f => f.Technique.Label, f => f.Forecast), timeout, output, cancel.Token);

        summary.Runs = [.. summary.Runs.OrderBy(r => r.BatchSize).ThenBy(r => plan.Order(r.Technique))];
        summary.Save(o.ResultsDir);
        if (cancel.IsCancellationRequested)
        {
            output.WriteLine($"experiments: interrupted; finished runs are in {ExperimentSummary.PathIn(o.ResultsDir)}. Run the same command again to continue.");
            return 130;
        }
        var mine = plan.Runs.Select(r => summary.Find(r.Technique.Label, r.BatchSize)!).ToList();
        int ok = mine.Count(r => r.Status == RunStatus.Ok), oom = mine.Count(r => r.Status == RunStatus.Oom), failed = mine.Count(r => r.Status == RunStatus.Failed);
        output.WriteLine($"experiments: {ok} ok, {oom} out of memory, {failed} failed; summary {ExperimentSummary.PathIn(o.ResultsDir)}; " +
                         $"next: memopt compare --results-dir {o.ResultsDir}");
        foreach (var f in mine.Where(r => r.Status == RunStatus.Failed))
            output.WriteLine($"  failed {f.Technique} b{f.BatchSize}: {f.Message} (log {Path.Combine(o.ResultsDir, f.Log)})");
        return failed == 0 ? 0 : 1;
    }

    /// <summary>
    /// The record to keep for a run that need not run again, or null when it must run: a metrics file written by a child
    /// with this run's configuration (the file records its command line; the files are the truth, as a run may have
    /// finished after the summary was last written), or an out-of-memory recorded for this configuration.
    /// </summary>
    private static RunRecord? Settled(ExperimentsOptions o, ExperimentSummary summary, PlannedRun run)
    {
        if (o.Force) return null;
        var old = summary.Find(run.Technique.Label, run.BatchSize);
        if (old is not null && !old.Args.SequenceEqual(run.ConfigArgs)) old = null;
        string metrics = Path.Combine(o.ResultsDir, run.MetricsFile);
        if (File.Exists(metrics))
        {
            try
            {
                var recorded = RunFiles.CommandLine(metrics);
                if (recorded is null ? old is null : !PlannedRun.ConfigPart(recorded).SequenceEqual(run.ConfigArgs)) return null;
                var record = run.Record(RunStatus.Ok, null, old?.ExitCode ?? 0, old?.Seconds ?? 0);
                record.FinishedAt = old?.FinishedAt ?? File.GetLastWriteTimeUtc(metrics);
                record.Metrics = RunFiles.Read(metrics, Path.Combine(o.ResultsDir, run.MemoryFile));
                return record;
            }
            catch (Exception e) when (e is InvalidDataException or System.Text.Json.JsonException) { return null; } // unreadable: run again
        }
        return old is { Status: RunStatus.Oom } && !o.RetryOom ? old : null;
    }

    /// <summary>Runs one child; null when the matrix was interrupted meanwhile.</summary>
    private static RunRecord? Execute(ExperimentsOptions o, ChildProgram program, PlannedRun run, Action<string> onLine, TimeSpan? timeout, CancellationToken cancel)
    {
        string dir = Path.Combine(o.ResultsDir, run.RunDir);
        if (Directory.Exists(dir)) Directory.Delete(dir, recursive: true); // no stale metrics can pass for this run's
        Directory.CreateDirectory(dir);
        var result = ChildRun.Run(program, run.ChildArgs(o.ResultsDir), Path.Combine(o.ResultsDir, run.Log), onLine, timeout, cancel);
        if (result.Cancelled) return null;
        string metrics = Path.Combine(o.ResultsDir, run.MetricsFile);
        var (status, message) = RunOutcome.Classify(result, File.Exists(metrics));
        var record = run.Record(status, message, result.ExitCode, result.Seconds);
        if (status == RunStatus.Ok)
        {
            try { record.Metrics = RunFiles.Read(metrics, Path.Combine(o.ResultsDir, run.MemoryFile)); }
            catch (InvalidDataException e) { record.Status = RunStatus.Failed; record.Message = e.Message; }
        }
        if (!o.KeepCheckpoints) File.Delete(Path.Combine(dir, PlannedRun.CheckpointName));
        return record;
    }

    private static string Describe(RunRecord r) => r.Status switch
    {
        RunStatus.Ok => $"ok ({r.Seconds:F1} s): val ppl {r.Metrics!.ValPerplexity:F2}, step {r.Metrics.StepMsMedian:F1} ms, peak {Memopt.Tensors.ByteSize.Format(r.Metrics.PeakMemoryBytes)}",
        RunStatus.Oom => $"out of memory ({r.Seconds:F1} s)",
        _ => $"FAILED ({r.Seconds:F1} s, exit {r.ExitCode?.ToString(CultureInfo.InvariantCulture) ?? "killed"}): {r.Message}",
    };

    /// <summary>
    /// The memory model's largest batch for the plan's techniques and those the summary keeps from earlier invocations
    /// of the same configuration, in the plan's order: cheap (analytic), so made every time, --max-batch or not.
    /// </summary>
    private static List<(Technique Technique, MaxBatchForecast Forecast)> Forecasts(ExperimentsOptions o, Plan plan, ExperimentSummary summary) =>
        plan.Techniques
            .Concat(summary.Runs.Select(r => new Technique(r.Family, r.Technique, r.Flags, r.WindowSize)))
            .Concat(summary.MaxBatch.Select(m => new Technique(m.Family, m.Technique, m.Flags, null)))
            .DistinctBy(t => t.Label)
            .Select(t => (t, MaxBatchPrediction.Predict(o, t))).ToList();

    private static void MaxBatchPhase(ExperimentsOptions o, ChildProgram program, Plan plan, ExperimentSummary summary,
        IReadOnlyDictionary<string, MaxBatchForecast> forecasts, TimeSpan? timeout, TextWriter output, CancellationToken cancel)
    {
        var prober = new MaxBatchProber(program, o.ResultsDir, plan.SharedArgs, plan.TrainArgs, o.ProbeSteps, timeout);
        foreach (var technique in plan.Techniques)
        {
            if (cancel.IsCancellationRequested) return;
            var args = prober.ConfigArgs(technique);
            var old = summary.MaxBatch.FirstOrDefault(m => m.Technique == technique.Label);
            if (!o.Force && old is not null && old.Status != MaxBatchSearch.Failed && old.Args.SequenceEqual(args) && old.Cap == o.MaxBatchCap && old.Precision <= o.MaxBatchPrecision)
            {
                output.WriteLine($"max-batch {technique.Label}: {old.MaxBatch?.ToString(CultureInfo.InvariantCulture) ?? "none"} (already searched)");
                continue;
            }
            // The matrix's own runs are probes too: a full run that fit (or ran out of memory) at a batch says the same.
            var known = plan.BatchSizes.Select(b => summary.Find(technique.Label, b))
                .Where(r => r is not null && r.Status != RunStatus.Failed)
                .Select(r => new ProbeOutcome(r!.BatchSize, r.Status, r.Message, r.Seconds, "matrix"));
            output.WriteLine($"max-batch {technique.Label}: searching (cap {o.MaxBatchCap}) ...");
            try
            {
                var record = prober.Search(technique, 1, o.MaxBatchCap, o.MaxBatchPrecision, known,
                    forecasts[technique.Label], o.MemoryLimit, output.WriteLine, cancel);
                summary.Put(record);
                summary.Save(o.ResultsDir);
                output.WriteLine($"max-batch {technique.Label}: {MaxBatchCommand.Describe(record)}");
            }
            catch (OperationCanceledException) { return; }
        }
    }

    /// <summary>Everything decided before the first run: the techniques, batch sizes and each run's arguments and paths.</summary>
    private sealed record Plan(string Dataset, IReadOnlyList<Technique> Techniques, IReadOnlyList<int> BatchSizes, IReadOnlyList<int> WindowSizes,
        /// <summary>Arguments every child gets (device, budget, model, data), without the run length.</summary>
        IReadOnlyList<string> SharedArgs, IReadOnlyList<string> Length, IReadOnlyList<string> TrainArgs, IReadOnlyList<PlannedRun> Runs)
    {
        public int Order(string label)
        {
            int i = Techniques.ToList().FindIndex(t => t.Label == label);
            return i < 0 ? int.MaxValue : i;
        }

        /// <summary>The configuration arguments a run of these flags at this batch has in this plan.</summary>
        public List<string> ConfigArgs(IReadOnlyList<string> flags, int batch) =>
            new PlannedRun(new Technique("", "", flags, null), batch, Dataset, "", [.. SharedArgs, .. Length], TrainArgs).ConfigArgs;

        public static Plan From(ExperimentsOptions o)
        {
            var trainArgs = o.ParsedTrainArgs();
            var model = o.ModelConfig();
            o.MemoryLimitBytes(); // fail on a bad budget now, not in every child
            var batches = o.BatchSizes.Any() ? o.BatchSizes.Distinct().ToList() : [.. DefaultBatchSizes];
            foreach (var b in batches)
                if (b <= 0) throw new UserError($"--batch-sizes must all be > 0, got {b}");
            if (o.Steps is <= 0) throw new UserError($"--steps must be > 0, got {o.Steps}");
            if (o.Epochs is <= 0) throw new UserError($"--epochs must be > 0, got {o.Epochs}");
            if (o.ProbeSteps <= 0) throw new UserError($"--probe-steps must be > 0, got {o.ProbeSteps}");
            if (o.MaxBatchCap <= 0) throw new UserError($"--max-batch-cap must be > 0, got {o.MaxBatchCap}");
            if (o.MaxBatchPrecision <= 0) throw new UserError($"--max-batch-precision must be > 0, got {o.MaxBatchPrecision}");
            var windows = o.WindowSizes.Any() ? o.WindowSizes.Distinct().ToList() : [.. Experiments.Techniques.DefaultWindowSizes(model.SeqLen)];
            IReadOnlyList<Technique> techniques;
            try { techniques = Experiments.Techniques.Select(windows, o.Only.ToList(), o.Skip.ToList()); }
            catch (ArgumentException e) { throw new UserError(e.Message, e); }

            // Probes of the max-batch search choose their own length, so the run length is kept apart from the shared arguments.
            var shared = o.SharedChildArgs();
            List<string> length = o.Steps is int steps ? ["--steps", $"{steps}"] : o.Epochs is int epochs ? ["--epochs", $"{epochs}"] : [];
            string dataset = TrainCommand.DatasetName(o.Data);
            var runs = batches.SelectMany(b => techniques.Select(t => new PlannedRun(t, b, dataset, o.CacheDir, [.. shared, .. length], trainArgs))).ToList();
            return new Plan(dataset, techniques, batches, windows, shared, length, trainArgs, runs);
        }
    }
}

/// <summary>One technique at one batch size: its child's arguments and where its files go (relative to the results directory).</summary>
internal sealed record PlannedRun(Technique Technique, int BatchSize, string Dataset, string CacheDir, IReadOnlyList<string> SharedArgs, IReadOnlyList<string> TrainArgs)
{
    public const string CheckpointName = "checkpoint.safetensors";
    public string Name => $"{Technique.Label} b{BatchSize}";
    public string RunDir => Path.Combine("runs", $"{MaxBatchProber.ResultsName(Technique.Label)}_b{BatchSize}");
    public string Log => Path.Combine(RunDir, "train.log");
    public string MetricsFile => Path.Combine(RunDir, RunFiles.MetricsName(Dataset, Technique.Label));
    public string MemoryFile => Path.Combine(RunDir, RunFiles.MemoryName(Dataset, Technique.Label));

    /// <summary>What decides the run's result (not where it is written): compared with a stored run's to tell a stale result.</summary>
    public List<string> ConfigArgs =>
        [.. SharedArgs, "--batch-size", BatchSize.ToString(CultureInfo.InvariantCulture), .. Technique.Flags, .. TrainArgs];

    /// <summary>Options of a child's command line that say where it writes, not what it computes.</summary>
    private static readonly string[] OutputOptions = ["--technique", "--results-dir", "--checkpoint", "--cache-dir"];

    /// <summary>A child's command line (as its metrics file records it) less the verb and the output options: its <see cref="ConfigArgs"/>.</summary>
    public static List<string> ConfigPart(IReadOnlyList<string> commandLine)
    {
        var config = new List<string>();
        for (int i = commandLine.Count > 0 && commandLine[0] == "train" ? 1 : 0; i < commandLine.Count; i++)
        {
            if (OutputOptions.Contains(commandLine[i])) { i++; continue; }
            config.Add(commandLine[i]);
        }
        return config;
    }

    public List<string> ChildArgs(string resultsDir) =>
    [
        "train", "--technique", Technique.Label, "--results-dir", Path.Combine(resultsDir, RunDir),
        "--checkpoint", Path.Combine(resultsDir, RunDir, CheckpointName), "--cache-dir", CacheDir, .. ConfigArgs,
    ];

    public RunRecord Record(RunStatus status, string? message, int? exitCode, double seconds) => new()
    {
        Technique = Technique.Label, Family = Technique.Family, Flags = [.. Technique.Flags], WindowSize = Technique.WindowSize,
        BatchSize = BatchSize, Status = status, Message = message, ExitCode = exitCode, Seconds = seconds,
        FinishedAt = DateTimeOffset.UtcNow, Args = ConfigArgs, RunDir = RunDir, Log = Log,
        MetricsFile = status == RunStatus.Ok ? MetricsFile : null, MemoryFile = status == RunStatus.Ok ? MemoryFile : null,
    };
}
