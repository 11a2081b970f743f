using Memopt.Model;
using Memopt.Model.Data;
using Memopt.Model.Training;
using Memopt.Tensors;

namespace Memopt.Tests.Model;

/// <summary>A reduced-size training on the CPU accelerator: the CI's proof that the whole pipeline learns.</summary>
public class TrainerTests : IDisposable
{
    private readonly string _cache = Directory.CreateTempSubdirectory("memopt-train").FullName;
    public void Dispose() => Directory.Delete(_cache, recursive: true);

    internal static DataOptions SmallCorpus(string cache) => new()
    {
        CorpusWords = 30_000, SyntheticVocabulary = 150, VocabSize = 300, SeqLen = 16, CacheDir = cache,
    };

    internal static ModelConfig SmallModel => new() { VocabSize = 300, DModel = 32, Layers = 1, Heads = 2, DFF = 64, SeqLen = 16 };

    [Fact]
    public void Validation_loss_falls_and_every_measurement_is_reported()
    {
        using var dev = ComputeDevice.Create(DeviceKind.Cpu);
        var data = DataPipeline.Prepare(SmallCorpus(_cache));
        using var model = new TransformerLM(dev, SmallModel, seed: 1);
        var options = new TrainingOptions { BatchSize = 8, Steps = 40, LearningRate = 3e-3f, EvalBatches = 8, TimingWarmupSteps = 3, TimingSteps = 20 };
        var trainer = new Trainer(model, data, options);
        double before = trainer.Evaluate(0).Loss;
        var steps = new List<StepReport>();
        var metrics = new Trainer(model, data, options) { OnStep = steps.Add }.Run("synthetic");

        Assert.True(metrics.ValLoss < before - 0.5, $"val loss {before:F3} -> {metrics.ValLoss:F3}");
        Assert.True(metrics.LossCurve.Take(5).Average() > metrics.LossCurve.TakeLast(5).Average());
        Assert.Equal(40, steps.Count);
        Assert.Equal(20, metrics.TimedSteps);
        Assert.True(metrics.StepMsMedian > 0 && metrics.EpochSeconds > 0 && metrics.TokensPerSecond > 0);
        Assert.Equal(40L * 8 * 16, metrics.TokensSeen);
        Assert.NotNull(metrics.OptimalValLoss);
        Assert.True(metrics.ValLoss > metrics.OptimalValLoss!.Value - 0.05, "no model beats the entropy rate by more than sampling noise");
        // Memory: the peak holds parameters, gradients and Adam's two moments at the very least; the forward and
        // backward peaks are the tracker's own figures for those phases.
        long p = model.Parameters.Sum(x => x.Value.Bytes);
        Assert.True(metrics.Memory.PeakBytes >= 4 * p);
        Assert.Equal(p, metrics.Memory.ParameterBytes);
        Assert.Equal(2 * p, metrics.Memory.PeakPerCategory["optimizer_state"]);
        Assert.True(metrics.Memory.BackwardPeakBytes > 0 && metrics.Memory.ForwardPeakBytes > 0);
        Assert.True(metrics.Memory.PeakPerCategory["attention_scores"] >= 8L * 2 * 16 * 16 * 4, "naive attention materializes B·H·T² probabilities");
    }

    [Fact]
    public void Gradient_accumulation_of_two_half_batches_matches_one_full_batch_step()
    {
        // Same data order: 2 micro-batches of 4 see the same 8 sequences as one batch of 8, and the mean of two
        // half-batch means equals the full-batch mean, so after one step the weights agree to float rounding.
        using var dev = ComputeDevice.Create(DeviceKind.Cpu);
        var data = DataPipeline.Prepare(SmallCorpus(_cache));
        float[] After(int batch, int accumulation)
        {
            using var model = new TransformerLM(dev, SmallModel, seed: 2);
            new Trainer(model, data, new TrainingOptions { BatchSize = batch, GradAccumulation = accumulation, Steps = 1, EvalBatches = 1, GradClip = 0 }).Run("synthetic");
            return model.Parameters[1].Value.ToFloatArray();
        }
        var full = After(8, 1);
        var halves = After(4, 2);
        double maxDiff = full.Zip(halves, (a, b) => Math.Abs(a - b)).Max();
        Assert.True(maxDiff < 1e-5, $"max weight difference {maxDiff:E2}");
    }
}
