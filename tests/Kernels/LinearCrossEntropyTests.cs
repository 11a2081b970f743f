using FsCheck;
using FsCheck.Xunit;
using Memopt.Autograd;
using Memopt.Kernels;
using Memopt.Tensors;
using Memopt.Tests.Harness;

namespace Memopt.Tests.Kernels;

/// <summary>
/// Ops.LinearCrossEntropy (the fused, chunked LM head + loss) against float64: the loss of x·Wᵀ + b under
/// CrossEntropy.Reference, and the gradients of x, W and b against central finite differences of that reference,
/// on both kernel paths, with chunks that do not divide the rows, ignored rows, label smoothing and vocabularies that
/// are not multiples of the 8-element row padding.
/// </summary>
public class LinearCrossEntropyTests
{
    // Inputs in [−0.5, 0.5] and d ≤ 17 keep |logits| ≤ ~2.5 (no confident row, so GradCheck's relative errors are
    // meaningful; see CrossEntropyTests). The logits are float32 dot products of ≤ 17 terms (≤ 17 ulps), and the
    // gradients go through one more GEMM each (dx: V terms, dW: ≤ 9 rows): a few 1e-6 of the result's scale. 5e-5
    // leaves ≥ 5× margin over the worst seen and is still 100× below the error of a dropped row or chunk.
    private const double Tolerance = 5e-5;

    private static readonly int[] Vocabularies = [1, 3, 8, 13, 17, 40];
    private static readonly int[] Widths = [1, 3, 8, 17];
    private static readonly int[] Chunks = [1, 2, 3, 5, 64];

    [Property(MaxTest = 25)]
    public void Matches_reference_and_finite_differences(PositiveInt rowsPick, PositiveInt vocabPick, PositiveInt dPick, PositiveInt chunkPick,
        bool withBias, bool smooth, int seed)
    {
        int rows = rowsPick.Get % 9 + 1, vocab = Vocabularies[vocabPick.Get % Vocabularies.Length];
        int d = Widths[dPick.Get % Widths.Length], chunk = Chunks[chunkPick.Get % Chunks.Length];
        float smoothing = smooth ? 0.1f : 0f;
        const int ignoreIndex = -100;
        KernelPaths.ForEach(() =>
        {
            var rng = new Random(seed);
            int[] targets = Enumerable.Range(0, rows).Select(_ => rng.NextDouble() < 0.2 ? ignoreIndex : rng.Next(vocab)).ToArray();
            var dev = TestDevice.Get();
            using var t = Tensor.FromHost(dev, targets, new Shape(rows), MemoryCategory.Data, "targets");
            (float[], Shape)[] inputs = withBias
                ? [(GradCheck.RandomValues(rng, rows * d, 0.5), new Shape(rows, d)), (GradCheck.RandomValues(rng, vocab * d, 0.5), new Shape(vocab, d)), (GradCheck.RandomValues(rng, vocab, 0.5), new Shape(vocab))]
                : [(GradCheck.RandomValues(rng, rows * d, 0.5), new Shape(rows, d)), (GradCheck.RandomValues(rng, vocab * d, 0.5), new Shape(vocab, d))];
            var r = GradCheck.Run(dev, inputs, [.. inputs.Select(_ => true)],
                v => Ops.LinearCrossEntropy(v[0], v[1], withBias ? v[2] : null, t, chunk, ignoreIndex, smoothing),
                x => [CrossEntropy.Reference.Forward(Logits(x[0], x[1], withBias ? x[2] : null, rows, vocab, d), targets, vocab, ignoreIndex, smoothing, out _)],
                seed);
            string what = $"rows {rows} V {vocab} d {d} chunk {chunk} bias {withBias} eps {smoothing}";
            Assert.True(r.ForwardError <= Tolerance, $"{what}: {r}");
            Assert.True(r.GradientErrors.All(e => e <= Tolerance), $"{what}: {r}");
        });
    }

    /// <summary>The unfused pair on the same inputs: loss and every gradient agree to float32 rounding.</summary>
    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void Equals_linear_then_cross_entropy(bool cooperative)
    {
        using var scope = Launch.UsePath(cooperative ? KernelPath.Cooperative : KernelPath.Portable);
        const int rows = 23, vocab = 37, d = 12, chunk = 6;
        var rng = new Random(5);
        var dev = TestDevice.Get();
        int[] targets = Enumerable.Range(0, rows).Select(i => i % 7 == 3 ? -100 : rng.Next(vocab)).ToArray();
        float[] x = GradCheck.RandomValues(rng, rows * d, 0.5), w = GradCheck.RandomValues(rng, vocab * d, 0.5), b = GradCheck.RandomValues(rng, vocab, 0.5);
        (float Loss, float[][] Grads) Run(bool fused)
        {
            using var t = Tensor.FromHost(dev, targets, new Shape(rows), MemoryCategory.Data, "targets");
            using var xv = new Var(Tensor.FromHost(dev, x, new Shape(rows, d), MemoryCategory.Data, "x"), requiresGrad: true);
            using var wv = new Var(Tensor.FromHost(dev, w, new Shape(vocab, d), MemoryCategory.Data, "w"), requiresGrad: true);
            using var bv = new Var(Tensor.FromHost(dev, b, new Shape(vocab), MemoryCategory.Data, "b"), requiresGrad: true);
            using var tape = new Tape();
            Var loss;
            if (fused) loss = Ops.LinearCrossEntropy(xv, wv, bv, t, chunk, labelSmoothing: 0.05f);
            else
            {
                using var logits = Ops.Linear(xv, wv, bv);
                loss = Ops.CrossEntropy(logits, t, labelSmoothing: 0.05f);
            }
            using (loss)
            {
                using var seed = Tensor.FromHost(dev, [0.75f], new Shape(1), MemoryCategory.Data, "seed");
                tape.Backward(loss, seed); // an upstream gradient ≠ 1: backward must scale what the forward saved
                var grads = new[] { xv, wv, bv }.Select(v => v.Grad!.ToFloatArray()).ToArray();
                foreach (var v in new[] { xv, wv, bv }) v.Grad!.Dispose();
                return (loss.Value.ToFloatArray()[0], grads);
            }
        }
        var (fusedLoss, fusedGrads) = Run(true);
        var (plainLoss, plainGrads) = Run(false);
        Assert.True(Math.Abs(fusedLoss - plainLoss) <= 1e-6 * Math.Abs(plainLoss), $"loss {fusedLoss} vs {plainLoss}");
        string[] names = ["x", "W", "b"];
        for (int i = 0; i < 3; i++)
        {
            double worst = fusedGrads[i].Zip(plainGrads[i], (p, q) => Math.Abs(p - q)).Max();
            double scale = plainGrads[i].Max(Math.Abs);
            Assert.True(worst <= 1e-5 * scale, $"d{names[i]}: worst difference {worst:E2} at scale {scale:E2}");
        }
    }

    /// <summary>
    /// The chunk kernel alone on bf16 logits with padded rows (the --bf16 layout; on the cooperative path the
    /// four-per-access kernel), both paths: row losses to float32 rounding of the float64 reference on the same bf16
    /// inputs (1e-5 of the loss scale), G to one bf16 rounding (2^-8 relative) plus float32 noise, exact zeros in the
    /// padding columns and the ignored rows.
    /// </summary>
    [Theory]
    [InlineData(13, 7, 0f)]
    [InlineData(64, 5, 0.1f)]
    [InlineData(203, 3, 0f)]
    [InlineData(16411, 3, 0.1f)] // rows of 4104 quads: every thread's four quads in flight, then a partial fifth block
    public void Bf16_chunk_matches_reference(int vocab, int rows, float smoothing)
    {
        KernelPaths.ForEach(() =>
        {
            var dev = TestDevice.Get();
            var rng = new Random(vocab + rows);
            int stride = Ops.HeadStride(vocab);
            int[] targets = Enumerable.Range(0, rows).Select(r => r == 1 ? -100 : rng.Next(vocab)).ToArray();
            var words = new ushort[rows * stride];
            var z = new double[rows * vocab];
            float[] bias = GradCheck.RandomValues(rng, vocab, 1);
            for (int r = 0; r < rows; r++)
                for (int j = 0; j < stride; j++)
                {
                    ushort w = BFloat16.FromFloat(j < vocab ? (float)(rng.NextDouble() * 4 - 2) : 1e3f); // padding must never be read
                    words[r * stride + j] = w;
                    if (j < vocab) z[r * vocab + j] = BFloat16.ToFloat(w) + bias[j];
                }
            using var logits = Tensor.Empty(dev, new Shape(rows, stride), DType.BF16, MemoryCategory.Data, "logits");
            logits.CopyFrom(words);
            using var b = Tensor.FromHost(dev, bias, new Shape(vocab), MemoryCategory.Data, "bias");
            using var t = Tensor.FromHost(dev, targets, new Shape(rows), MemoryCategory.Data, "targets");
            using var rowLoss = Tensor.Empty(dev, new Shape(rows), DType.F32, MemoryCategory.Data, "row loss");
            int count = targets.Count(v => v != -100);
            CrossEntropy.Chunk(logits, b, t, vocab, -100, smoothing, rowLoss, gradient: true, 1f / count);
            var losses = rowLoss.ToFloatArray();
            var grad = logits.ToBf16Array();
            var wantGrad = CrossEntropy.Reference.Gradient(z, targets, vocab, -100, smoothing);
            for (int r = 0; r < rows; r++)
            {
                double want = targets[r] == -100 ? 0 : CrossEntropy.Reference.Forward(z[(r * vocab)..((r + 1) * vocab)], [targets[r]], vocab, -100, smoothing, out _);
                Assert.True(Math.Abs(losses[r] - want) <= 1e-5 * Math.Max(1, want), $"row {r}: loss {losses[r]} vs {want}");
                for (int j = 0; j < stride; j++)
                {
                    float got = BFloat16.ToFloat(grad[r * stride + j]);
                    double w = j < vocab ? wantGrad[r * vocab + j] : 0;
                    Assert.True(Math.Abs(got - w) <= Math.Abs(w) / 256 + 1e-6, $"row {r} column {j}: G {got} vs {w}");
                }
            }
        });
    }

    [Fact]
    public void Evaluation_computes_the_loss_without_gradients_or_a_tape()
    {
        var dev = TestDevice.Get();
        const int rows = 9, vocab = 11, d = 4;
        var rng = new Random(2);
        int[] targets = Enumerable.Range(0, rows).Select(_ => rng.Next(vocab)).ToArray();
        float[] x = GradCheck.RandomValues(rng, rows * d, 0.5), w = GradCheck.RandomValues(rng, vocab * d, 0.5);
        using var t = Tensor.FromHost(dev, targets, new Shape(rows), MemoryCategory.Data, "targets");
        using var xv = new Var(Tensor.FromHost(dev, x, new Shape(rows, d), MemoryCategory.Data, "x"));
        using var wv = new Var(Tensor.FromHost(dev, w, new Shape(vocab, d), MemoryCategory.Data, "w"), requiresGrad: true);
        using var loss = Ops.LinearCrossEntropy(xv, wv, null, t, chunkRows: 4);
        double want = CrossEntropy.Reference.Forward(Logits(x.Select(v => (double)v).ToArray(), w.Select(v => (double)v).ToArray(), null, rows, vocab, d),
            targets, vocab, -100, 0, out _);
        Assert.True(Math.Abs(loss.Value.ToFloatArray()[0] - want) <= 1e-5 * want, $"{loss.Value.ToFloatArray()[0]} vs {want}");
        Assert.False(loss.RequiresGrad);
    }

    [Fact]
    public void Bad_input_names_the_op_and_the_shapes()
    {
        var dev = TestDevice.Get();
        using var x = new Var(Tensor.Zeros(dev, new Shape(4, 3), DType.F32, MemoryCategory.Data, "x"));
        using var w = new Var(Tensor.Zeros(dev, new Shape(5, 3), DType.F32, MemoryCategory.Data, "w"));
        using var t = Tensor.FromHost(dev, [0, 1, 2, 3], new Shape(4), MemoryCategory.Data, "targets");
        using var bad = Tensor.FromHost(dev, [0, 1, 5, 3], new Shape(4), MemoryCategory.Data, "targets");
        using var shortT = Tensor.FromHost(dev, [0, 1, 2], new Shape(3), MemoryCategory.Data, "targets");
        var e = Assert.Throws<ShapeException>(() => Ops.LinearCrossEntropy(x, w, null, t, chunkRows: 0));
        Assert.Contains("lm_head_ce", e.Message);
        Assert.Contains("chunk rows 0", e.Message);
        e = Assert.Throws<ShapeException>(() => Ops.LinearCrossEntropy(x, w, null, shortT, chunkRows: 2));
        Assert.Contains("targets [3]", e.Message);
        e = Assert.Throws<ShapeException>(() => Ops.LinearCrossEntropy(x, w, null, bad, chunkRows: 2));
        Assert.Contains("outside [0, 5)", e.Message);
        Assert.Contains("row 2: 5", e.Message);
        using var wrongBias = new Var(Tensor.Zeros(dev, new Shape(4), DType.F32, MemoryCategory.Data, "b"));
        e = Assert.Throws<ShapeException>(() => Ops.LinearCrossEntropy(x, w, wrongBias, t, chunkRows: 2));
        Assert.Contains("bias [4]", e.Message);
    }

    /// <summary>x [rows, d] · Wᵀ [d, V] + b in float64.</summary>
    private static double[] Logits(double[] x, double[] w, double[]? b, int rows, int vocab, int d)
    {
        var z = new double[rows * vocab];
        for (int r = 0; r < rows; r++)
            for (int j = 0; j < vocab; j++)
            {
                double s = b?[j] ?? 0;
                for (int k = 0; k < d; k++) s += x[r * d + k] * w[j * d + k];
                z[r * vocab + j] = s;
            }
        return z;
    }
}
