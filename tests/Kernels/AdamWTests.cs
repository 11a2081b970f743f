using FsCheck;
using FsCheck.Xunit;
using Memopt.Autograd;
using Memopt.Autograd.Optim;
using Memopt.Tensors;
using Memopt.Tests.Harness;
using AdamWKernel = Memopt.Kernels.AdamW;

namespace Memopt.Tests.Kernels;

public class AdamWTests
{
    // After k ≤ 6 steps the float32 state differs from float64 by accumulated roundings: m and v by ~1 ulp per step
    // (≤ 6·6e-8 of their scale, ~1 here); p by ~1 ulp of |p| ≤ 2 per step (~7e-7) plus the update's own error
    // (lr ≤ 1e-2 times a few ulps of m̂/(√v̂+eps), ~1e-8). |got − want| ≤ 2e-6·(1 + |want|) is ~3× the worst sum,
    // while one step moves p by ~lr = 1e-2 and weight decay by lr·wd ≥ 5e-4: a wrong formula is far outside it.
    private const double StateTolerance = 2e-6;

    private static readonly int[] Sizes = [1, 2, 7, 16, 17, 97, 256, 1031];

    public enum Mode { Adam, AdamW, AdamL2 }

    private static AdamWOptions OptionsFor(Mode mode) => mode switch
    {
        Mode.Adam => AdamWOptions.Adam(),
        Mode.AdamW => new AdamWOptions(WeightDecay: 0.1f),
        _ => AdamWOptions.Adam(weightDecay: 0.05f),
    };

    private static Parameter NewParameter(ComputeDevice dev, float[] values, string name) =>
        new(Tensor.FromHost(dev, values, new Shape(values.Length), MemoryCategory.Parameters, name), name);

    private static bool Close(double got, double want) => Math.Abs(got - want) <= StateTolerance * (1 + Math.Abs(want));

    [Property(MaxTest = 20)]
    public void Several_steps_match_float64_pytorch_formulas(PositiveInt a, PositiveInt b, PositiveInt c, PositiveInt modePick, int seed)
    {
        var mode = (Mode)(modePick.Get % 3);
        var options = OptionsFor(mode);
        var rng = new Random(seed);
        var dev = TestDevice.Get();
        int[] sizes = [Sizes[a.Get % Sizes.Length], Sizes[b.Get % Sizes.Length], Sizes[c.Get % Sizes.Length]];
        var p64 = sizes.Select(n => GradCheck.RandomValues(rng, n, scale: 2).Select(v => (double)v).ToArray()).ToArray();
        var m64 = sizes.Select(n => new double[n]).ToArray();
        var v64 = sizes.Select(n => new double[n]).ToArray();
        var ps = sizes.Select((n, i) => NewParameter(dev, p64[i].Select(v => (float)v).ToArray(), $"p{i}")).ToArray();
        try
        {
            using var opt = new AdamW(ps, options);
            float[] lrs = [1e-2f, 5e-3f, 1e-2f, 2e-3f, 1e-2f, 7e-3f];
            for (int step = 1; step <= lrs.Length; step++)
            {
                for (int i = 0; i < ps.Length; i++)
                {
                    // Gradient scales vary per step so that v̂ is not a constant and bias correction matters.
                    var g = GradCheck.RandomValues(rng, sizes[i], scale: Math.Pow(10, rng.Next(-3, 1)));
                    ps[i].Grad!.CopyFrom(g);
                    AdamWKernel.Reference.Step(p64[i], g.Select(x => (double)x).ToArray(), m64[i], v64[i], step,
                        lrs[step - 1], options.Beta1, options.Beta2, options.Eps, options.WeightDecay, options.Decoupled);
                }
                opt.Step(lrs[step - 1]);
            }
            Assert.Equal(lrs.Length, opt.StepCount);
            for (int i = 0; i < ps.Length; i++)
            {
                var p = ps[i].Value.ToFloatArray();
                var m = opt.ExpAvg[i].ToFloatArray();
                var v = opt.ExpAvgSq[i].ToFloatArray();
                for (int j = 0; j < sizes[i]; j++)
                {
                    Assert.True(Close(p[j], p64[i][j]), $"{mode} p{i}[{j}] {p[j]} vs {p64[i][j]}");
                    Assert.True(Close(m[j], m64[i][j]), $"{mode} m{i}[{j}] {m[j]} vs {m64[i][j]}");
                    Assert.True(Close(v[j], v64[i][j]), $"{mode} v{i}[{j}] {v[j]} vs {v64[i][j]}");
                }
            }
        }
        finally
        {
            foreach (var p in ps) p.Dispose();
        }
    }

    [Fact]
    public void First_adam_step_moves_each_parameter_by_lr_against_the_gradient_sign()
    {
        // Step 1: m̂ = g, v̂ = g², so Δp = −lr·g/(|g| + eps) ≈ −lr·sign(g) whatever the gradient's scale.
        var dev = TestDevice.Get();
        using var p = NewParameter(dev, [1f, 1f, 1f, 1f], "p");
        p.Grad!.CopyFrom([3f, -2e-3f, 0.5f, -40f]);
        using var opt = new AdamW([p], AdamWOptions.Adam(learningRate: 0.01f));
        opt.Step();
        var got = p.Value.ToFloatArray();
        float[] want = [0.99f, 1.01f, 0.99f, 1.01f];
        for (int i = 0; i < 4; i++) Assert.True(Math.Abs(got[i] - want[i]) < 1e-6, $"p[{i}] = {got[i]}, want {want[i]}");
    }

    [Fact]
    public void Decoupled_weight_decay_with_zero_gradient_only_shrinks_the_parameters()
    {
        // m = v = 0, so the Adam term is 0/(0 + eps) = 0 and AdamW leaves exactly p·(1 − lr·wd); Adam-L2 instead moves
        // by lr·sign(p) (its gradient is wd·p).
        var dev = TestDevice.Get();
        using var p = NewParameter(dev, [2f, -0.5f], "p");
        using var q = NewParameter(dev, [2f, -0.5f], "q");
        using (var adamw = new AdamW([p], new AdamWOptions(LearningRate: 0.1f, WeightDecay: 0.5f))) adamw.Step();
        using (var adamL2 = new AdamW([q], AdamWOptions.Adam(learningRate: 0.1f, weightDecay: 0.5f))) adamL2.Step();
        Assert.Equal(new[] { 2f * 0.95f, -0.5f * 0.95f }, p.Value.ToFloatArray());
        var l2 = q.Value.ToFloatArray();
        Assert.True(Math.Abs(l2[0] - 1.9f) < 1e-6 && Math.Abs(l2[1] + 0.4f) < 1e-6, string.Join(", ", l2));
    }

    [Fact]
    public void Weight_decay_applies_only_where_the_predicate_says()
    {
        var dev = TestDevice.Get();
        using var w = NewParameter(dev, [1f, 2f], "weight");
        using var bias = NewParameter(dev, [1f, 2f], "bias");
        using var opt = new AdamW([w, bias], new AdamWOptions(LearningRate: 0.1f, WeightDecay: 0.5f), p => p.Name != "bias");
        opt.Step();
        Assert.Equal(new[] { 0.95f, 1.9f }, w.Value.ToFloatArray());
        Assert.Equal(new[] { 1f, 2f }, bias.Value.ToFloatArray());
        Assert.False(opt.AppliesWeightDecay(1));
    }

    [Fact]
    public void State_is_allocated_zeroed_up_front_and_a_step_allocates_nothing()
    {
        var dev = TestDevice.Get();
        using var p = NewParameter(dev, GradCheck.RandomValues(new Random(2), 33), "p");
        using var q = NewParameter(dev, GradCheck.RandomValues(new Random(3), 5), "q");
        long stateBefore = dev.Tracker.LiveOf(MemoryCategory.OptimizerState);
        using var opt = new AdamW([p, q]);
        Assert.Equal(2L * (33 + 5) * sizeof(float), dev.Tracker.LiveOf(MemoryCategory.OptimizerState) - stateBefore);
        Assert.Equal(opt.StateBytes, dev.Tracker.LiveOf(MemoryCategory.OptimizerState) - stateBefore);
        Assert.All(opt.ExpAvg.Concat(opt.ExpAvgSq).SelectMany(t => t.ToFloatArray()), x => Assert.Equal(0f, x));
        Assert.All(opt.ExpAvg.Concat(opt.ExpAvgSq), t => Assert.Equal(MemoryCategory.OptimizerState, t.Category));

        p.Grad!.CopyFrom(GradCheck.RandomValues(new Random(4), 33));
        long live = dev.Tracker.Live;
        var phase = dev.Tracker.Phase;
        opt.Step(1e-3f);
        Assert.Equal(live, dev.Tracker.Live);
        Assert.Equal(phase, dev.Tracker.Phase);
        Assert.Equal(1, opt.StepCount);

        opt.ZeroGrad();
        Assert.All(p.Grad.ToFloatArray(), x => Assert.Equal(0f, x));
    }

    [Fact]
    public void Restored_state_continues_exactly_like_the_original()
    {
        // What a checkpoint does: copy m, v and the step count into a fresh optimizer over the same parameter values.
        var dev = TestDevice.Get();
        var init = GradCheck.RandomValues(new Random(8), 19);
        using var a = NewParameter(dev, init, "a");
        using var b = NewParameter(dev, init, "b");
        using var optA = new AdamW([a], new AdamWOptions(WeightDecay: 0.1f));
        var rng = new Random(9);
        for (int s = 0; s < 3; s++)
        {
            a.Grad!.CopyFrom(GradCheck.RandomValues(rng, 19));
            optA.Step(1e-2f);
        }
        b.Value.CopyFrom(a.Value.ToFloatArray());
        using var optB = new AdamW([b], new AdamWOptions(WeightDecay: 0.1f));
        optB.ExpAvg[0].CopyFrom(optA.ExpAvg[0].ToFloatArray());
        optB.ExpAvgSq[0].CopyFrom(optA.ExpAvgSq[0].ToFloatArray());
        optB.StepCount = optA.StepCount;
        var g = GradCheck.RandomValues(rng, 19);
        a.Grad!.CopyFrom(g);
        b.Grad!.CopyFrom(g);
        optA.Step(1e-2f);
        optB.Step(1e-2f);
        Assert.Equal(a.Value.ToFloatArray(), b.Value.ToFloatArray());
    }

    [Fact]
    public void Bad_options_and_duplicate_parameters_are_rejected()
    {
        var dev = TestDevice.Get();
        using var p = NewParameter(dev, [1f], "p");
        Assert.Throws<ArgumentOutOfRangeException>(() => new AdamW([p], new AdamWOptions(Beta1: 1f)));
        Assert.Throws<ArgumentOutOfRangeException>(() => new AdamW([p], new AdamWOptions(Eps: 0f)));
        Assert.Throws<ArgumentException>(() => new AdamW([p, p]));
    }
}
