using System.Globalization;
using Memopt.Model;
using Memopt.Model.Data;
using Memopt.Model.Training;
using Memopt.Runner.Commands;
using Memopt.Runner.Experiments;
using Memopt.Tensors;

namespace Memopt.Runner.Bench;

/// <summary>
/// `memopt bench step`: the time of whole training steps (forward, backward, clipping, optimizer; the batch upload and
/// the loss read-back included, as in `memopt train`) for each technique of the study at each batch size. Each
/// configuration builds its model and <see cref="Trainer"/> exactly as `memopt train` does (train's parser reads the
/// technique's flags, <see cref="TrainCommand.Settings"/> makes the options), in this process, and releases every
/// device byte afterwards: the tracker must be back to zero (else the record FAILs) and the pool's cache is returned,
/// so one configuration's memory does not inflate the next one's peak. Steps: <c>--warmup</c> untimed, then
/// <c>--repeats</c> timed (each ends with a device synchronization: median and minimum), then with <c>--profile</c> one
/// step with every kernel timed alone (<see cref="LaunchProfiler"/>). The run stops after its last step (no
/// evaluation, no checkpoint). Data: the corpus `memopt train` uses (--data / the embedded synthetic corpus), or
/// uniformly random tokens with --random-tokens (what benchmarks/pytorch/bench_step.py uses).
/// </summary>
public sealed class StepBench
{
    private readonly BenchOptions _o;
    private readonly IReadOnlyList<string> _trainArgs;
    private PreparedData? _data;

    private StepBench(BenchOptions o, IReadOnlyList<string> trainArgs, ModelConfig config, IReadOnlyList<Technique> techniques, IReadOnlyList<int> batchSizes)
    {
        _o = o;
        _trainArgs = trainArgs;
        Config = config;
        Techniques = techniques;
        BatchSizes = batchSizes;
    }

    public ModelConfig Config { get; }
    public IReadOnlyList<Technique> Techniques { get; }
    public IReadOnlyList<int> BatchSizes { get; }
    private int TimedSteps => _o.Repeats;
    private int TotalSteps => _o.Warmup + TimedSteps + (_o.Profile ? 1 : 0);

    /// <summary>Checks the options (techniques, batch sizes, step counts, --train-args, every configuration's settings) before any device work.</summary>
    public static StepBench Prepare(BenchOptions o)
    {
        if (o.Warmup < 0) throw new UserError($"--warmup {o.Warmup}: must be ≥ 0");
        if (o.Top <= 0) throw new UserError($"--top {o.Top}: must be > 0");
        var batchSizes = ParsePositive("--batch-sizes", o.BatchSizes);
        var config = BenchTrainArgs.Config(o);
        var names = (o.Techniques ?? "").Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
        IReadOnlyList<Technique> techniques;
        try
        {
            // The study's sliding window for this benchmark: T/4.
            techniques = Experiments.Techniques.Select([Experiments.Techniques.DefaultWindowSizes(config.SeqLen)[0]], names, []);
        }
        catch (ArgumentException e)
        {
            throw new UserError($"--techniques: {e.Message}", e);
        }
        var bench = new StepBench(o, BenchTrainArgs.Split(o), config, techniques, batchSizes);
        foreach (var t in techniques) bench.Settings(t, batchSizes[0]);
        return bench;
    }

    /// <summary>Comma-separated integers &gt; 0.</summary>
    public static List<int> ParsePositive(string option, string text)
    {
        var values = text.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries).Select(v =>
            int.TryParse(v, NumberStyles.Integer, CultureInfo.InvariantCulture, out int n) && n > 0 ? n
                : throw new UserError($"{option}: '{v}' is not a positive integer")).ToList();
        if (values.Count == 0) throw new UserError($"{option}: no value given");
        return values;
    }

    /// <summary>What `memopt train --preset P --batch-size B {flags} {--train-args}` would train with, for this benchmark's step counts.</summary>
    private (TrainOptions Options, ModelConfig Config, TrainingOptions Training) Settings(Technique technique, int batch)
    {
        var o = BenchTrainArgs.Parse(_o.Preset, ["--batch-size", batch.ToString(CultureInfo.InvariantCulture), .. technique.Flags, .. _trainArgs]);
        var (config, training) = TrainCommand.Settings(o);
        training = training with
        {
            Technique = technique.Label, Steps = TotalSteps, EvalEvery = 0, SaveEvery = 0,
            TimingWarmupSteps = _o.Warmup, TimingSteps = TimedSteps,
        };
        return (o, config, training);
    }

    public List<BenchRecord> Run(ComputeDevice device)
    {
        Console.WriteLine($"step: {_o.Preset} ({Config}); {(_o.RandomTokens ? "random tokens" : "the corpus of `memopt train`")}; " +
                          $"{_o.Warmup} warm-up + {TimedSteps} timed steps per configuration{(_o.Profile ? " + 1 profiled step" : "")}");
        Console.WriteLine($"{"technique",-24} {"batch",5} {"median ms",10} {"min ms",9} {"tokens/s",12} {"peak tracked",13} {"peak reserved",14}");
        var records = new List<BenchRecord>();
        foreach (int batch in BatchSizes)
            foreach (var technique in Techniques)
            {
                var r = RunOne(device, technique, batch);
                records.Add(r);
                Console.WriteLine(r.Note is { } note && double.IsNaN(r.Ms)
                    ? $"{technique.Label,-24} {batch,5} {note}"
                    : string.Create(CultureInfo.InvariantCulture,
                        $"{technique.Label,-24} {batch,5} {r.Ms,10:F2} {r.MsMin,9:F2} {r.TokensPerS,12:N0} {ByteSize.Format(r.PeakBytes ?? 0),13} {ByteSize.Format(r.PeakReservedBytes ?? 0),14}{(r.Note is null ? "" : "  " + r.Note)}"));
                if (r.Profile is { } p) Console.WriteLine(ProfileReport.Format(p, _o.Top));
            }
        return records;
    }

    private BenchRecord RunOne(ComputeDevice device, Technique technique, int batch)
    {
        var (o, config, training) = Settings(technique, batch);
        string dtype = o.Bf16 ? "bf16" : "f32";
        var empty = new BenchRecord("step", $"{_o.Preset}.{technique.Label}.b{batch}", "memopt", dtype, dtype, 0, 0, 0, batch, false, false,
            double.NaN, double.NaN, 0, double.NaN, null, null, technique.Label)
        { Technique = technique.Label, Preset = _o.Preset, SeqLen = config.SeqLen };
        var data = Data(o, config);

        ReleaseAll(device);
        long before = device.Tracker.Live; // 0 unless an earlier configuration ran out of memory midway and left tensors behind
        var timed = new List<double>();
        long peak = 0, peakReserved = 0;
        double profiledMs = double.NaN;
        LaunchProfiler? profiler = null;
        StepProfile? profile = null;
        RunMetrics metrics; // its step-time median is over the same window as `timed`
        using var stop = new CancellationTokenSource();
        try
        {
            using var model = new TransformerLM(device, config, (int)o.Seed, o.Bf16 ? Precision.Bf16 : Precision.Fp32);
            var trainer = new Trainer(model, data, training)
            {
                Stop = stop.Token,
                OnStep = s =>
                {
                    if (s.Step > _o.Warmup && s.Step <= _o.Warmup + TimedSteps) timed.Add(s.StepMs);
                    if (profiler is not null) { profiledMs = s.StepMs; profiler.Dispose(); }
                    if (s.Step == _o.Warmup + TimedSteps)
                    {
                        // The peaks of the steps `memopt train` would run: the profiled step (its blocker's sink included) is left out.
                        (peak, peakReserved) = (device.Tracker.Peak, device.Tracker.PeakReserved);
                        if (_o.Profile) profiler = new LaunchProfiler(device);
                    }
                    if (s.Step >= TotalSteps) stop.Cancel(); // no evaluation, no checkpoint: the run ends here
                },
            };
            metrics = trainer.Run(data.Stats.Source);
        }
        catch (OutOfDeviceMemoryException e)
        {
            // Tensors an op held when the allocation failed may stay tracked; the next configurations count from what is left.
            return empty with { Note = $"OOM: {e.Message}", PeakBytes = device.Tracker.Peak };
        }
        catch (Exception e) when (e is ArgumentException or DataException)
        {
            throw new UserError($"step {technique.Label} b{batch}: {e.Message}", e);
        }
        finally
        {
            profiler?.Dispose();
        }
        double median = metrics.StepMsMedian;
        if (profiler is not null) profile = profiler.Summarize(median, profiledMs);
        long leaked = device.Tracker.Live - before;
        string? note = leaked == 0 ? null
            : $"FAIL: {ByteSize.Format(leaked)} more tracked after the run than before it ({string.Join(", ", device.Tracker.LiveAllocations.Take(3))})";
        return empty with
        {
            Ms = median, MsMin = timed.Count > 0 ? timed.Min() : double.NaN, Samples = timed.Count, Note = note,
            TokensPerS = (double)batch * config.SeqLen / (median / 1000),
            PeakBytes = peak, PeakReservedBytes = peakReserved, Profile = profile,
        };
    }

    /// <summary>Returns the pool's cached blocks and restarts the peaks: the next configuration starts from nothing.</summary>
    private static void ReleaseAll(ComputeDevice device)
    {
        device.Synchronize();
        device.ReleaseCachedMemory();
        device.Tracker.ResetPeaks();
    }

    /// <summary>The tokens every configuration trains on (all share the sequence length and vocabulary), made once.</summary>
    private PreparedData Data(TrainOptions o, ModelConfig config)
    {
        if (_data is not null) return _data;
        if (_o.RandomTokens)
        {
            // One epoch long enough that the largest batch never wraps around.
            int sequences = checked(BatchSizes.Max() * TotalSteps);
            return _data = RandomTokenData.Create(config.VocabSize, config.SeqLen, sequences, (ulong)o.Seed);
        }
        return _data = TrainCommand.PrepareData(o, config);
    }
}
