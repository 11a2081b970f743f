using FsCheck;
using FsCheck.Xunit;
using Memopt.Autograd;
using Memopt.Kernels;
using Memopt.Tensors;
using Memopt.Tests.Harness;
using static Memopt.Tests.Harness.Bf16Check;

namespace Memopt.Tests.Kernels;

/// <summary>
/// The row reductions on bf16 storage — LayerNorm, causal/windowed softmax, cross-entropy — on both kernel paths.
/// The bf16 and float32 runs see identical (bf16-representable) inputs and seeds and compute in float32 with float32
/// statistics, so wherever a backward reads only inputs and float32 statistics, the bf16 result is the float32 result
/// rounded once (≤ u = 2^-8 of each element) and float32 outputs (LayerNorm's parameter gradients, the loss) are the
/// float32 path's. Not always bitwise: on the cooperative path the group reductions of the CPU accelerator may add in
/// a different order from one launch to the next, so two float32 runs can differ by float32 rounding (measured:
/// 1.3e-7 of the largest LayerNorm weight gradient); each test allows its family's float32 tolerance for that.
/// Softmax's backward reads its own bf16-rounded probabilities: bounded separately.
/// </summary>
public class Bf16RowKernelTests
{
    private static readonly int[] Columns = [1, 2, 5, 16, 17, 33, 70];

    /// <summary>max over rows of rstd·max|x|, at least 1: LayerNormTests' conditioning, which scales its float32 error.</summary>
    private static double Conditioning(float[] x, int cols)
    {
        var x64 = x.Select(v => (double)v).ToArray();
        double kappa = 1;
        for (int start = 0; start < x64.Length; start += cols)
        {
            double rstd = LayerNorm.Reference.Stats(x64, start, cols).Rstd;
            for (int c = 0; c < cols; c++) kappa = Math.Max(kappa, rstd * Math.Abs(x64[start + c]));
        }
        return kappa;
    }

    [Property(MaxTest = 8)]
    public void LayerNorm_normalizes_bf16_in_float32_and_rounds_once(PositiveInt rows, PositiveInt cols, bool trainWeights, int seed)
    {
        KernelPaths.ForEach(() =>
        {
            int r = rows.Get % 5 + 1, c = Columns[cols.Get % Columns.Length];
            var rng = new Random(seed);
            double offset = rng.NextDouble() * 4 - 2;
            var x = RoundToBf16(GradCheck.RandomValues(rng, (long)r * c, 0.1 + rng.NextDouble() * 3).Select(v => v + (float)offset));
            var w = GradCheck.RandomValues(rng, c, 0.5).Select(v => v + 1f).ToArray();
            var b = GradCheck.RandomValues(rng, c, 0.5);
            var result = Run(TestDevice.Get(),
                [new(x, new Shape(r, c), DType.BF16), new(w, new Shape(c), DType.F32, trainWeights), new(b, new Shape(c), DType.F32, trainWeights)],
                v => Ops.LayerNorm(v[0], v[1], v[2]), v => LayerNorm.Reference.Forward(v[0], v[1], v[2], c), seed);
            // Forward: one rounding of y, after LayerNormTests' float32 error of 2e-6·κ.
            double kappa = Conditioning(x, c);
            double forward = U + 2e-6 * kappa;
            // dx = round(float32 dx): ≤ u, plus the float32 run-to-run slack (LayerNormTests' 2e-6·κ for dx); dweight
            // and dbias are float32 sums of the same float32 terms: within LayerNormTests' 2e-5·κ of each other.
            Assert.True(result.OutputDType == DType.BF16 && result.ForwardError <= forward && result.GradientErrors[0] <= U + 2e-6 * kappa
                        && result.GradientErrors[1] <= 2e-5 * kappa && result.GradientErrors[2] <= 2e-5 * kappa
                        && result.GradientDTypes[0] == DType.BF16 && (!trainWeights || result.GradientDTypes[1] == DType.F32),
                $"[{r}, {c}]: {result} (forward tolerance {forward:E2})");
        });
    }

    /// <summary>
    /// Softmax backward reads the stored (bf16) probabilities ŷ = y(1 + δ), |δ| ≤ u. With D = Σ dy·y:
    /// |D̂ − D| ≤ u·max|dy|·Σy = u·max|dy|, so s·ŷ(dy − D̂) differs from s·y(dy − D) by ≤ s·y·max|dy|·u·(3 + u),
    /// and rounding dx adds ≤ u·s·y·(2 + u)·max|dy|. With y ≤ 1 the bf16 dx is within 5.1u of s·max|dy| — the scale
    /// SoftmaxTests also measures against (dx itself cancels) — plus its float32 2e-6.
    /// </summary>
    private const double SoftmaxGradientTolerance = 5.1 * U + 2e-6;

    [Property(MaxTest = 8)]
    public void Causal_and_windowed_softmax_store_bf16_probabilities_and_gradients(PositiveInt n, PositiveInt tPick, PositiveInt windowPick, int seed)
    {
        KernelPaths.ForEach(() =>
        {
            int t = new[] { 1, 2, 7, 13, 17 }[tPick.Get % 5];
            int? window = (windowPick.Get % 3) switch { 0 => null, 1 => 1, _ => Math.Max(1, t / 2) };
            var rng = new Random(seed);
            float scale = (float)(0.125 + rng.NextDouble() * 2);
            var shape = new Shape(n.Get % 3 + 1, t, t);
            var x = RoundToBf16(GradCheck.RandomValues(rng, shape.Numel, 3));
            var dy = RoundToBf16(GradCheck.RandomValues(rng, shape.Numel));
            var dev = TestDevice.Get();
            (float[] Y, float[] Dx, DType YType, DType DxType) Pass(DType dtype)
            {
                using var xv = new Var(Tensor.FromHost(dev, x, shape, MemoryCategory.Data, "x", dtype), requiresGrad: true);
                using var tape = new Tape();
                using var y = Ops.CausalSoftmax(xv, scale, window);
                using var seedGrad = Tensor.FromHost(dev, dy, shape, MemoryCategory.Data, "dy", dtype);
                tape.Backward(y, seedGrad);
                var result = (y.Value.ToFloatArray(), xv.Grad!.ToFloatArray(), y.Value.DType, xv.Grad.DType);
                xv.Grad.Dispose();
                return result;
            }
            var f32 = Pass(DType.F32);
            var bf16 = Pass(DType.BF16);
            var want = Softmax.Reference.Forward(x.Select(v => (double)v).ToArray(), t, scale, window);
            // Probabilities: one rounding each (≤ u of the largest), after SoftmaxTests' float32 2e-6.
            double forward = bf16.Y.Select((v, i) => Math.Abs(v - want[i])).Max() / want.Max();
            double gradient = bf16.Dx.Select((g, i) => Math.Abs(g - f32.Dx[i])).Max() / (scale * dy.Max(Math.Abs));
            Assert.True(bf16.YType == DType.BF16 && bf16.DxType == DType.BF16 && forward <= U + 2e-6 && gradient <= SoftmaxGradientTolerance,
                $"{shape} W={window} s={scale}: forward {forward:E2}, gradient {gradient:E2} of s·max|dy|");
            // Masked entries are exactly zero in bf16 too, and their gradient stays zero.
            for (int i = 0; i < want.Length; i++)
                if (want[i] == 0) Assert.True(bf16.Y[i] == 0 && bf16.Dx[i] == 0, $"masked element {i}: y {bf16.Y[i]}, dx {bf16.Dx[i]}");
        });
    }

    [Property(MaxTest = 8)]
    public void Cross_entropy_of_bf16_logits_gives_the_float32_loss_and_a_once_rounded_gradient(PositiveInt rows, PositiveInt vocabPick, bool smooth, bool ignore, int seed)
    {
        KernelPaths.ForEach(() =>
        {
            int n = rows.Get % 8 + 1, vocab = new[] { 1, 2, 13, 17, 64, 97 }[vocabPick.Get % 6];
            float smoothing = smooth ? 0.1f : 0f;
            var rng = new Random(seed);
            var targets = Enumerable.Range(0, n).Select(_ => ignore && rng.NextDouble() < 0.3 ? -100 : rng.Next(vocab)).ToArray();
            var logits = RoundToBf16(GradCheck.RandomValues(rng, (long)n * vocab, 4));
            var dev = TestDevice.Get();
            using var t = Tensor.FromHost(dev, targets, new Shape(n), MemoryCategory.Data, "targets");
            (float Loss, float[] Grad, DType LossType, DType GradType) Pass(DType dtype)
            {
                using var x = new Var(Tensor.FromHost(dev, logits, new Shape(n, vocab), MemoryCategory.Data, "logits", dtype), requiresGrad: true);
                using var tape = new Tape();
                using var loss = Ops.CrossEntropy(x, t, labelSmoothing: smoothing);
                tape.Backward(loss);
                var result = (loss.Value.ToFloatArray()[0], x.Grad!.ToFloatArray(), loss.Value.DType, x.Grad.DType);
                x.Grad.Dispose();
                return result;
            }
            var f32 = Pass(DType.F32);
            var bf16 = Pass(DType.BF16);
            // Identical logit values and float32 math: the loss is the float32 path's (its accuracy against float64 is
            // CrossEntropyTests' business) up to the reduction-order slack, a few ulps of lse ≤ 9: 1e-5 absolute as
            // there; dlogits = round(float32 dlogits): ≤ u of the largest, plus that slack (1e-5 of a row's gradient).
            Assert.Equal(DType.F32, bf16.LossType);
            Assert.Equal(DType.BF16, bf16.GradType);
            Assert.True(Math.Abs(f32.Loss - bf16.Loss) <= 1e-5, $"N={n} V={vocab} eps={smoothing}: loss {bf16.Loss} vs float32 {f32.Loss}");
            double gradient = GradCheck.RelativeError(bf16.Grad.Select(v => (double)v).ToArray(), f32.Grad.Select(v => (double)v).ToArray());
            Assert.True(gradient <= U + 1e-5, $"N={n} V={vocab} eps={smoothing}: dlogits {gradient:E2}");
        });
    }
}
