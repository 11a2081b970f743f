using FsCheck;
using FsCheck.Xunit;
using Memopt.Autograd;
using Memopt.Kernels;
using Memopt.Model;
using Memopt.Tensors;
using Memopt.Tests.Harness;

namespace Memopt.Tests.Kernels;

public class FlashAttentionTests
{
    // Errors are max|got − want| / max|want| per tensor (y, L, and each of dq, dk, dv), against the float64 reference
    // evaluated on the same (float32- or bfloat16-exact) inputs.
    // float32: every output is a float32 dot product of ≤ 64 terms, an exp and a running rescale (forward), or a sum of
    // ≤ T such products (backward). Worst seen over 190 random cases of the property's shapes on both paths: y 4.8e-7,
    // gradients 1.1e-5 (the portable path, whose dq and dk sum serially over up to 37 keys). 1e-4 leaves ~10x over float32
    // rounding, while a wrong mask, scale or tile edge is O(1e-1) or more.
    private const double F32Tolerance = 1e-4;
    // bfloat16 storage: y is rounded to bf16 on store (≤ 2⁻⁹ ≈ 2e-3 of each element; worst seen 2.3e-3 of max|y|), and
    // a bf16 d(qkv) rounds prior + gradient once (≤ 2⁻⁹ of it; worst seen 6.8e-3 of max|gradient| with a prior of the
    // gradient's scale). The backward's D = Σ dy·y reads the rounded y, as FlashAttention-2 does; the reference does the
    // same (against exact attention that rounding alone reached 3e-2 where dS cancels, e.g. small windows), so the
    // comparison isolates the kernels. 1.5e-2 is ~8 × 2⁻⁹; a wrong mask or a bf16 rounding of accumulators exceeds it.
    private const double Bf16Tolerance = 1.5e-2;
    // The log-sum-exp is float32 in both dtypes, measured against max|L| + 1 (the scale of the scores it summarizes);
    // worst seen 2.5e-7.
    private const double LseTolerance = 1e-5;

    private static readonly int[] AwkwardT = [1, 2, 3, 7, 16, 17, 31, 37];
    private static readonly int[] HeadDims = [16, 32, 48, 64];

    /// <summary>Window by case: none, 1, strictly inside (1 &lt; W &lt; T), exactly T, beyond T.</summary>
    private static int? Window(int mode, int t, Random rng) => mode switch
    {
        0 => null,
        1 => 1,
        2 => t > 2 ? rng.Next(2, t) : 1,
        3 => t,
        _ => t + 5,
    };

    private static double[] F64(float[] v) => v.Select(e => (double)e).ToArray();

    /// <summary>Columns [which·C, (which+1)·C) of every row of a [.., 3C] array: the q (0), k (1) or v (2) part.</summary>
    private static double[] Part(double[] qkv, int c, int which)
    {
        int rows = qkv.Length / (3 * c);
        var part = new double[rows * c];
        for (int r = 0; r < rows; r++) Array.Copy(qkv, (long)r * 3 * c + which * c, part, (long)r * c, c);
        return part;
    }

    private static float[] RoundBf16(float[] v) => v.Select(BFloat16.Round).ToArray();

    internal sealed record Errors(double Y, double Lse, double Dq, double Dk, double Dv)
    {
        public double MaxGradient => Math.Max(Dq, Math.Max(Dk, Dv));
        public override string ToString() => $"y {Y:E2}, lse {Lse:E2}, dq {Dq:E2}, dk {Dk:E2}, dv {Dv:E2}";
    }

    /// <summary>
    /// Runs the kernels directly on qkv (dtype <paramref name="dtype"/>), dy and a d(qkv) that already holds a prior
    /// gradient (so += is checked), and measures y, L and the three gradient parts against the float64 reference.
    /// </summary>
    internal static Errors Measure(int batch, int heads, int t, int hd, int? window, int seed, DType dtype = DType.F32,
        DType dyType = DType.F32, DType gradType = DType.F32, double spread = 2)
    {
        var dev = TestDevice.Get();
        var rng = new Random(seed);
        int c = heads * hd;
        var shape = new Shape(batch, t, 3 * c);
        var yShape = new Shape(batch, t, c);
        var x = GradCheck.RandomValues(rng, shape.Numel, spread);
        var dy = GradCheck.RandomValues(rng, yShape.Numel);
        var prior = GradCheck.RandomValues(rng, shape.Numel, 0.1);
        if (dtype == DType.BF16) x = RoundBf16(x);
        if (dyType == DType.BF16) dy = RoundBf16(dy);
        if (gradType == DType.BF16) prior = RoundBf16(prior);

        using var qkv = Tensor.FromHost(dev, x, shape, MemoryCategory.Data, "qkv", dtype);
        using var y = Tensor.Empty(dev, yShape, dtype, MemoryCategory.Data, "y");
        using var lse = Tensor.Empty(dev, new Shape(batch, heads, t), DType.F32, MemoryCategory.Data, "lse");
        using var dyT = Tensor.FromHost(dev, dy, yShape, MemoryCategory.Data, "dy", dyType);
        using var dqkv = Tensor.FromHost(dev, prior, shape, MemoryCategory.Data, "dqkv", gradType);
        FlashAttention.Forward(qkv, heads, window, y, lse);
        FlashAttention.Backward(qkv, y, lse, dyT, heads, window, dqkv);

        var (wantY, wantLse) = FlashAttention.Reference.Forward(F64(x), batch, t, heads, window);
        var gotY = F64(y.ToFloatArray());
        // bf16: D = Σ dy·y reads the rounded y the kernel stored (as FlashAttention-2 does): the reference does the same.
        var wantGrad = FlashAttention.Reference.Backward(F64(x), F64(dy), batch, t, heads, window, dtype == DType.BF16 ? gotY : null);
        var got = dqkv.ToFloatArray();
        var grad = got.Select((g, i) => (double)g - prior[i]).ToArray();
        // A bf16 d(qkv) stores prior + gradient rounded once: up to 2⁻⁸·|prior + gradient| that is the storage's, not
        // the kernel's. Measured against max|gradient| alone it reached 3.6e-2 where a short row's gradient is small
        // beside its prior (T 2, window 2), so that much of each element's difference is allowed before the ratio.
        var allowance = prior.Select((v, i) => gradType == DType.BF16 ? Math.Abs(v + wantGrad[i]) / 256 : 0).ToArray();
        // L's scale: the largest |score| it summarizes is at most |L| + log T, so measure against max|L| + 1.
        var gotLse = F64(lse.ToFloatArray());
        double lseError = gotLse.Zip(wantLse, (a, b) => Math.Abs(a - b)).Max() / (wantLse.Max(Math.Abs) + 1);
        return new Errors(GradCheck.RelativeError(gotY, wantY), lseError,
            GradCheck.RelativeError(Part(grad, c, 0), Part(wantGrad, c, 0), Part(allowance, c, 0)),
            GradCheck.RelativeError(Part(grad, c, 1), Part(wantGrad, c, 1), Part(allowance, c, 1)),
            GradCheck.RelativeError(Part(grad, c, 2), Part(wantGrad, c, 2), Part(allowance, c, 2)));
    }

    private static void CheckBothPaths(int batch, int heads, int t, int hd, int? window, int seed, DType dtype = DType.F32,
        DType dyType = DType.F32, DType gradType = DType.F32, double spread = 2)
    {
        double tolerance = dtype == DType.BF16 || dyType == DType.BF16 || gradType == DType.BF16 ? Bf16Tolerance : F32Tolerance;
        KernelPaths.ForEach(() =>
        {
            var e = Measure(batch, heads, t, hd, window, seed, dtype, dyType, gradType, spread);
            Assert.True(e.Y <= tolerance && e.Lse <= LseTolerance && e.MaxGradient <= tolerance,
                $"B={batch} H={heads} T={t} hd={hd} W={window} {dtype.Name()} dy {dyType.Name()} grad {gradType.Name()}: {e}");
        });
    }

    [Property(MaxTest = 10)]
    public void Forward_and_gradients_match_the_float64_reference(PositiveInt b, PositiveInt h, PositiveInt tPick, PositiveInt hdPick, PositiveInt windowMode, int seed)
    {
        var rng = new Random(seed);
        int t = AwkwardT[tPick.Get % AwkwardT.Length];
        int hd = HeadDims[hdPick.Get % HeadDims.Length];
        int heads = h.Get % 2 + 1;
        CheckBothPaths(b.Get % 2 + 1, heads, t, hd, Window(windowMode.Get % 5, t, rng), seed);
    }

    /// <summary>A case FsCheck found: T 2, window 2, bf16 gradients small beside their prior (the storage's rounding).</summary>
    [Fact]
    public void Bf16_gradients_of_a_two_token_window_match_within_the_storage_rounding() =>
        CheckBothPaths(1, 2, 2, 32, 2, 0, DType.BF16, DType.BF16, DType.BF16);

    [Property(MaxTest = 5)]
    public void Bf16_inputs_match_the_float64_reference_within_bf16_rounding(PositiveInt h, PositiveInt tPick, PositiveInt hdPick, PositiveInt windowMode, bool bf16Grads, int seed)
    {
        var rng = new Random(seed);
        int t = AwkwardT[tPick.Get % AwkwardT.Length];
        int hd = HeadDims[hdPick.Get % HeadDims.Length];
        var gradType = bf16Grads ? DType.BF16 : DType.F32;
        CheckBothPaths(1, h.Get % 2 + 1, t, hd, Window(windowMode.Get % 5, t, rng), seed, DType.BF16, gradType, gradType);
    }

    [Theory]
    [InlineData(1, 1, 70, 32, null)]  // more than one 64-query tile on CUDA (four 16-tiles on the CPU), with a tail
    [InlineData(1, 1, 70, 32, 20)]    // a window that skips whole key tiles
    [InlineData(1, 1, 33, 128, null)] // the largest head dim: two 64-dim chunks on CUDA
    [InlineData(2, 3, 19, 24, 5)]     // a head dim that is no multiple of the dim slices
    [InlineData(1, 2, 5, 8, 2)]       // head dims below 16 work too
    public void Larger_shapes_and_edge_head_dims_match(int batch, int heads, int t, int hd, int? window) =>
        CheckBothPaths(batch, heads, t, hd, window, t * 7 + hd);

    /// <summary>
    /// The passes around the bf16 backward kernels (D = rowsum(dy ∘ y) and adding the fp32 dq scratch into d(qkv)) a quad
    /// at a time where y, dy and d(qkv) are aligned give d(qkv) bit for bit as the scalar passes do on views one element
    /// off alignment.
    /// </summary>
    [Fact]
    public void Quad_delta_and_dq_passes_match_the_scalar_ones_bit_for_bit()
    {
        var dev = TestDevice.Get();
        const int batch = 2, heads = 2, t = 9, hd = 8, c = heads * hd;
        var rng = new Random(29);
        using var scope = Launch.UsePath(KernelPath.Cooperative);
        using var qkv = Tensor.FromHost(dev, GradCheck.RandomValues(rng, batch * t * 3 * c), new Shape(batch, t, 3 * c), MemoryCategory.Data, "qkv", DType.BF16);
        using var lse = Tensor.Empty(dev, new Shape(batch, heads, t), DType.F32, MemoryCategory.Data, "lse");
        using var y0 = Tensor.Empty(dev, new Shape(batch, t, c), DType.BF16, MemoryCategory.Data, "y");
        FlashAttention.Forward(qkv, heads, null, y0, lse);
        float[] yValues = y0.ToFloatArray(), dyValues = GradCheck.RandomValues(rng, batch * t * c), prior = GradCheck.RandomValues(rng, batch * t * 3 * c);
        float[] Run(int offset, string delta, string addDq)
        {
            using var y = OffsetTensor.FromHost(dev, yValues, y0.Shape, offset, DType.BF16);
            using var dy = OffsetTensor.FromHost(dev, dyValues, y0.Shape, offset, DType.BF16);
            using var dqkv = OffsetTensor.FromHost(dev, prior, qkv.Shape, offset, DType.BF16);
            using (var launches = new LaunchCounter(dev))
            {
                FlashAttention.Backward(qkv, y, lse, dy, heads, null, dqkv);
                Assert.Equal(1, launches[delta]);
                Assert.Equal(1, launches[addDq]);
                return dqkv.ToFloatArray();
            }
        }
        Assert.Equal(Run(1, "flash_attention.delta", "flash_attention.add_dq_bf16"), Run(0, "flash_attention.delta_bf16x4", "flash_attention.add_dq_bf16x4"));
    }

    [Fact]
    public void Huge_scores_stay_finite_because_the_running_max_is_subtracted() =>
        // Inputs of ±10 at hd = 16: scaled scores have a standard deviation of ~33 and reach beyond 88, where float32
        // exp overflows without the max subtraction (worst error seen 1.6e-6).
        CheckBothPaths(1, 2, 17, 16, null, 5, spread: 10);

    [Fact]
    public void Window_of_one_returns_v_exactly()
    {
        KernelPaths.ForEach(() =>
        {
            var dev = TestDevice.Get();
            var shape = new Shape(2, 9, 3 * 2 * 16);
            var x = GradCheck.RandomValues(new Random(3), shape.Numel, 3);
            using var qkv = new Var(Tensor.FromHost(dev, x, shape, MemoryCategory.Data, "qkv"));
            using var y = Ops.FlashAttention(qkv, 2, 1);
            var got = y.Value.ToFloatArray();
            var v = Part(F64(x), 32, 2);
            Assert.Equal(v, F64(got));
        });
    }

    /// <summary>The float64 reference's backward is itself checked against central differences of its forward.</summary>
    [Fact]
    public void Reference_backward_matches_finite_differences()
    {
        const int batch = 1, heads = 2, t = 5, hd = 3;
        var rng = new Random(11);
        var x = F64(GradCheck.RandomValues(rng, batch * t * 3 * heads * hd, 2));
        var dy = F64(GradCheck.RandomValues(rng, batch * t * heads * hd));
        foreach (int? window in new int?[] { null, 2 })
        {
            var analytic = FlashAttention.Reference.Backward(x, dy, batch, t, heads, window);
            var fd = GradCheck.FiniteDifference(v => FlashAttention.Reference.Forward(v[0], batch, t, heads, window).Y, [x], 0, dy, 1e-6);
            double error = GradCheck.RelativeError(analytic, fd);
            Assert.True(error < 1e-7, $"W={window}: reference backward vs finite differences {error:E2}");
        }
    }

    /// <summary>
    /// The op through the tape against the naive path's ops (select heads, Q·Kᵀ, causal softmax, P·V, merge heads) on the
    /// same device and the same mask: outputs and d(qkv) agree to float32 rounding of two different summation orders.
    /// </summary>
    [Theory]
    [InlineData(2, 2, 13, 16, null)]
    [InlineData(1, 3, 21, 32, 6)]
    [InlineData(1, 1, 17, 48, 1)]
    public void Equals_the_naive_attention_ops_with_the_same_mask(int batch, int heads, int t, int hd, int? window)
    {
        KernelPaths.ForEach(() =>
        {
            var dev = TestDevice.Get();
            var rng = new Random(t + hd);
            var shape = new Shape(batch, t, 3 * heads * hd);
            var x = GradCheck.RandomValues(rng, shape.Numel, 2);
            var dy = GradCheck.RandomValues(rng, batch * t * heads * hd);
            (float[] Y, float[] G) Run(bool flash)
            {
                using var qkv = new Var(Tensor.FromHost(dev, x, shape, MemoryCategory.Data, "qkv"), requiresGrad: true);
                using var seed = Tensor.FromHost(dev, dy, new Shape(batch, t, heads * hd), MemoryCategory.Data, "dy");
                float[] y;
                using (var tape = new Tape())
                {
                    Var output;
                    if (flash) output = Ops.FlashAttention(qkv, heads, window);
                    else
                        using (var perHead = NaiveAttention.Forward(qkv, heads, window, 0f, ForwardContext.Evaluation, 0))
                            output = Ops.MergeHeads(perHead);
                    using (output)
                    {
                        y = output.Value.ToFloatArray();
                        tape.Backward(output, seed);
                    }
                }
                var g = qkv.Grad!.ToFloatArray();
                qkv.Grad.Dispose();
                return (y, g);
            }
            var naive = Run(false);
            var flashResult = Run(true);
            double yError = GradCheck.RelativeError(F64(flashResult.Y), F64(naive.Y));
            double gError = Enumerable.Range(0, 3).Max(part => GradCheck.RelativeError(Part(F64(flashResult.G), heads * hd, part), Part(F64(naive.G), heads * hd, part)));
            Assert.True(yError <= F32Tolerance && gError <= F32Tolerance, $"flash vs naive: y {yError:E2}, d(qkv) {gError:E2}");
        });
    }

    [Fact]
    public void Saves_only_qkv_y_and_the_log_sum_exp_and_allocates_no_scores()
    {
        // Its own device: the shared one's tracker also counts other tests.
        using var dev = ComputeDevice.Create(DeviceKind.Cpu);
        const int batch = 2, heads = 3, t = 11, hd = 16;
        var shape = new Shape(batch, t, 3 * heads * hd);
        using var qkv = new Var(Tensor.FromHost(dev, GradCheck.RandomValues(new Random(1), shape.Numel), shape, MemoryCategory.Activations, "qkv"), requiresGrad: true);
        var tracker = dev.Tracker;
        tracker.ResetPeaks();
        using (var tape = new Tape())
        {
            using var y = Ops.FlashAttention(qkv, heads, null);
            Assert.Equal(new Shape(batch, t, heads * hd), y.Shape);
            var node = Assert.Single(tape.Nodes);
            Assert.Equal(3, node.Saved.Length);
            Assert.Same(qkv.Value.Storage, node.Saved[0].Storage);
            Assert.Same(y.Value.Storage, node.Saved[1].Storage);
            Assert.Equal(new Shape(batch, heads, t), node.Saved[2].Shape);
            Assert.Equal(MemoryCategory.SavedForBackward, node.Saved[2].Category);
            Assert.Equal(0, tracker.PeakOf(MemoryCategory.AttentionScores));
            using var seed = Tensor.Zeros(dev, y.Shape, DType.F32, MemoryCategory.Data, "seed");
            tape.Backward(y, seed);
        }
        Assert.Equal(0, tracker.PeakOf(MemoryCategory.AttentionScores));
        // The backward's scratch is O(B·H·T): D only (float32 d(qkv) takes dq by atomics, no scratch).
        Assert.True(tracker.PeakOf(MemoryCategory.Workspace) <= batch * heads * t * 4L, $"workspace peak {tracker.PeakOf(MemoryCategory.Workspace)} B");
        qkv.Grad!.Dispose();
    }

    [Fact]
    public void Bad_arguments_name_the_op_and_the_shape()
    {
        var dev = TestDevice.Get();
        using var rank2 = new Var(Tensor.Zeros(dev, new Shape(4, 12), DType.F32, MemoryCategory.Data, "rank2"));
        using var qkv = new Var(Tensor.Zeros(dev, new Shape(1, 4, 12), DType.F32, MemoryCategory.Data, "qkv"));
        using var wide = new Var(Tensor.Zeros(dev, new Shape(1, 2, 3 * 2 * 129), DType.F32, MemoryCategory.Data, "wide"));
        using var ints = new Var(Tensor.Zeros(dev, new Shape(1, 4, 12), DType.I32, MemoryCategory.Data, "ints"));
        long live = dev.Tracker.Live;
        var e = Assert.Throws<ShapeException>(() => Ops.FlashAttention(rank2, 1, null));
        Assert.Contains("flash_attention", e.Message);
        Assert.Contains("[4, 12]", e.Message);
        e = Assert.Throws<ShapeException>(() => Ops.FlashAttention(qkv, 5, null));
        Assert.Contains("heads = 5", e.Message);
        Assert.Contains("[1, 4, 12]", e.Message);
        e = Assert.Throws<ShapeException>(() => Ops.FlashAttention(qkv, 2, 0));
        Assert.Contains("window = 0", e.Message);
        e = Assert.Throws<ShapeException>(() => Ops.FlashAttention(wide, 2, null));
        Assert.Contains("head_dim 129", e.Message);
        e = Assert.Throws<ShapeException>(() => Ops.FlashAttention(ints, 2, null));
        Assert.Contains("int32", e.Message);
        Assert.Equal(live, dev.Tracker.Live);
    }
}
