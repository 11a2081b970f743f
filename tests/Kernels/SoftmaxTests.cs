using FsCheck;
using FsCheck.Xunit;
using Memopt.Autograd;
using Memopt.Kernels;
using Memopt.Tensors;
using Memopt.Tests.Harness;

namespace Memopt.Tests.Kernels;

public class SoftmaxTests
{
    // Forward, relative to the largest probability: each is one float32 exp (a few ulps) times the reciprocal of a
    // float32 sum of ≤ T terms; worst seen over 2000 random cases 1.6e-7. 2e-6 leaves a 10x margin.
    private const double ForwardTolerance = 2e-6;
    // Backward: dx = s·y ⊙ (dy − Σ dy·y) cancels terms of size s·|dy| (for T = 2 it is s·y₀y₁(dy₀ − dy₁), tiny when
    // dy₀ ≈ dy₁), so the float32 error is measured against that size, s·max|dy|, not against dx itself (a relative
    // measure reached 7.6e-3 on such a case, with an absolute error of a few ulps). Worst seen on this scale over
    // 2000 random cases: 1.6e-7; 2e-6 is ~30 ulps of the terms, while a wrong formula or mask is O(1).
    private const double GradientTolerance = 2e-6;

    private static readonly int[] AwkwardT = [1, 2, 7, 13];

    /// <summary>Window choice by case: none, 1, strictly inside (1 &lt; W &lt; T), exactly T, beyond T.</summary>
    private static int? Window(int mode, int t, Random rng) => mode switch
    {
        0 => null,
        1 => 1,
        2 => t > 2 ? rng.Next(2, t) : 1,
        3 => t,
        _ => t + 3,
    };

    private static double[] F64(float[] v) => v.Select(e => (double)e).ToArray();

    /// <summary>
    /// Forward through <see cref="GradCheck"/>; the gradient as max|dx − float64 central differences| over s·max|dy|
    /// (see <see cref="GradientTolerance"/>).
    /// </summary>
    private static void CheckSoftmax(int n, int t, float scale, int? window, int seed, double spread = 3)
    {
        KernelPaths.ForEach(() =>
        {
            var dev = TestDevice.Get();
            var rng = new Random(seed);
            var shape = new Shape(n, t, t);
            var x = GradCheck.RandomValues(rng, shape.Numel, spread);
            GradCheck.Reference reference = v => Softmax.Reference.Forward(v[0], t, scale, window);
            var r = GradCheck.Run(dev, [(x, shape)], [false], v => Ops.CausalSoftmax(v[0], scale, window), reference, seed);

            var dyValues = GradCheck.RandomValues(rng, shape.Numel);
            double[] dx;
            using (var xv = new Var(Tensor.FromHost(dev, x, shape, MemoryCategory.Data, "x"), requiresGrad: true))
            using (var tape = new Tape())
            using (var y = Ops.CausalSoftmax(xv, scale, window))
            using (var dy = Tensor.FromHost(dev, dyValues, shape, MemoryCategory.Data, "dy"))
            {
                tape.Backward(y, dy);
                dx = F64(xv.Grad!.ToFloatArray());
                xv.Grad.Dispose();
            }
            var fd = GradCheck.FiniteDifference(reference, [F64(x)], 0, F64(dyValues), 1e-6);
            double gradientError = dx.Select((g, i) => Math.Abs(g - fd[i])).Max() / (scale * dyValues.Max(Math.Abs) + 1e-30);
            Assert.True(r.ForwardError <= ForwardTolerance && gradientError <= GradientTolerance,
                $"N={n} T={t} W={window} scale={scale}: forward {r.ForwardError:E2}, gradient {gradientError:E2} of s·max|dy|");
        });
    }

    [Property(MaxTest = 40)]
    public void Causal_softmax_matches_reference_and_finite_differences(PositiveInt n, PositiveInt tPick, PositiveInt windowMode, int seed)
    {
        var rng = new Random(seed);
        int t = tPick.Get % 2 == 0 ? AwkwardT[tPick.Get / 2 % AwkwardT.Length] : tPick.Get % 16 + 1;
        int? window = Window(windowMode.Get % 5, t, rng);
        float scale = (float)(0.125 + rng.NextDouble() * 2);
        CheckSoftmax(n.Get % 3 + 1, t, scale, window, seed);
    }

    [Theory]
    [InlineData(33, null)]  // rows longer than the CPU group (16): several columns per thread
    [InlineData(33, 1)]     // each query sees only itself: y is the identity pattern
    [InlineData(33, 17)]    // window longer than the group, rows shorter than it at the start
    [InlineData(13, 7)]
    [InlineData(2, null)]   // the T = 2 cancellation case
    public void Causal_softmax_matches_for_long_rows_and_windows(int t, int? window) =>
        CheckSoftmax(2, t, 0.5f, window, t * 31 + (window ?? 0));

    [Theory]
    [InlineData(9, null)]
    [InlineData(9, 1)]
    [InlineData(9, 4)]
    [InlineData(9, 100)]
    public void Masked_entries_are_exactly_zero_and_visible_rows_sum_to_one(int t, int? window)
    {
        KernelPaths.ForEach(() =>
        {
            var dev = TestDevice.Get();
            var rng = new Random(t);
            var shape = new Shape(3, t, t);
            using var x = Tensor.FromHost(dev, GradCheck.RandomValues(rng, shape.Numel, 5), shape, MemoryCategory.Data, "x");
            using var y = Tensor.Empty(dev, shape, DType.F32, MemoryCategory.Data, "y");
            Softmax.Forward(x, y, 1f, window);
            var p = y.ToFloatArray();
            int w = window ?? t;
            for (int row = 0; row < 3 * t; row++)
            {
                int i = row % t;
                double sum = 0;
                for (int j = 0; j < t; j++)
                {
                    float v = p[row * t + j];
                    if (Softmax.Reference.Visible(i, j, w)) { Assert.True(v > 0f, $"row {row} col {j} visible but {v}"); sum += v; }
                    else Assert.True(v == 0f, $"row {row} col {j} masked but {v}");
                }
                Assert.True(Math.Abs(sum - 1) < 1e-6, $"row {row} sums to {sum}");
            }
            if (window == 1) Assert.All(Enumerable.Range(0, 3 * t), row => Assert.Equal(1f, p[row * t + row % t]));
        });
    }

    [Fact]
    public void Huge_scores_stay_finite_because_the_row_max_is_subtracted()
    {
        KernelPaths.ForEach(() =>
        {
            var dev = TestDevice.Get();
            const int t = 5;
            var values = Enumerable.Range(0, t * t).Select(i => 1e4f + 10f * (i % t)).ToArray();
            using var x = Tensor.FromHost(dev, values, new Shape(1, t, t), MemoryCategory.Data, "x");
            using var y = Tensor.Empty(dev, x.Shape, DType.F32, MemoryCategory.Data, "y");
            Softmax.Forward(x, y, 1f);
            var want = Softmax.Reference.Forward(values.Select(v => (double)v).ToArray(), t);
            var got = y.ToFloatArray().Select(v => (double)v).ToArray();
            Assert.True(GradCheck.RelativeError(got, want) <= ForwardTolerance);
        });
    }

    [Fact]
    public void In_place_forward_equals_out_of_place()
    {
        KernelPaths.ForEach(() =>
        {
            var dev = TestDevice.Get();
            var shape = new Shape(2, 11, 11);
            var values = GradCheck.RandomValues(new Random(2), shape.Numel, 4);
            using var x = Tensor.FromHost(dev, values, shape, MemoryCategory.Data, "x");
            using var y = Tensor.Empty(dev, shape, DType.F32, MemoryCategory.Data, "y");
            Softmax.Forward(x, y, 0.7f, 5);
            Softmax.Forward(x, x, 0.7f, 5);
            Assert.Equal(y.ToFloatArray(), x.ToFloatArray());
        });
    }

    [Fact]
    public void Output_is_tracked_as_attention_scores_and_only_it_is_saved()
    {
        var dev = TestDevice.Get();
        var shape = new Shape(2, 6, 6);
        using var x = new Var(Tensor.FromHost(dev, GradCheck.RandomValues(new Random(1), shape.Numel), shape, MemoryCategory.Data, "x"), requiresGrad: true);
        using (Tape.NoGrad())
        {
            using var probe = Ops.CausalSoftmax(x);
            Assert.Equal(MemoryCategory.AttentionScores, probe.Value.Category);
        }
        long saved = dev.Tracker.LiveOf(MemoryCategory.SavedForBackward);
        long scores = dev.Tracker.LiveOf(MemoryCategory.AttentionScores);
        using var tape = new Tape();
        using var y = Ops.CausalSoftmax(x, 0.5f, 3);
        // The saved probabilities stay in their own category (the tape retags only plain activations), so the
        // report shows exactly the memory flash attention removes; nothing else is saved.
        Assert.Equal(MemoryCategory.AttentionScores, y.Value.Category);
        Assert.Equal(y.Value.Bytes, dev.Tracker.LiveOf(MemoryCategory.AttentionScores) - scores);
        Assert.Equal(saved, dev.Tracker.LiveOf(MemoryCategory.SavedForBackward));
        var node = Assert.Single(tape.Nodes);
        Assert.Same(y.Value.Storage, Assert.Single(node.Saved).Storage);
    }

    [Fact]
    public void Bad_arguments_name_the_op_and_the_shape()
    {
        var dev = TestDevice.Get();
        using var rect = new Var(Tensor.Zeros(dev, new Shape(2, 3, 4), DType.F32, MemoryCategory.Data, "rect"));
        using var square = new Var(Tensor.Zeros(dev, new Shape(2, 4, 4), DType.F32, MemoryCategory.Data, "square"));
        long live = dev.Tracker.Live;
        var e = Assert.Throws<ShapeException>(() => Ops.CausalSoftmax(rect));
        Assert.Contains("causal_softmax", e.Message);
        Assert.Contains("[2, 3, 4]", e.Message);
        e = Assert.Throws<ShapeException>(() => Ops.CausalSoftmax(square, window: 0));
        Assert.Contains("window = 0", e.Message);
        Assert.Contains("[2, 4, 4]", e.Message);
        e = Assert.Throws<ShapeException>(() => Ops.CausalSoftmax(square, scale: 0f));
        Assert.Contains("scale", e.Message);
        Assert.Equal(live, dev.Tracker.Live);
    }
}
