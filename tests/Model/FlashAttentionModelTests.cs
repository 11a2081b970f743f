using Memopt.Autograd;
using Memopt.Autograd.Optim;
using Memopt.Model;
using Memopt.Runner;
using Memopt.Tensors;
using Memopt.Tests.Harness;
using static Memopt.Tests.Model.TransformerLMTests;

namespace Memopt.Tests.Model;

/// <summary>The flash path inside the model: same training as the naive path, composes with checkpointing, saves the T² memory.</summary>
public class FlashAttentionModelTests
{
    /// <summary>
    /// Flash and naive attention sum in different orders, so each step's loss may differ by float32 rounding, and Adam's
    /// normalized updates can amplify a gradient difference where a second moment is tiny. Measured on the CPU at this
    /// size: the three losses agree to the last bit. 1e-4 relative allows for other summation orders (the cooperative
    /// path, CUDA's atomics) while staying far below the loss change per step (~1e-2), so a wrong gradient would show.
    /// </summary>
    private const double LossTolerance = 1e-4;

    /// <summary>
    /// Gradients with and without checkpointing: the same kernels on the same inputs (bit-identical on the CPU, measured);
    /// on CUDA dq's atomics may add in another order: 1e-5 of the largest gradient is ~100 float32 ulps of it.
    /// </summary>
    private const double CheckpointTolerance = 1e-5;

    private static ModelConfig Small(int t = 12) => Tiny(t: t) with { DModel = 16, Heads = 2, DFF = 32 };

    private static float[] TrainLosses(ComputeDevice dev, ModelConfig config, AttentionSettings attention, int steps)
    {
        using var model = new TransformerLM(dev, config, seed: 21);
        using var optimizer = new AdamW(model.Parameters, AdamWOptions.Adam(1e-2f));
        var losses = new float[steps];
        for (int step = 0; step < steps; step++)
        {
            var (ids, targets) = Batch(dev, 3, config.SeqLen, config.VocabSize, 100 + step);
            using var _ids = ids;
            using var _targets = targets;
            using (var tape = new Tape())
            {
                using var loss = model.Loss(ids, targets, attention, new ForwardContext(true, 1, step));
                losses[step] = loss.Value.ToFloatArray()[0];
                tape.Backward(loss);
            }
            optimizer.Step();
            optimizer.ZeroGrad();
        }
        return losses;
    }

    [Theory]
    [InlineData(null)]
    [InlineData(4)]
    public void Three_training_steps_with_flash_give_the_losses_of_naive_attention(int? window)
    {
        var dev = TestDevice.Get();
        var config = Small();
        var naive = TrainLosses(dev, config, new AttentionSettings(window), 3);
        var flash = TrainLosses(dev, config, new AttentionSettings(window, Flash: true), 3);
        Assert.True(naive[2] != naive[0], "the losses did not move: the comparison would be vacuous");
        for (int i = 0; i < naive.Length; i++)
            Assert.True(Math.Abs(flash[i] - naive[i]) <= LossTolerance * Math.Abs(naive[i]),
                $"W={window} step {i}: flash loss {flash[i]:R} vs naive {naive[i]:R} (all: flash [{string.Join(", ", flash)}], naive [{string.Join(", ", naive)}])");
    }

    private static float[][] Gradients(TransformerLM model, Tensor ids, Tensor targets, AttentionSettings attention, CheckpointSettings? checkpointing)
    {
        foreach (var p in model.Parameters) p.ZeroGrad();
        using (var tape = new Tape())
        {
            using var loss = model.Loss(ids, targets, attention, new ForwardContext(true, 11, 5), checkpointing: checkpointing);
            tape.Backward(loss);
        }
        return model.Parameters.Select(p => p.Grad!.ToFloatArray()).ToArray();
    }

    [Theory]
    [InlineData(CheckpointScope.Block, null)]
    [InlineData(CheckpointScope.Attention, 3)]
    public void Gradient_checkpointing_composes_with_flash(CheckpointScope scope, int? window)
    {
        var dev = TestDevice.Get();
        var config = Small() with { Layers = 3 };
        using var model = new TransformerLM(dev, config, seed: 4);
        var (ids, targets) = Batch(dev, 2, config.SeqLen, config.VocabSize, 8);
        using var _ids = ids;
        using var _targets = targets;
        var attention = new AttentionSettings(window, Flash: true);
        var plain = Gradients(model, ids, targets, attention, null);
        var checkpointed = Gradients(model, ids, targets, attention, new CheckpointSettings(2, scope));
        double max = plain.Max(g => g.Max(v => Math.Abs(v)));
        Assert.True(max > 0, "all gradients are zero");
        for (int i = 0; i < plain.Length; i++)
        {
            double diff = plain[i].Zip(checkpointed[i], (a, b) => Math.Abs(a - b)).Max();
            Assert.True(diff <= CheckpointTolerance * max, $"{model.Parameters[i].Name}: max |Δgrad| {diff:E3} vs max |grad| {max:E3}");
        }
    }

    /// <summary>Tracked peak of one training forward + backward (device-wide, everything included).</summary>
    private static long StepPeak(TransformerLM model, Tensor ids, Tensor targets, AttentionSettings attention)
    {
        var tracker = model.Device.Tracker;
        tracker.ResetPeaks();
        using (var tape = new Tape())
        {
            Var loss;
            using (tracker.EnterPhase(Phase.Forward))
                loss = model.Loss(ids, targets, attention, new ForwardContext(true, 3, 1));
            using (loss) tape.Backward(loss);
        }
        foreach (var p in model.Parameters) p.ZeroGrad();
        return tracker.Peak;
    }

    [Theory]
    [InlineData(null)]
    [InlineData(8)]
    public void Flash_peak_is_below_naive_by_at_least_the_score_matrices_it_avoids(int? window)
    {
        // Its own device: the shared test device's tracker also counts other test classes.
        using var dev = ComputeDevice.Create(DeviceKind.Cpu);
        const int batch = 2;
        var config = Small(t: 32);
        using var model = new TransformerLM(dev, config, seed: 5);
        var (ids, targets) = Batch(dev, batch, config.SeqLen, config.VocabSize, 9);
        using var _ids = ids;
        using var _targets = targets;
        long naive = StepPeak(model, ids, targets, new AttentionSettings(window));
        long flash = StepPeak(model, ids, targets, new AttentionSettings(window, Flash: true));
        Assert.Equal(0, dev.Tracker.PeakOf(MemoryCategory.AttentionScores));
        // The naive path keeps every layer's probabilities [B, H, T, T] for backward (the window masks entries but the
        // matrix is stored whole); flash keeps only L [B, H, T] per layer instead; everything else saved is the same size
        // (q, k, v copies and the merged output vs qkv and y). Both peaks fall early in backward, when every layer's saved
        // tensors are still live (the score matrix is transient and gone by then): measured, the saving is exactly this.
        long matrix = (long)batch * config.Heads * config.SeqLen * config.SeqLen * sizeof(float);
        long lse = (long)batch * config.Heads * config.SeqLen * sizeof(float);
        long avoided = config.Layers * (matrix - lse);
        Assert.True(naive - flash >= avoided,
            $"W={window}: naive peak {naive} B, flash peak {flash} B: saved {naive - flash} B, expected at least {avoided} B " +
            $"({config.Layers} layers × ({matrix} B of probabilities − {lse} B of log-sum-exp))");
    }

    [Fact]
    public void Flash_with_attention_dropout_is_rejected_naming_the_flags()
    {
        var dev = TestDevice.Get();
        var config = Small() with { Dropout = 0.1f };
        using var model = new TransformerLM(dev, config, seed: 6);
        var (ids, targets) = Batch(dev, 1, config.SeqLen, config.VocabSize, 7);
        using var _ids = ids;
        using var _targets = targets;
        var e = Assert.Throws<ArgumentException>(() =>
        {
            using var tape = new Tape();
            using var loss = model.Loss(ids, targets, new AttentionSettings(null, Flash: true), new ForwardContext(true, 1, 0));
        });
        Assert.Contains("--flash-attn", e.Message);
        Assert.Contains("--dropout", e.Message);
        // Evaluation applies no dropout: flash runs.
        using var eval = model.Loss(ids, targets, new AttentionSettings(null, Flash: true), ForwardContext.Evaluation);
        Assert.True(float.IsFinite(eval.Value.ToFloatArray()[0]));
    }
}

/// <summary>`memopt train --flash-attn`: runs, labels its results, and rejects attention dropout.</summary>
public class FlashAttentionCommandLineTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("memopt-flash-cli").FullName;
    public void Dispose() => Directory.Delete(_dir, recursive: true);

    private (int Code, string Out, string Err) Run(params string[] extra) =>
        Cli.Run(Cli.Small("train", _dir, 1, ["--steps", "3", "--eval-batches", "1", "--results-dir", Path.Combine(_dir, "results"), .. extra]));

    [Fact]
    public void Flash_with_a_window_trains_and_is_labelled_flash_plus_window()
    {
        var (code, output, err) = Run("--flash-attn", "--window-size", "4");
        Assert.True(code == 0, err + output);
        var metrics = System.Text.Json.JsonDocument.Parse(File.ReadAllText(Path.Combine(_dir, "results", "synthetic_flash_window4_metrics.json"))).RootElement;
        Assert.Equal("flash+window4", metrics.GetProperty("technique").GetString());
        Assert.True(metrics.GetProperty("config").GetProperty("training").GetProperty("flash_attention").GetBoolean());

        var (bad, _, badErr) = Run("--flash-attn", "--dropout", "0.1");
        Assert.Equal(2, bad);
        Assert.Contains("--flash-attn does not support attention dropout", badErr);
    }

    [Fact]
    public void An_explicit_technique_label_wins_and_plain_runs_stay_baseline()
    {
        Assert.Equal("mine", new Memopt.Runner.Commands.TrainOptions { Technique = "mine", FlashAttn = true }.TechniqueLabel());
        Assert.Equal("flash", new Memopt.Runner.Commands.TrainOptions { FlashAttn = true }.TechniqueLabel());
        Assert.Equal("window64", new Memopt.Runner.Commands.TrainOptions { WindowSize = 64 }.TechniqueLabel());
        Assert.Equal("baseline", new Memopt.Runner.Commands.TrainOptions().TechniqueLabel());
    }
}
