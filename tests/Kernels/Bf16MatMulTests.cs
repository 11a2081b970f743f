using FsCheck;
using FsCheck.Xunit;
using Memopt.Autograd;
using Memopt.Kernels;
using Memopt.Tensors;
using Memopt.Tests.Harness;
using static Memopt.Tests.Harness.Bf16Check;

namespace Memopt.Tests.Kernels;

/// <summary>
/// The SIMT/portable GEMM with bf16 operands and a bf16 or float32 C, and the matmul ops built on it (attention's
/// batched products, Linear reading a parameter's bf16 shadow). The kernel widens bf16 on load and accumulates in
/// float32 in the same order whatever the storage, so from the same operand values the float32 accumulator is
/// bitwise the float32 path's: a float32 C equals it and a bf16 C equals it rounded once (after adding the old C,
/// when accumulating). Those are exact checks on both kernel paths; the float32 GEMM's own error against float64
/// is MatMulTests' business.
/// </summary>
public class Bf16MatMulTests
{
    private static readonly int[] Sizes = [1, 2, 3, 5, 16, 17, 33];

    [Property(MaxTest = 12)]
    public void Bf16_operands_give_the_float32_accumulator_rounded_once(
        PositiveInt m, PositiveInt n, PositiveInt k, PositiveInt batch, bool transA, bool transB, bool bf16C, bool accumulate, PositiveInt layout, int seed)
    {
        KernelPaths.ForEach(() =>
        {
            int M = Sizes[m.Get % Sizes.Length], N = Sizes[n.Get % Sizes.Length], K = Sizes[k.Get % Sizes.Length], B = batch.Get % 3 + 1;
            // 0: batched A and B; 1: B broadcast (a weight); 2: both batched into one C (the summed weight gradient).
            int mode = layout.Get % 3;
            var rng = new Random(seed);
            var aShape = new Shape(B, transA ? K : M, transA ? M : K);
            var bShape = mode == 1 ? new Shape(transB ? N : K, transB ? K : N) : new Shape(B, transB ? N : K, transB ? K : N);
            var cShape = mode == 2 ? new Shape(M, N) : new Shape(B, M, N);
            var a = RoundToBf16(GradCheck.RandomValues(rng, aShape.Numel));
            var b = RoundToBf16(GradCheck.RandomValues(rng, bShape.Numel));
            var c0 = RoundToBf16(GradCheck.RandomValues(rng, cShape.Numel));
            float alpha = accumulate ? 0.75f : 1f;
            var dev = TestDevice.Get();
            float[] Product(DType operands, DType output)
            {
                using var at = Tensor.FromHost(dev, a, aShape, MemoryCategory.Data, "a", operands);
                using var bt = Tensor.FromHost(dev, b, bShape, MemoryCategory.Data, "b", operands);
                using var ct = Tensor.FromHost(dev, c0, cShape, MemoryCategory.Data, "c", output);
                var cOperand = mode == 2 ? new MatrixOperand(ct, 0, N, 0) : MatrixOperand.Dense(ct);
                MatMul.Gemm(MatrixOperand.Dense(at, transA), MatrixOperand.Dense(bt, transB), cOperand, M, N, K, B, alpha, accumulate);
                return ct.ToFloatArray();
            }
            var f32 = Product(DType.F32, DType.F32);
            var got = Product(DType.BF16, bf16C ? DType.BF16 : DType.F32);
            var want = bf16C ? RoundToBf16(f32) : f32;
            // CPU: the SIMT kernel sums in the float32 path's order, so the result is that sum rounded once, bit for bit.
            // CUDA: the tensor cores sum in their own order; the float32 sums then differ by ~K·2⁻²⁴·Σ|a||b| and a bf16 C
            // may round to the neighbouring value: one bf16 step (at most 2⁻⁷ of |C|: 8 significant bits) plus 1e-5 of the largest |C| is allowed.
            float scale = want.Select(Math.Abs).DefaultIfEmpty(0f).Max();
            for (int i = 0; i < want.Length; i++)
                Assert.True(dev.IsCuda ? Math.Abs(want[i] - got[i]) <= Math.Abs(want[i]) / 128f + 1e-5f * scale : want[i].Equals(got[i]), $"A {aShape}{(transA ? "ᵀ" : "")} B {bShape}{(transB ? "ᵀ" : "")} C {cShape} {(bf16C ? "bf16" : "f32")} " +
                                                    $"accumulate={accumulate} element {i}: {got[i]} vs {want[i]}");
        });
    }

    [Fact]
    public void Bf16_operands_address_one_head_inside_qkv()
    {
        // Attention-style strided operands inside bf16 tensors: head 1's Q and K in a [B, T, 3, H, hd] tensor.
        const int B = 2, T = 7, H = 2, Dh = 5, h = 1;
        var rng = new Random(9);
        var qkv = RoundToBf16(GradCheck.RandomValues(rng, B * T * 3 * H * Dh));
        var dev = TestDevice.Get();
        KernelPaths.ForEach(() =>
        {
            float[] Scores(DType dtype)
            {
                using var q = Tensor.FromHost(dev, qkv, new Shape(B, T, 3, H, Dh), MemoryCategory.Data, "qkv", dtype);
                using var s = Tensor.Empty(dev, new Shape(B, T, T), dtype, MemoryCategory.Data, "scores");
                int pitch = 3 * H * Dh;
                MatMul.Gemm(new MatrixOperand(q, h * Dh, pitch, T * pitch), new MatrixOperand(q, H * Dh + h * Dh, pitch, T * pitch, Transposed: true),
                    MatrixOperand.Dense(s), T, T, Dh, B, alpha: 1f / MathF.Sqrt(Dh));
                return s.ToFloatArray();
            }
            Assert.Equal(RoundToBf16(Scores(DType.F32)), Scores(DType.BF16));
        });
    }

    [Property(MaxTest = 8)]
    public void Batched_matmul_op_gradients_are_the_float32_gradients_rounded_once(PositiveInt batch, PositiveInt t, PositiveInt d, bool transB, int seed)
    {
        KernelPaths.ForEach(() =>
        {
            int nb = batch.Get % 3 + 1, nt = Sizes[t.Get % Sizes.Length], nd = Sizes[d.Get % Sizes.Length];
            var rng = new Random(seed);
            var aShape = new Shape(nb, nt, nd);
            var bShape = transB ? new Shape(nb, nt, nd) : new Shape(nb, nd, nt);
            var r = Run(TestDevice.Get(),
                [new(GradCheck.RandomValues(rng, aShape.Numel), aShape, DType.BF16), new(GradCheck.RandomValues(rng, bShape.Numel), bShape, DType.BF16)],
                v => Ops.MatMul(v[0], v[1], transB: transB),
                x => MatMul.Reference.Forward(x[0], aShape, x[1], bShape, transB: transB), seed);
            // C = round(float32 C): within u of it, after the float32 error the float32 run shows against float64.
            // dA, dB: float32 products of the same dC (the seed, bf16-representable) and the same saved operands, rounded once.
            Assert.True(r.OutputDType == DType.BF16 && r.ForwardError <= U * (1 + r.Float32ForwardError) + r.Float32ForwardError
                        && r.GradientErrors.All(e => e <= U) && r.GradientDTypes.All(g => g == DType.BF16), $"{aShape}·{bShape}{(transB ? "ᵀ" : "")}: {r}");
        });
    }

    [Property(MaxTest = 8)]
    public void Linear_reads_the_bf16_shadow_and_accumulates_the_weight_gradient_in_float32(PositiveInt rows, PositiveInt inPick, PositiveInt outPick, int seed)
    {
        KernelPaths.ForEach(() =>
        {
            int R = rows.Get % 9 + 1, In = Sizes[inPick.Get % Sizes.Length], Out = Sizes[outPick.Get % Sizes.Length];
            var rng = new Random(seed);
            var dev = TestDevice.Get();
            var x = RoundToBf16(GradCheck.RandomValues(rng, (long)R * In));
            var w = GradCheck.RandomValues(rng, (long)Out * In);   // float32 master, not bf16-representable
            var b = GradCheck.RandomValues(rng, Out, 0.25);
            var dy = RoundToBf16(GradCheck.RandomValues(rng, (long)R * Out));
            var wRounded = RoundToBf16(w);

            // Mixed precision: bf16 x, a parameter whose matmuls read its bf16 shadow, a float32 bias.
            using var weight = new Parameter(Tensor.FromHost(dev, w, new Shape(Out, In), MemoryCategory.Parameters, "w"), "w");
            using var bias = new Parameter(Tensor.FromHost(dev, b, new Shape(Out), MemoryCategory.Parameters, "b"), "b");
            var shadow = weight.EnableBf16Copy();
            Assert.Equal(wRounded, shadow.ToFloatArray());
            float[] y16, dx16, dw16, db16;
            using (var xv = new Var(Tensor.FromHost(dev, x, new Shape(R, In), MemoryCategory.Data, "x", DType.BF16), requiresGrad: true))
            using (var tape = new Tape())
            {
                using var y = Ops.Linear(xv, weight, bias);
                Assert.Equal(DType.BF16, y.Value.DType);
                // Backward keeps the shadow itself (a parameter, not a new activation copy of W).
                Assert.Contains(tape.Nodes.Single().Saved, t => t.DType == DType.BF16 && t.Storage == shadow.Storage);
                using var seedGrad = Tensor.FromHost(dev, dy, y.Shape, MemoryCategory.Data, "dy", DType.BF16);
                tape.Backward(y, seedGrad);
                (y16, dx16, dw16, db16) = (y.Value.ToFloatArray(), xv.Grad!.ToFloatArray(), weight.Grad!.ToFloatArray(), bias.Grad!.ToFloatArray());
                Assert.Equal(DType.BF16, xv.Grad.DType);
                Assert.Equal(DType.F32, weight.Grad.DType);
                xv.Grad.Dispose();
            }

            // The float32 path on the same values (the rounded weights, float32 everywhere).
            using var w32 = new Var(Tensor.FromHost(dev, wRounded, new Shape(Out, In), MemoryCategory.Data, "w32"), requiresGrad: true);
            using var b32 = new Var(Tensor.FromHost(dev, b, new Shape(Out), MemoryCategory.Data, "b32"), requiresGrad: true);
            using var x32 = new Var(Tensor.FromHost(dev, x, new Shape(R, In), MemoryCategory.Data, "x32"), requiresGrad: true);
            float[] xw;
            using (var noBias = Ops.Linear(x32, w32)) xw = noBias.Value.ToFloatArray();
            using (var tape = new Tape())
            {
                using var y = Ops.Linear(x32, w32, b32);
                using var seedGrad = Tensor.FromHost(dev, dy, y.Shape, MemoryCategory.Data, "dy32");
                tape.Backward(y, seedGrad);
                var y32 = y.Value.ToFloatArray();
                // y: the GEMM's float32 result plus the bias (fused into the GEMM's epilogue, float32), rounded once.
                var wantY = y32.Select((_, i) => BFloat16.Round(xw[i] + b[i % Out])).ToArray();
                // dx = round(dy·W); dW and db: float32 sums of the same products, in the same order: equal on the CPU.
                // On CUDA the bf16 GEMMs run on the tensor cores, which sum in their own order: see SameSum.
                SameSum(dev, wantY, y16, "y");
                SameSum(dev, RoundToBf16(x32.Grad!.ToFloatArray()), dx16, "dx");
                SameSum(dev, w32.Grad!.ToFloatArray(), dw16, "dW");
                Assert.Equal(b32.Grad!.ToFloatArray(), db16);
            }
            foreach (var v in new[] { w32, b32, x32 }) v.Grad?.Dispose();
        });
    }

    [Fact]
    public void Non_float_operands_are_rejected_naming_the_operand()
    {
        var dev = TestDevice.Get();
        using var a = Tensor.Zeros(dev, new Shape(2, 3), DType.BF16, MemoryCategory.Data, "a");
        using var b = Tensor.Zeros(dev, new Shape(3, 4), DType.I32, MemoryCategory.Data, "b");
        using var c = Tensor.Zeros(dev, new Shape(2, 4), DType.BF16, MemoryCategory.Data, "c");
        var e = Assert.Throws<ShapeException>(() => MatMul.Forward(a, b, c));
        Assert.Contains("matmul", e.Message);
        Assert.Contains("B [3, 4] is int32", e.Message);
    }

    /// <summary>Bit for bit on the CPU; on CUDA (tensor cores: another summation order) within one bf16 step plus 1e-5 of the largest value.</summary>
    private static void SameSum(ComputeDevice dev, float[] want, float[] got, string what)
    {
        Assert.Equal(want.Length, got.Length);
        if (!dev.IsCuda) { Assert.Equal(want, got); return; }
        float scale = want.Select(Math.Abs).DefaultIfEmpty(0f).Max();
        for (int i = 0; i < want.Length; i++)
            Assert.True(Math.Abs(want[i] - got[i]) <= Math.Abs(want[i]) / 128f + 1e-5f * scale, $"{what}[{i}]: {got[i]} vs {want[i]}");
    }
}
