using FsCheck;
using FsCheck.Xunit;
using Memopt.Autograd;
using Memopt.Autograd.Optim;
using ShapeException = Memopt.Kernels.ShapeException;
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

    // Lists for the multi-tensor update: empty, one tensor, a partly filled launch, exactly one launch (16), one more
    // than a launch, and three launches; sizes awkward (1, primes, just past a group of 16).
    private static readonly int[] Counts = [0, 1, 2, 5, 16, 17, 35];
    private static readonly int[] ManySizes = [1, 2, 3, 7, 13, 16, 17, 97, 257, 1031];

    /// <summary>One parameter's host state and how it is updated (with or without a bf16 shadow, with or without decay).</summary>
    private sealed record HostParameter(float[] P, float[] G, float[] M, float[] V, bool Shadow, bool Decay);

    private static HostParameter RandomParameter(Random rng)
    {
        int n = ManySizes[rng.Next(ManySizes.Length)];
        // A state mid-training: m of either sign, v ≥ 0, gradients of varying scale.
        return new HostParameter(GradCheck.RandomValues(rng, n, scale: 2), GradCheck.RandomValues(rng, n, scale: Math.Pow(10, rng.Next(-3, 1))),
            GradCheck.RandomValues(rng, n, scale: 0.05), GradCheck.RandomValues(rng, n, scale: 0.01).Select(Math.Abs).ToArray(),
            rng.Next(2) == 0, rng.Next(2) == 0);
    }

    /// <summary>The parameter's tensors on the device (registered in <paramref name="owned"/> for disposal).</summary>
    private static AdamWKernel.ParameterTensors Upload(ComputeDevice dev, HostParameter h, string name, List<Tensor> owned)
    {
        Tensor Own(Tensor t)
        {
            owned.Add(t);
            return t;
        }
        var shape = new Shape(h.P.Length);
        var p = Own(Tensor.FromHost(dev, h.P, shape, MemoryCategory.Parameters, name));
        var copy = h.Shadow ? Own(Tensor.Zeros(dev, shape, DType.BF16, MemoryCategory.Parameters, "bf16:" + name)) : null;
        return new(p, Own(Tensor.FromHost(dev, h.G, shape, MemoryCategory.Gradients, "grad:" + name)),
            Own(Tensor.FromHost(dev, h.M, shape, MemoryCategory.OptimizerState, "m:" + name)),
            Own(Tensor.FromHost(dev, h.V, shape, MemoryCategory.OptimizerState, "v:" + name)), copy, h.Decay, name);
    }

    private static bool SameBits(Tensor? a, Tensor? b) => a is null ? b is null : b is not null && a.ToRawArray().AsSpan().SequenceEqual(b.ToRawArray());

    [Property(MaxTest = 12)]
    public void UpdateMany_equals_one_update_per_tensor_bitwise_and_float64(PositiveInt countPick, PositiveInt modePick, int seed)
    {
        int count = Counts[countPick.Get % Counts.Length];
        var mode = (Mode)(modePick.Get % 3);
        var o = OptionsFor(mode);
        var rng = new Random(seed);
        var dev = TestDevice.Get();
        var hosts = Enumerable.Range(0, count).Select(_ => RandomParameter(rng)).ToArray();
        long step = rng.Next(1, 30);
        float lr = 1e-2f;
        var withDecay = AdamWKernel.Coefficients.For(step, lr, o.Beta1, o.Beta2, o.Eps, o.WeightDecay, o.Decoupled);
        var withoutDecay = AdamWKernel.Coefficients.For(step, lr, o.Beta1, o.Beta2, o.Eps, 0f, o.Decoupled);
        var owned = new List<Tensor>();
        try
        {
            var many = hosts.Select((h, i) => Upload(dev, h, $"p{i}", owned)).ToArray();
            var single = hosts.Select((h, i) => Upload(dev, h, $"q{i}", owned)).ToArray();
            AdamWKernel.UpdateMany(many, withDecay, withoutDecay);
            foreach (var t in single) AdamWKernel.Update(t.Param, t.Grad, t.M, t.V, t.Decay ? withDecay : withoutDecay, t.Bf16Copy);
            for (int i = 0; i < count; i++)
            {
                var (a, b, h) = (many[i], single[i], hosts[i]);
                string what = $"{mode} tensor {i}/{count} n={h.P.Length} shadow={h.Shadow} decay={h.Decay}";
                Assert.True(SameBits(a.Param, b.Param) && SameBits(a.M, b.M) && SameBits(a.V, b.V) && SameBits(a.Bf16Copy, b.Bf16Copy),
                    $"{what}: multi-tensor and per-tensor updates differ");
                double[] p64 = Array.ConvertAll(h.P, x => (double)x), m64 = Array.ConvertAll(h.M, x => (double)x), v64 = Array.ConvertAll(h.V, x => (double)x);
                // One step from this state: StateTolerance (argued for six steps) covers it with room to spare.
                AdamWKernel.Reference.Step(p64, Array.ConvertAll(h.G, x => (double)x), m64, v64, step, lr, o.Beta1, o.Beta2, o.Eps,
                    h.Decay ? o.WeightDecay : 0, o.Decoupled);
                var (p, m, v) = (a.Param.ToFloatArray(), a.M.ToFloatArray(), a.V.ToFloatArray());
                var copy = a.Bf16Copy?.ToBf16Array();
                for (int j = 0; j < p.Length; j++)
                {
                    Assert.True(Close(p[j], p64[j]) && Close(m[j], m64[j]) && Close(v[j], v64[j]),
                        $"{what} [{j}]: p {p[j]} vs {p64[j]}, m {m[j]} vs {m64[j]}, v {v[j]} vs {v64[j]}");
                    if (copy is not null) Assert.True(copy[j] == BFloat16.FromFloat(p[j]), $"{what} [{j}]: shadow is not round(p)");
                }
            }
        }
        finally
        {
            foreach (var t in owned) t.Dispose();
        }
    }

    [Fact]
    public void One_update_is_the_float32_formula_bit_for_bit()
    {
        // The formula as written in the kernel (fp32, this order), replayed on the host: the CPU accelerator's float32
        // arithmetic is .NET's, so the bits must agree. (This also held for the former per-tensor kernel: the
        // multi-tensor one did not change a bit.)
        var dev = TestDevice.Get();
        Assert.SkipWhen(dev.IsCuda, "a float32 host replay equals only the CPU accelerator's arithmetic bitwise");
        var rng = new Random(5);
        foreach (bool decoupled in new[] { false, true })
        {
            var h = RandomParameter(rng) with { Shadow = true };
            var owned = new List<Tensor>();
            try
            {
                var t = Upload(dev, h, "p", owned);
                var c = AdamWKernel.Coefficients.For(3, 1e-2f, 0.9f, 0.999f, 1e-8f, 0.1f, decoupled);
                AdamWKernel.Update(t.Param, t.Grad, t.M, t.V, c, t.Bf16Copy);
                var (gp, gm, gv, gc) = (t.Param.ToFloatArray(), t.M.ToFloatArray(), t.V.ToFloatArray(), t.Bf16Copy!.ToBf16Array());
                for (int i = 0; i < h.P.Length; i++)
                {
                    float p = h.P[i];
                    float g = h.G[i] + c.L2 * p;
                    float m = h.M[i];
                    m += c.OneMinusBeta1 * (g - m);
                    float v = c.Beta2 * h.V[i] + c.OneMinusBeta2 * g * g;
                    float updated = p * c.DecayFactor - c.StepSize * m / (MathF.Sqrt(v) * c.InvSqrtBias2 + c.Eps);
                    Assert.True(BitConverter.SingleToInt32Bits(updated) == BitConverter.SingleToInt32Bits(gp[i])
                                && BitConverter.SingleToInt32Bits(m) == BitConverter.SingleToInt32Bits(gm[i])
                                && BitConverter.SingleToInt32Bits(v) == BitConverter.SingleToInt32Bits(gv[i])
                                && BFloat16.FromFloat(updated) == gc[i], $"decoupled={decoupled} [{i}]");
                }
            }
            finally
            {
                foreach (var t in owned) t.Dispose();
            }
        }
    }

    [Fact]
    public void A_step_over_53_parameters_takes_four_launches()
    {
        // The rtx5090 preset's parameter count: ⌈53/16⌉ launches instead of one per parameter.
        var dev = TestDevice.Get();
        var rng = new Random(6);
        var ps = Enumerable.Range(0, 53).Select(i => NewParameter(dev, GradCheck.RandomValues(rng, 1 + i % 5), $"p{i}")).ToArray();
        try
        {
            using var opt = new AdamW(ps, new AdamWOptions(WeightDecay: 0.1f), p => p.Name.EndsWith('3'));
            opt.Step(1e-3f); // loads the kernel before counting
            using var launches = new LaunchCounter(dev);
            opt.Step(1e-3f);
            Assert.Equal(4, launches["adamw.update"]);
            Assert.Equal(4, launches.Total);
        }
        finally
        {
            foreach (var p in ps) p.Dispose();
        }
    }

    [Fact]
    public void An_empty_list_launches_nothing()
    {
        var dev = TestDevice.Get();
        var c = AdamWKernel.Coefficients.For(1, 1e-3f, 0.9f, 0.999f, 1e-8f, 0f, true);
        using var launches = new LaunchCounter(dev);
        AdamWKernel.UpdateMany([], c, c);
        Assert.Equal(0, launches.Total);
    }

    [Fact]
    public void UpdateMany_rejects_a_bad_tensor_by_op_and_name_before_writing_anything()
    {
        var dev = TestDevice.Get();
        using var other = ComputeDevice.Create(DeviceKind.Cpu);
        var rng = new Random(7);
        var c = AdamWKernel.Coefficients.For(1, 1e-3f, 0.9f, 0.999f, 1e-8f, 0f, true);
        var owned = new List<Tensor>();
        try
        {
            // 17 good entries (more than one launch) and a bad one last: nothing may be updated.
            var good = Enumerable.Range(0, 17).Select(i => Upload(dev, RandomParameter(rng) with { Shadow = false }, $"w{i}", owned)).ToArray();
            var before = good[0].Param.ToRawArray();
            var bad = Upload(dev, RandomParameter(rng) with { Shadow = false }, "blocks.0.bias", owned);
            var shape = bad.Param.Shape;
            Tensor Own(Tensor t)
            {
                owned.Add(t);
                return t;
            }
            var cases = new (AdamWKernel.ParameterTensors Entry, string Role)[]
            {
                (bad with { Grad = Own(Tensor.Zeros(dev, shape, DType.BF16, MemoryCategory.Gradients, "g16")) }, "gradient"),
                (bad with { M = Own(Tensor.Zeros(dev, new Shape((int)shape.Numel + 1), DType.F32, MemoryCategory.OptimizerState, "m+1")) }, "first moment"),
                (bad with { V = Own(Tensor.Zeros(other, shape, DType.F32, MemoryCategory.OptimizerState, "v elsewhere")) }, "second moment"),
                (bad with { Bf16Copy = Own(Tensor.Zeros(dev, shape, DType.F32, MemoryCategory.Parameters, "copy32")) }, "bf16 copy"),
                (bad with { Param = Own(Tensor.Zeros(dev, shape, DType.BF16, MemoryCategory.Parameters, "p16")) }, "parameter"),
                (bad with { Param = Own(Tensor.Zeros(other, shape, DType.F32, MemoryCategory.Parameters, "p elsewhere")) }, "parameter"),
            };
            foreach (var (entry, role) in cases)
            {
                var e = Assert.Throws<ShapeException>(() => AdamWKernel.UpdateMany([.. good, entry], c, c));
                Assert.Equal("adamw", e.Op);
                Assert.Contains("tensor 17 (blocks.0.bias)", e.Message);
                Assert.Contains(role, e.Message);
            }
            Assert.Equal(before, good[0].Param.ToRawArray());
        }
        finally
        {
            foreach (var t in owned) t.Dispose();
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
