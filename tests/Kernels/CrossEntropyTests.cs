using FsCheck;
using FsCheck.Xunit;
using Memopt.Autograd;
using Memopt.Kernels;
using Memopt.Tensors;
using Memopt.Tests.Harness;

namespace Memopt.Tests.Kernels;

public class CrossEntropyTests
{
    // Two regimes, because the loss lse − x_t and the gradient p − onehot are differences that cancel when a row is
    // confident (p_t → 1): their float32 error is a few ulps of the logits' scale, whatever the size of the result.
    //
    // Logits in [−1, 1] (no row can be confident: loss ≥ 0.12, |dlogit·count| ≥ 0.07): GradCheck's errors relative
    // to the result's scale. lse, lse − x_t and exp(x − lse) each carry a few ulps (~3e-7 of the scale) and the mean
    // over ≤ 8 rows adds ≤ 8 roundings; float64 central differences (h = 1e-6) are good to ~1e-10. 1e-5 is ≥ 10× that.
    private const double RelativeTolerance = 1e-5;
    // Logits in [−8, 8] (rows confident to p_t ≈ 1 − 1e-7): absolute errors at the natural scales, the loss to
    // 1e-5 (a few ulps of lse ≤ 13 is ~3e-6) and each dlogit to 1e-5/count (p − onehot is at most 1 per row, /count).
    private const double AbsoluteTolerance = 1e-5;

    // Awkward class counts: 1 (loss identically 0), primes, below / at / above the CPU group of 16, not tile multiples.
    private static readonly int[] Vocabularies = [1, 2, 3, 5, 13, 16, 17, 31, 64, 97, 130];

    private static int[] RandomTargets(Random rng, int rows, int vocab, int ignoreIndex, double ignoreFraction) =>
        Enumerable.Range(0, rows).Select(_ => rng.NextDouble() < ignoreFraction ? ignoreIndex : rng.Next(vocab)).ToArray();

    [Property(MaxTest = 30)]
    public void Matches_reference_and_finite_differences(PositiveInt rows, PositiveInt vocabPick, bool smooth, bool ignoreInRange, int seed)
    {
        KernelPaths.ForEach(() =>
        {
            var (n, vocab, smoothing, ignoreIndex) = Case(rows, vocabPick, smooth, ignoreInRange);
            var rng = new Random(seed);
            int[] targets = RandomTargets(rng, n, vocab, ignoreIndex, 0.25);
            var shape = new Shape(n, vocab);
            var dev = TestDevice.Get();
            using var targetTensor = Tensor.FromHost(dev, targets, new Shape(n), MemoryCategory.Data, "targets");
            int count = -1;
            var r = GradCheck.Run(dev, [(GradCheck.RandomValues(rng, shape.Numel, scale: 1), shape)], [true],
                v => Ops.CrossEntropy(v[0], targetTensor, out count, ignoreIndex, smoothing),
                x => [CrossEntropy.Reference.Forward(x[0], targets, vocab, ignoreIndex, smoothing, out _)], seed);
            Assert.True(r.ForwardError <= RelativeTolerance && r.GradientErrors[0] <= RelativeTolerance, $"N={n} V={vocab} eps={smoothing} ignore={ignoreIndex}: {r}");
            Assert.Equal(targets.Count(t => t != ignoreIndex), count);
        });
    }

    [Property(MaxTest = 30)]
    public void Confident_rows_match_reference_and_finite_differences_at_the_logit_scale(PositiveInt rows, PositiveInt vocabPick, bool smooth, bool ignoreInRange, int seed)
    {
        KernelPaths.ForEach(() =>
        {
            var (n, vocab, smoothing, ignoreIndex) = Case(rows, vocabPick, smooth, ignoreInRange);
            var rng = new Random(seed);
            int[] targets = RandomTargets(rng, n, vocab, ignoreIndex, 0.25);
            var logits = GradCheck.RandomValues(rng, (long)n * vocab, scale: 8);
            var dev = TestDevice.Get();
            using var t = Tensor.FromHost(dev, targets, new Shape(n), MemoryCategory.Data, "targets");
            using var x = new Var(Tensor.FromHost(dev, logits, new Shape(n, vocab), MemoryCategory.Data, "logits"), requiresGrad: true);
            using var tape = new Tape();
            using var loss = Ops.CrossEntropy(x, t, out int count, ignoreIndex, smoothing);
            tape.Backward(loss);
            GradCheck.Reference reference = xs => [CrossEntropy.Reference.Forward(xs[0], targets, vocab, ignoreIndex, smoothing, out _)];
            double[][] x64 = [logits.Select(v => (double)v).ToArray()];
            double want = reference(x64)[0], got = loss.Value.ToFloatArray()[0];
            Assert.True(Math.Abs(got - want) <= AbsoluteTolerance, $"N={n} V={vocab} eps={smoothing}: loss {got} vs {want}");
            var fd = GradCheck.FiniteDifference(reference, x64, 0, [1.0], 1e-6);
            var grad = x.Grad!.ToFloatArray();
            double worst = fd.Select((f, i) => Math.Abs(grad[i] - f)).Max();
            Assert.True(worst <= AbsoluteTolerance / Math.Max(count, 1), $"N={n} V={vocab} eps={smoothing} count={count}: worst dlogit error {worst:E2}");
            x.Grad.Dispose();
        });
    }

    private static (int Rows, int Vocab, float Smoothing, int IgnoreIndex) Case(PositiveInt rows, PositiveInt vocabPick, bool smooth, bool ignoreInRange)
    {
        int vocab = Vocabularies[vocabPick.Get % Vocabularies.Length];
        // PyTorch's default −100, or an ignore index that is also a valid class (then that class is never learned).
        return (rows.Get % 8 + 1, vocab, smooth ? 0.1f : 0f, ignoreInRange ? vocab - 1 : -100);
    }

    [Fact]
    public void Large_vocabulary_matches_reference_loss_and_analytic_gradient()
    {
        KernelPaths.ForEach(() =>
        {
            // V above every group size (many elements per thread) with logits spread wide, checked without finite differences.
            const int rows = 3, vocab = 5003;
            var rng = new Random(7);
            var logits = GradCheck.RandomValues(rng, rows * vocab, scale: 20);
            int[] targets = [17, -100, vocab - 1];
            var dev = TestDevice.Get();
            using var t = Tensor.FromHost(dev, targets, new Shape(rows), MemoryCategory.Data, "targets");
            using var x = new Var(Tensor.FromHost(dev, logits, new Shape(rows, vocab), MemoryCategory.Data, "logits"), requiresGrad: true);
            using var tape = new Tape();
            using var loss = Ops.CrossEntropy(x, t, labelSmoothing: 0.1f);
            tape.Backward(loss);
            var x64 = logits.Select(v => (double)v).ToArray();
            double want = CrossEntropy.Reference.Forward(x64, targets, vocab, -100, 0.1f, out _);
            double got = loss.Value.ToFloatArray()[0];
            Assert.True(Math.Abs(got - want) <= AbsoluteTolerance, $"loss {got} vs {want}");
            var wantGrad = CrossEntropy.Reference.Gradient(x64, targets, vocab, -100, 0.1f);
            var gotGrad = x.Grad!.ToFloatArray().Select(v => (double)v).ToArray();
            double err = GradCheck.RelativeError(gotGrad, wantGrad);
            Assert.True(err <= RelativeTolerance, $"gradient error {err:E2}");
            x.Grad.Dispose();
        });
    }

    [Fact]
    public void All_rows_ignored_gives_zero_loss_zero_gradient_and_zero_count()
    {
        KernelPaths.ForEach(() =>
        {
            var dev = TestDevice.Get();
            using var t = Tensor.FromHost(dev, new[] { -100, -100, -100 }, new Shape(3), MemoryCategory.Data, "targets");
            using var x = new Var(Tensor.FromHost(dev, GradCheck.RandomValues(new Random(1), 15), new Shape(3, 5), MemoryCategory.Data, "logits"), requiresGrad: true);
            using var tape = new Tape();
            using var loss = Ops.CrossEntropy(x, t, out int count, labelSmoothing: 0.1f);
            tape.Backward(loss);
            Assert.Equal(0, count);
            Assert.Equal(0f, loss.Value.ToFloatArray()[0]);
            Assert.All(x.Grad!.ToFloatArray(), g => Assert.Equal(0f, g));
            x.Grad.Dispose();
        });
    }

    [Theory]
    [InlineData(5)]   // == V
    [InlineData(9)]
    [InlineData(-1)]  // negative but not the ignore index
    public void Out_of_range_target_throws_naming_op_row_value_and_shapes_and_leaks_nothing(int bad)
    {
        KernelPaths.ForEach(() =>
        {
            var dev = TestDevice.Get();
            using var t = Tensor.FromHost(dev, new[] { 0, -100, bad, 4 }, new Shape(4), MemoryCategory.Data, "targets");
            using var x = new Var(Tensor.Zeros(dev, new Shape(4, 5), DType.F32, MemoryCategory.Data, "logits"), requiresGrad: true);
            long live = dev.Tracker.Live;
            using var tape = new Tape();
            var e = Assert.Throws<ShapeException>(() => Ops.CrossEntropy(x, t));
            Assert.Contains("cross_entropy", e.Message);
            Assert.Contains($"row 2: {bad}", e.Message);
            Assert.Contains("[4, 5]", e.Message);
            Assert.Contains("[4]", e.Message);
            Assert.Equal(live, dev.Tracker.Live);
            Assert.Empty(tape.Nodes);
        });
    }

    [Fact]
    public void Mismatched_targets_shape_and_dtype_name_the_op_and_shapes()
    {
        var dev = TestDevice.Get();
        using var x = new Var(Tensor.Zeros(dev, new Shape(4, 5), DType.F32, MemoryCategory.Data, "logits"));
        using var t3 = Tensor.FromHost(dev, new[] { 0, 1, 2 }, new Shape(3), MemoryCategory.Data, "targets");
        var e = Assert.Throws<ShapeException>(() => Ops.CrossEntropy(x, t3));
        Assert.Contains("cross_entropy", e.Message);
        Assert.Contains("[3]", e.Message);
        Assert.Contains("[4, 5]", e.Message);
        using var tf = Tensor.Zeros(dev, new Shape(4), DType.F32, MemoryCategory.Data, "float targets");
        var e2 = Assert.Throws<ShapeException>(() => Ops.CrossEntropy(x, tf));
        Assert.Contains("int32", e2.Message);
    }

    [Fact]
    public void Batched_logits_take_targets_of_the_leading_shape()
    {
        KernelPaths.ForEach(() =>
        {
            // [B, T, V] logits with [B, T] targets are the same loss as the flattened [B·T, V] with [B·T].
            var dev = TestDevice.Get();
            var rng = new Random(3);
            var logits = GradCheck.RandomValues(rng, 2 * 3 * 7, scale: 3);
            int[] targets = [0, 6, -100, 3, 2, 1];
            using var t = Tensor.FromHost(dev, targets, new Shape(2, 3), MemoryCategory.Data, "targets");
            using var x = new Var(Tensor.FromHost(dev, logits, new Shape(2, 3, 7), MemoryCategory.Data, "logits"));
            using var loss = Ops.CrossEntropy(x, t);
            double want = CrossEntropy.Reference.Forward(logits.Select(v => (double)v).ToArray(), targets, 7, -100, 0, out _);
            Assert.True(Math.Abs(loss.Value.ToFloatArray()[0] - want) <= AbsoluteTolerance);
        });
    }

    [Fact]
    public void Keeps_no_second_rows_by_vocab_tensor()
    {
        // The forward's extra memory is the per-row log-sum-exp and row-loss buffers plus a few scalars,
        // far below one more N×V float tensor; after backward only the logits' gradient (N×V) remains.
        const int rows = 64, vocab = 301;
        var dev = TestDevice.Get();
        using var t = Tensor.FromHost(dev, Enumerable.Range(0, rows).Select(i => i % vocab).ToArray(), new Shape(rows), MemoryCategory.Data, "targets");
        using var x = new Var(Tensor.FromHost(dev, GradCheck.RandomValues(new Random(5), rows * vocab), new Shape(rows, vocab), MemoryCategory.Data, "logits"), requiresGrad: true);
        long before = dev.Tracker.Live, savedBefore = dev.Tracker.LiveOf(MemoryCategory.SavedForBackward);
        dev.Tracker.ResetPeaks();
        using var tape = new Tape();
        var loss = Ops.CrossEntropy(x, t);
        long forwardExtra = dev.Tracker.Peak - before;
        long budget = 2L * rows * sizeof(float) + 64;   // lse + row losses + status + loss scalar
        Assert.True(forwardExtra <= budget, $"forward peak grew by {forwardExtra} bytes, budget {budget}");
        // Saved: the logits and targets are shared (category data here, not copied); the log-sum-exp is the only new tensor.
        Assert.Equal(rows * sizeof(float), dev.Tracker.LiveOf(MemoryCategory.SavedForBackward) - savedBefore);
        tape.Backward(loss);
        loss.Dispose();
        Assert.Equal(before + (long)rows * vocab * sizeof(float), dev.Tracker.Live);
        x.Grad!.Dispose();
    }
}
