using Memopt.Model;
using Memopt.Model.Checkpoints;
using Memopt.Model.Data;
using Memopt.Model.Training;
using Memopt.Tensors;

namespace Memopt.Tests.Model;

/// <summary>A tiny run on the CPU accelerator that exercises everything a resume must carry.</summary>
internal static class TinyRun
{
    /// <summary>The small synthetic corpus of the trainer tests, prepared once per test process without a cache.</summary>
    public static readonly Lazy<PreparedData> Data = new(() => DataPipeline.Prepare(TrainerTests.SmallCorpus("unused") with { CacheDir = null }));

    /// <summary>d_model 32: on the CPU accelerator (one 16-thread group) the embedding's scatter-add then runs each
    /// column's additions on one thread in a fixed order, so training is bit-reproducible (on CUDA its atomics are not).</summary>
    public static ModelConfig Config => TrainerTests.SmallModel with { Dropout = 0.1f };

    /// <summary>Micro-batches, dropout, AdamW with decay, cosine warm-up and decay, clipping, periodic evaluation.</summary>
    public static TrainingOptions Options => new()
    {
        BatchSize = 4, GradAccumulation = 2, Steps = 6, LearningRate = 3e-3f, Optimizer = OptimizerKind.AdamW, WeightDecay = 0.1f,
        WarmupSteps = 2, GradClip = 1.0f, EvalEvery = 2, EvalBatches = 2, Seed = 5,
    };

    public static TransformerLM Model(ComputeDevice device, int seed = 1) => new(device, Config, seed);

    private static readonly Lazy<ComputeDevice> Cpu = new(() => ComputeDevice.Create(DeviceKind.Cpu));

    /// <summary>The suite's device when it is the CPU accelerator (kernels already compiled), else a CPU device of our own.</summary>
    public static ComputeDevice Device => Harness.TestDevice.Get().IsCuda ? Cpu.Value : Harness.TestDevice.Get();
}

public class ResumeTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("memopt-resume").FullName;
    public void Dispose() => Directory.Delete(_dir, recursive: true);

    private string Dir(string name) => Path.Combine(_dir, name);

    [Fact]
    public void Three_steps_then_resume_then_three_reach_the_same_bits_as_six_straight()
    {
        var dev = TinyRun.Device;
        var data = TinyRun.Data.Value;
        var options = TinyRun.Options with { SaveEvery = 3 };
        RunMetrics straight;
        using (var model = TinyRun.Model(dev))
            straight = new Trainer(model, data, options) { CheckpointDirectory = Dir("straight") }.Run("synthetic");

        // Interrupted after step 3 (a stop request, as Ctrl-C makes): the checkpoint is written even without --save-every.
        using var stop = new CancellationTokenSource();
        RunMetrics first;
        using (var model = TinyRun.Model(dev))
            first = new Trainer(model, data, options with { SaveEvery = 0 })
            {
                CheckpointDirectory = Dir("split"), Stop = stop.Token, OnStep = s => { if (s.Step == 3) stop.Cancel(); },
            }.Run("synthetic");
        Assert.True(first.Partial);
        Assert.Equal("interrupted", first.Status);
        Assert.Equal(3, first.Steps);
        Assert.Equal(Path.Combine(Dir("split"), TrainingCheckpoint.FileName(3)), first.Checkpoint);

        // Resumed into a model initialized from another seed: everything must come from the checkpoint.
        RunMetrics resumed;
        var steps = new List<long>();
        using (var model = TinyRun.Model(dev, seed: 99))
            resumed = new Trainer(model, data, options)
            {
                CheckpointDirectory = Dir("split"), Resume = TrainingCheckpoint.Latest(Dir("split")), OnStep = s => steps.Add(s.Step),
            }.Run("synthetic");
        Assert.Equal([4L, 5, 6], steps);
        Assert.False(resumed.Partial);
        Assert.Equal([3L], resumed.ResumedAt);

        var a = SafeTensors.Load(Path.Combine(Dir("straight"), TrainingCheckpoint.FileName(6)), requireChecksum: true).Tensors;
        var b = SafeTensors.Load(Path.Combine(Dir("split"), TrainingCheckpoint.FileName(6)), requireChecksum: true).Tensors;
        Assert.Equal(a.Select(t => t.Name), b.Select(t => t.Name));
        Assert.Contains(a, t => t.Name.StartsWith("optimizer.exp_avg_sq.", StringComparison.Ordinal));
        foreach (var (x, y) in a.Zip(b))
            Assert.True(x.Data.AsSpan().SequenceEqual(y.Data), $"{x.Name} differs between the straight and the resumed run");
        Assert.Equal(straight.LossCurve, resumed.LossCurve);
        Assert.Equal(straight.Evaluations, resumed.Evaluations);
        Assert.Equal(straight.ValLoss, resumed.ValLoss);
        Assert.Equal(straight.TokensSeen, resumed.TokensSeen);
        var state = TrainingCheckpoint.Load(Path.Combine(Dir("split"), TrainingCheckpoint.FileName(6))).State;
        Assert.Equal(6, state.OptimizerSteps);
    }

    [Fact]
    public void Only_the_newest_checkpoints_are_kept_and_a_damaged_newest_one_falls_back_to_the_previous()
    {
        var dev = TinyRun.Device;
        string dir = Dir("keep");
        Directory.CreateDirectory(dir);
        // A temporary file left by a writer that was killed (AtomicFile's naming; no process has that id).
        string stale = Path.Combine(dir, TrainingCheckpoint.FileName(1) + $".tmp-{int.MaxValue}-0123");
        File.WriteAllText(stale, "half");
        using (var model = TinyRun.Model(dev))
            new Trainer(model, TinyRun.Data.Value, TinyRun.Options with { Steps = 5, SaveEvery = 1, KeepCheckpoints = 2, EvalEvery = 0, EvalBatches = 1 })
            { CheckpointDirectory = dir }.Run("synthetic");
        Assert.Equal([TrainingCheckpoint.FileName(4), TrainingCheckpoint.FileName(5)],
            Directory.GetFiles(dir).Select(Path.GetFileName).Order());

        string newest = Path.Combine(dir, TrainingCheckpoint.FileName(5));
        File.WriteAllBytes(newest, File.ReadAllBytes(newest)[..^100]);
        var log = new List<string>();
        var latest = TrainingCheckpoint.Latest(dir, log.Add);
        Assert.Equal(4, latest.Step);
        Assert.Contains(log, l => l.Contains(newest) && l.Contains("trying an older checkpoint"));

        string older = Path.Combine(dir, TrainingCheckpoint.FileName(4));
        var bytes = File.ReadAllBytes(older);
        bytes[bytes.Length / 2] ^= 0x10;
        File.WriteAllBytes(older, bytes);
        var e = Assert.Throws<InvalidDataException>(() => TrainingCheckpoint.Latest(dir));
        Assert.Contains(dir, e.Message);
        Assert.Contains("checksum mismatch", e.Message);
    }

    [Fact]
    public void A_stop_at_the_last_step_skips_the_final_evaluation_and_a_resume_only_evaluates()
    {
        var dev = TinyRun.Device;
        using var stop = new CancellationTokenSource();
        RunMetrics m;
        using (var model = TinyRun.Model(dev))
            m = new Trainer(model, TinyRun.Data.Value, TinyRun.Options with { Steps = 2, EvalEvery = 0 })
            {
                CheckpointDirectory = Dir("final"), Stop = stop.Token, OnStep = s => { if (s.Step == 2) stop.Cancel(); },
            }.Run("synthetic");
        Assert.True(m.Partial);
        Assert.Equal(2, m.Steps);
        Assert.True(double.IsNaN(m.ValLoss), "no evaluation ran");
        // Resuming a run whose steps are all done only evaluates.
        using var again = TinyRun.Model(dev);
        var steps = new List<long>();
        var done = new Trainer(again, TinyRun.Data.Value, TinyRun.Options with { Steps = 2, EvalEvery = 0 })
        {
            Resume = TrainingCheckpoint.Latest(Dir("final")), OnStep = s => steps.Add(s.Step),
        }.Run("synthetic");
        Assert.Empty(steps);
        Assert.False(done.Partial);
        Assert.True(double.IsFinite(done.ValLoss));
    }
}
