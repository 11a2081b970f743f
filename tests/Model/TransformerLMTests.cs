using FsCheck;
using FsCheck.Xunit;
using Memopt.Autograd;
using Memopt.Model;
using Memopt.Tensors;
using Memopt.Tests.Harness;

namespace Memopt.Tests.Model;

public class TransformerLMTests
{
    internal static ModelConfig Tiny(int vocab = 13, int t = 6) => new()
    {
        VocabSize = vocab, DModel = 8, Layers = 2, Heads = 2, DFF = 16, SeqLen = t, TiedHead = true,
    };

    internal static (Tensor Ids, Tensor Targets) Batch(ComputeDevice dev, int b, int t, int vocab, int seed)
    {
        var rng = new Random(seed);
        var ids = Enumerable.Range(0, b * t).Select(_ => rng.Next(vocab)).ToArray();
        var targets = Enumerable.Range(0, b * t).Select(_ => rng.Next(vocab)).ToArray();
        return (Tensor.FromHost(dev, ids, new Shape(b, t), MemoryCategory.Data, "ids"),
                Tensor.FromHost(dev, targets, new Shape(b, t), MemoryCategory.Data, "targets"));
    }

    [Theory]
    [InlineData("lab4", 2_855_680L)]
    [InlineData("rtx5090", 28_941_393L)]
    [InlineData("tiny", 5_719_552L)]
    [InlineData("small", 24_035_328L)]
    [InlineData("medium", 123_653_376L)]
    public void Presets_allocate_exactly_the_studys_parameter_counts(string preset, long expected)
    {
        using var dev = ComputeDevice.Create(DeviceKind.Cpu);
        var config = ModelConfig.Preset(preset);
        Assert.Equal(expected, config.ParameterCount());
        using var model = new TransformerLM(dev, config, seed: 1);
        Assert.Equal(expected, model.ParameterCount);
        // Parameters and their gradient buffers are allocated up front: 4 bytes each, plus the sinusoid table.
        Assert.Equal(expected * 4 + config.SeqLen * config.DModel * 4L, dev.Tracker.LiveOf(MemoryCategory.Parameters));
        Assert.Equal(expected * 4, dev.Tracker.LiveOf(MemoryCategory.Gradients));
    }

    [Property(MaxTest = 15)]
    public void Analytic_parameter_count_matches_the_allocated_parameters(PositiveInt layers, PositiveInt heads, bool tied, bool bias, bool learned)
    {
        int h = heads.Get % 3 + 1;
        var config = Tiny() with
        {
            Layers = layers.Get % 3 + 1, Heads = h, DModel = 4 * h, TiedHead = tied, HeadBias = bias,
            Positions = learned ? PositionEncoding.Learned : PositionEncoding.Sinusoidal,
        };
        using var model = new TransformerLM(TestDevice.Get(), config, seed: 2);
        Assert.Equal(config.ParameterCount(), model.ParameterCount);
    }

    /// <summary>
    /// The whole model's gradient, wired through every op on the tape, against a central difference of the float32
    /// loss along random directions u: (L(θ+hu) − L(θ−hu)) / 2h ≈ ∇L·u. Each op's gradient is checked against float64
    /// elsewhere; this checks their composition (residuals, tied head, heads split/merge, positions).
    /// Step and tolerance: at initialization the residual stream has a standard deviation of ~0.02, so LayerNorm makes the
    /// loss strongly curved: h = 1e-2 gave 5-15% truncation error on single bias entries (measured), h = 1e-3 agrees to
    /// ~1e-3. The float32 loss (~2.6) carries ~2.4e-7 rounding, i.e. ~2.4e-4 in the difference quotient at h = 1e-3;
    /// 1e-2 relative + 5e-4 absolute covers both.
    /// </summary>
    [Theory]
    [InlineData(NormPlacement.Pre, PositionEncoding.Sinusoidal, true, null)]
    [InlineData(NormPlacement.Post, PositionEncoding.Learned, false, null)]
    [InlineData(NormPlacement.Pre, PositionEncoding.Learned, false, 3)]
    public void Whole_model_gradient_matches_directional_finite_differences(NormPlacement norm, PositionEncoding positions, bool tied, int? window)
    {
        var dev = TestDevice.Get();
        var config = Tiny() with { Norm = norm, Positions = positions, TiedHead = tied, HeadBias = !tied };
        using var model = new TransformerLM(dev, config, seed: 3);
        var (ids, targets) = Batch(dev, 2, config.SeqLen, config.VocabSize, 4);
        using var _ids = ids;
        using var _targets = targets;
        var attention = new AttentionSettings(window);
        float Loss()
        {
            using var noGrad = Tape.NoGrad();
            using var l = model.Loss(ids, targets, attention, ForwardContext.Evaluation);
            return l.Value.ToFloatArray()[0];
        }
        using (var tape = new Tape())
        {
            using var loss = model.Loss(ids, targets, attention, ForwardContext.Evaluation);
            tape.Backward(loss);
        }
        var rng = new Random(5);
        var theta = model.Parameters.Select(p => p.Value.ToFloatArray()).ToArray();
        var grads = model.Parameters.Select(p => p.Grad!.ToFloatArray()).ToArray();
        // One unit direction per parameter tensor, so a wrong gradient names its tensor.
        for (int i = 0; i < theta.Length; i++)
        {
            var u = theta[i].Select(_ => rng.NextDouble() * 2 - 1).ToArray();
            double length = Math.Sqrt(u.Sum(v => v * v));
            for (int j = 0; j < u.Length; j++) u[j] /= length;
            double predicted = 0;
            for (int j = 0; j < u.Length; j++) predicted += grads[i][j] * u[j];
            const double h = 1e-3;
            float Shifted(double sign)
            {
                model.Parameters[i].Value.CopyFrom(theta[i].Select((v, j) => (float)(v + sign * h * u[j])).ToArray());
                return Loss();
            }
            double fd = ((double)Shifted(+1) - Shifted(-1)) / (2 * h);
            model.Parameters[i].Value.CopyFrom(theta[i]);
            Assert.True(Math.Abs(fd - predicted) <= 1e-2 * Math.Abs(predicted) + 5e-4,
                $"{model.Parameters[i].Name}: ∇L·u = {predicted:E4}, finite difference {fd:E4}");
        }
    }

    [Fact]
    public void Dropout_masks_replay_for_the_same_step_and_change_with_the_step()
    {
        var dev = TestDevice.Get();
        var config = Tiny() with { Dropout = 0.3f };
        using var model = new TransformerLM(dev, config, seed: 6);
        var (ids, targets) = Batch(dev, 2, config.SeqLen, config.VocabSize, 7);
        using var _ids = ids;
        using var _targets = targets;
        float LossAt(long step)
        {
            using var noGrad = Tape.NoGrad();
            using var l = model.Loss(ids, targets, new AttentionSettings(null), new ForwardContext(true, 9, step));
            return l.Value.ToFloatArray()[0];
        }
        Assert.Equal(LossAt(3), LossAt(3));
        Assert.NotEqual(LossAt(3), LossAt(4));
    }

    [Fact]
    public void A_forward_and_backward_leave_only_parameters_and_gradients_allocated()
    {
        using var dev = ComputeDevice.Create(DeviceKind.Cpu);
        var config = Tiny();
        using var model = new TransformerLM(dev, config, seed: 8);
        long before = dev.Tracker.Live;
        var (ids, targets) = Batch(dev, 2, config.SeqLen, config.VocabSize, 9);
        using (var tape = new Tape())
        {
            using var loss = model.Loss(ids, targets, new AttentionSettings(null), ForwardContext.Evaluation);
            Assert.True(dev.Tracker.LiveOf(MemoryCategory.SavedForBackward) > 0);
            Assert.True(dev.Tracker.LiveOf(MemoryCategory.AttentionScores) > 0, "the naive attention keeps its probabilities for backward");
            tape.Backward(loss);
        }
        ids.Dispose();
        targets.Dispose();
        Assert.True(before == dev.Tracker.Live, "left allocated: " + string.Join("; ", dev.Tracker.LiveAllocations
            .Where(a => a.Category is not (MemoryCategory.Parameters or MemoryCategory.Gradients)).Select(a => a.ToString())));
        Assert.Equal(0, dev.Tracker.LiveOf(MemoryCategory.SavedForBackward));
        Assert.Equal(0, dev.Tracker.LiveOf(MemoryCategory.AttentionScores));
        Assert.Equal(0, dev.Tracker.LiveOf(MemoryCategory.ActivationGradients));
    }

    [Fact]
    public void Sequences_longer_than_the_model_and_impossible_shapes_are_rejected_with_the_numbers()
    {
        var dev = TestDevice.Get();
        using var model = new TransformerLM(dev, Tiny(t: 4), seed: 10);
        var (ids, targets) = Batch(dev, 1, 5, 13, 11);
        using var _ids = ids;
        using var _targets = targets;
        var e = Assert.Throws<ArgumentException>(() => model.Loss(ids, targets, new AttentionSettings(null), ForwardContext.Evaluation));
        Assert.Contains("5 exceeds the model's maximum 4", e.Message);
        var bad = Assert.Throws<ArgumentException>(() => (Tiny() with { DModel = 10, Heads = 3 }).Validate());
        Assert.Contains("not divisible", bad.Message);
        Assert.Throws<ArgumentException>(() => (Tiny() with { Layers = 0 }).Validate());
    }
}
