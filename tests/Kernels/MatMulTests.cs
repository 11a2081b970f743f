using FsCheck;
using FsCheck.Xunit;
using Memopt.Autograd;
using Memopt.Kernels;
using Memopt.Tensors;
using Memopt.Tests.Harness;

namespace Memopt.Tests.Kernels;

public class MatMulTests
{
    // Forward tolerance, per element (Higham, Accuracy and Stability of Numerical Algorithms, §3.1): a float32 dot
    // product of length K, in any order, with or without FMA, is within γ_K·Σ_k|a_k·b_k| (γ_K = K·u/(1−K·u),
    // u = 2^-24) of the exact value of its float32 inputs; alpha and the accumulate add one rounding each. So every
    // element must be within (K + 3)·u·(|alpha|·(|A|·|B|) + |C₀|). This is the worst case and does not depend on
    // cancellation, so it cannot flake; a wrong index or a dropped K-tail breaks it by orders of magnitude.
    // With a bias (the fused epilogue of a Linear layer) alpha, the accumulate and the bias add one rounding each, still
    // within the 3, and |bias| joins the bound: (K + 3)·u·(|alpha|·(|A|·|B|) + |C₀| + |bias|).
    private const double UnitRoundoff = 1.0 / (1 << 24);
    private const int RoundingsBeyondK = 3;
    // A bf16 C is then rounded once more: ≤ 2^-9 of the value (half an ulp of an 8-bit significand); 2^-8 keeps a factor 2.
    private const double Bf16Rounding = 1.0 / 256;
    // Gradients (via GradCheck, relative to the largest entry): each gradient entry is a dot product of length ≤ 17
    // (N for dA, M for dB), so its float32 error is ≤ 17·u ≈ 1e-6 of Σ|terms| (the seed r is rounded to float32 too:
    // one more u). The harness divides by the largest |entry| of the whole tensor, which for random inputs is within a
    // small factor of Σ|terms|; 1e-4 leaves a cancellation margin of ~100 while any real bug gives errors of O(1e-2..1).
    // The finite differences are exact up to ~1e-9 here (the product is linear in each input).
    private const double GradientTolerance = 1e-4;

    /// <summary>Sizes that straddle the CPU (16) and CUDA (64) tiles and the K slice (16), plus 1 and primes.</summary>
    private static readonly int[] Awkward = [1, 2, 3, 5, 7, 15, 16, 17, 31, 33, 47, 63, 64, 65, 70];
    private static readonly int[] SmallAwkward = [1, 2, 3, 5, 7, 13, 16, 17];

    private static int Pick(int[] sizes, PositiveInt i) => sizes[i.Get % sizes.Length];

    [Property(MaxTest = 30)]
    public void Forward_matches_float64_reference_for_every_transpose_and_awkward_shapes(
        PositiveInt m, PositiveInt n, PositiveInt k, PositiveInt batch, bool transA, bool transB, PositiveInt layout, int seed)
    {
        KernelPaths.ForEach(() =>
        {
            int M = Pick(Awkward, m), N = Pick(Awkward, n), K = Pick(Awkward, k), B = batch.Get % 3 + 1;
            // layout: 0 both 2-D, 1 both batched, 2 A batched and B broadcast, 3 A broadcast and B batched.
            int mode = layout.Get % 4;
            var aShape = Operand(mode is 1 or 2 ? B : 0, transA ? K : M, transA ? M : K);
            var bShape = Operand(mode is 1 or 3 ? B : 0, transB ? N : K, transB ? K : N);
            var rng = new Random(seed);
            float[] a = GradCheck.RandomValues(rng, aShape.Numel), b = GradCheck.RandomValues(rng, bShape.Numel);
            var s = MatMulShape.Of(aShape, bShape, transA, transB);

            var dev = TestDevice.Get();
            using var at = Tensor.FromHost(dev, a, aShape, MemoryCategory.Data, "a");
            using var bt = Tensor.FromHost(dev, b, bShape, MemoryCategory.Data, "b");
            using var ct = Tensor.Empty(dev, s.Output, DType.F32, MemoryCategory.Data, "c");
            MatMul.Forward(at, bt, ct, transA, transB);

            double[] want = MatMul.Reference.Forward(D(a), aShape, D(b), bShape, transA, transB);
            double[] bound = MatMul.Reference.Forward(Abs(a), aShape, Abs(b), bShape, transA, transB);
            AssertWithinRounding(ct.ToFloatArray(), want, bound, K, $"{aShape}{T(transA)}·{bShape}{T(transB)}");
        });
    }

    /// <summary>Attention-style addressing: one head's Q and K inside a [B, T, 3, H, hd] tensor, scores into one head of [B, H, T, T], then P·V back into [B, T, H, hd].</summary>
    [Property(MaxTest = 20)]
    public void Gemm_addresses_submatrices_with_offsets_strides_alpha_and_accumulate(
        PositiveInt batch, PositiveInt t, PositiveInt heads, PositiveInt headDim, PositiveInt head, int seed)
    {
        KernelPaths.ForEach(() =>
        {
            int B = batch.Get % 2 + 1, Tq = Pick(SmallAwkward, t) + t.Get / 8 % 3 * 16, H = heads.Get % 3 + 1, Dh = Pick(SmallAwkward, headDim);
            int h = head.Get % H;
            float alpha = 1f / MathF.Sqrt(Dh);
            var rng = new Random(seed);
            var qkvShape = new Shape(B, Tq, 3, H, Dh);
            var scoresShape = new Shape(B, H, Tq, Tq);
            var outShape = new Shape(B, Tq, H, Dh);
            float[] qkv = GradCheck.RandomValues(rng, qkvShape.Numel), scores0 = GradCheck.RandomValues(rng, scoresShape.Numel);
            float[] out0 = GradCheck.RandomValues(rng, outShape.Numel);

            var dev = TestDevice.Get();
            using var qkvT = Tensor.FromHost(dev, qkv, qkvShape, MemoryCategory.Data, "qkv");
            using var scoresT = Tensor.FromHost(dev, scores0, scoresShape, MemoryCategory.Data, "scores");
            using var outT = Tensor.FromHost(dev, out0, outShape, MemoryCategory.Data, "out");
            int rowPitch = 3 * H * Dh;
            long qkvBatch = (long)Tq * rowPitch;
            var q = new MatrixOperand(qkvT, h * Dh, rowPitch, qkvBatch);
            var kT = new MatrixOperand(qkvT, H * Dh + h * Dh, rowPitch, qkvBatch, Transposed: true);
            var v = new MatrixOperand(qkvT, 2 * H * Dh + h * Dh, rowPitch, qkvBatch);
            var s = new MatrixOperand(scoresT, (long)h * Tq * Tq, Tq, (long)H * Tq * Tq);
            var o = new MatrixOperand(outT, h * Dh, H * Dh, (long)Tq * H * Dh);

            // scores[b, h] += alpha·Q·Kᵀ, then out[b, :, h, :] = scores[b, h]·V.
            MatMul.Gemm(q, kT, s, Tq, Tq, Dh, B, alpha, accumulate: true);
            MatMul.Gemm(s, v, o, Tq, Dh, Tq, B);

            double[] wantScores = D(scores0), boundScores = Abs(scores0);
            MatMul.Reference.Gemm(D(qkv), h * Dh, rowPitch, qkvBatch, false, D(qkv), H * Dh + h * Dh, rowPitch, qkvBatch, true,
                wantScores, (long)h * Tq * Tq, Tq, (long)H * Tq * Tq, Tq, Tq, Dh, B, alpha, accumulate: true);
            MatMul.Reference.Gemm(Abs(qkv), h * Dh, rowPitch, qkvBatch, false, Abs(qkv), H * Dh + h * Dh, rowPitch, qkvBatch, true,
                boundScores, (long)h * Tq * Tq, Tq, (long)H * Tq * Tq, Tq, Tq, Dh, B, alpha, accumulate: true);
            float[] gotScores = scoresT.ToFloatArray();
            AssertWithinRounding(gotScores, wantScores, boundScores, Dh, "scores");

            // The second product is checked on the device's own scores, so only its rounding counts.
            double[] wantOut = D(out0), boundOut = Abs(out0);
            MatMul.Reference.Gemm(D(gotScores), (long)h * Tq * Tq, Tq, (long)H * Tq * Tq, false, D(qkv), 2 * H * Dh + h * Dh, rowPitch, qkvBatch, false,
                wantOut, h * Dh, H * Dh, (long)Tq * H * Dh, Tq, Dh, Tq, B);
            MatMul.Reference.Gemm(Abs(gotScores), (long)h * Tq * Tq, Tq, (long)H * Tq * Tq, false, Abs(qkv), 2 * H * Dh + h * Dh, rowPitch, qkvBatch, false,
                boundOut, h * Dh, H * Dh, (long)Tq * H * Dh, Tq, Dh, Tq, B);
            AssertWithinRounding(outT.ToFloatArray(), wantOut, boundOut, Tq, "out (elements of other heads must be untouched)");
        });
    }

    [Property(MaxTest = 20)]
    public void Output_batch_stride_zero_sums_the_batch_products(PositiveInt m, PositiveInt n, PositiveInt k, PositiveInt batch, bool accumulate, int seed)
    {
        KernelPaths.ForEach(() =>
        {
            int M = Pick(Awkward, m), N = Pick(SmallAwkward, n), K = Pick(SmallAwkward, k), B = batch.Get % 4 + 2;
            var rng = new Random(seed);
            float[] a = GradCheck.RandomValues(rng, (long)B * K * M), b = GradCheck.RandomValues(rng, (long)B * K * N), c0 = GradCheck.RandomValues(rng, (long)M * N);
            var dev = TestDevice.Get();
            using var at = Tensor.FromHost(dev, a, new Shape(B, K, M), MemoryCategory.Data, "a");
            using var bt = Tensor.FromHost(dev, b, new Shape(B, K, N), MemoryCategory.Data, "b");
            using var ct = Tensor.FromHost(dev, c0, new Shape(M, N), MemoryCategory.Data, "c");
            // C = Σ_b A[b]ᵀ·B[b]: the weight gradient of a broadcast operand.
            MatMul.Gemm(MatrixOperand.Dense(at, transposed: true), MatrixOperand.Dense(bt), MatrixOperand.Dense(ct), M, N, K, B, 1f, accumulate);

            double[] want = D(c0), bound = Abs(c0);
            MatMul.Reference.Gemm(D(a), 0, M, (long)K * M, true, D(b), 0, N, (long)K * N, false, want, 0, N, 0, M, N, K, B, 1, accumulate);
            MatMul.Reference.Gemm(Abs(a), 0, M, (long)K * M, true, Abs(b), 0, N, (long)K * N, false, bound, 0, N, 0, M, N, K, B, 1, accumulate);
            AssertWithinRounding(ct.ToFloatArray(), want, bound, K * B, $"Σ over {B} batches");
        });
    }

    /// <summary>
    /// The fused bias on both paths (portable twin; 16×16 tiled kernel with forced K splits, where only the split sum may
    /// add it: added to every partial it would count S times): a batched A times a broadcast B (a Linear layer's rows
    /// and weight), every transpose, float32 or bf16 operands, C and bias, with and without the accumulate.
    /// </summary>
    [Property(MaxTest = 25)]
    public void Gemm_adds_the_bias_of_each_column_once_for_every_transpose_dtype_and_split(
        PositiveInt m, PositiveInt n, PositiveInt k, PositiveInt batch, bool transA, bool transB, bool accumulate,
        PositiveInt dtypes, PositiveInt splits, int seed)
    {
        KernelPaths.ForEach(() =>
        {
            int M = Pick(Awkward, m), N = Pick(Awkward, n), K = Pick(Awkward, k), B = batch.Get % 3 + 1, S = splits.Get % 3 + 1;
            bool operandsBf16 = (dtypes.Get & 1) != 0, cBf16 = (dtypes.Get & 2) != 0, biasBf16 = (dtypes.Get & 4) != 0;
            var aShape = new Shape(B, transA ? K : M, transA ? M : K);
            var bShape = new Shape(transB ? N : K, transB ? K : N);
            var rng = new Random(seed);
            // bf16-representable values, so every dtype stores exactly the numbers the reference uses.
            float[] a = Bf16Check.RoundToBf16(GradCheck.RandomValues(rng, aShape.Numel)), b = Bf16Check.RoundToBf16(GradCheck.RandomValues(rng, bShape.Numel));
            float[] c0 = Bf16Check.RoundToBf16(GradCheck.RandomValues(rng, (long)B * M * N)), bias = Bf16Check.RoundToBf16(GradCheck.RandomValues(rng, N, 4.0));
            float alpha = accumulate ? -0.75f : 1f;

            var dev = TestDevice.Get();
            using var at = Tensor.FromHost(dev, a, aShape, MemoryCategory.Data, "a", operandsBf16 ? DType.BF16 : DType.F32);
            using var bt = Tensor.FromHost(dev, b, bShape, MemoryCategory.Data, "b", operandsBf16 ? DType.BF16 : DType.F32);
            using var ct = Tensor.FromHost(dev, c0, new Shape(B, M, N), MemoryCategory.Data, "c", cBf16 ? DType.BF16 : DType.F32);
            using var biasT = Tensor.FromHost(dev, bias, new Shape(N), MemoryCategory.Data, "bias", biasBf16 ? DType.BF16 : DType.F32);
            using (MatMul.UseSimtPlan(splits: S))
                MatMul.Gemm(MatrixOperand.Dense(at, transA), MatrixOperand.Dense(bt, transB), MatrixOperand.Dense(ct), M, N, K, B, alpha, accumulate, biasT);

            double[] want = D(c0), bound = Abs(c0);
            MatMul.Reference.Gemm(D(a), 0, aShape.Last, (long)aShape[1] * aShape[2], transA, D(b), 0, bShape.Last, 0, transB,
                want, 0, N, (long)M * N, M, N, K, B, alpha, accumulate, D(bias));
            MatMul.Reference.Gemm(Abs(a), 0, aShape.Last, (long)aShape[1] * aShape[2], transA, Abs(b), 0, bShape.Last, 0, transB,
                bound, 0, N, (long)M * N, M, N, K, B, Math.Abs(alpha), accumulate, Abs(bias));
            AssertWithinRounding(ct.ToFloatArray(), want, bound, K,
                $"A {aShape}{T(transA)} · B {bShape}{T(transB)} + bias [{N}] ({(operandsBf16 ? "bf16" : "f32")} operands, C {(cBf16 ? "bf16" : "f32")}, " +
                $"bias {(biasBf16 ? "bf16" : "f32")}, accumulate {accumulate}, {S} splits)", cBf16);
        });
    }

    [Fact]
    public void Gemm_rejects_a_bias_that_is_not_one_float_per_column_naming_the_op_and_shapes()
    {
        var dev = TestDevice.Get();
        using var x = Tensor.Zeros(dev, new Shape(2, 4, 8), DType.F32, MemoryCategory.Data, "x");
        using var w = Tensor.Zeros(dev, new Shape(6, 8), DType.F32, MemoryCategory.Data, "w");
        using var y = Tensor.Zeros(dev, new Shape(2, 4, 6), DType.F32, MemoryCategory.Data, "y");
        using var sum = Tensor.Zeros(dev, new Shape(8, 6), DType.F32, MemoryCategory.Data, "sum");
        using var longer = Tensor.Zeros(dev, new Shape(7), DType.F32, MemoryCategory.Data, "b7");
        using var matrix = Tensor.Zeros(dev, new Shape(1, 6), DType.F32, MemoryCategory.Data, "b1x6");
        using var ints = Tensor.Zeros(dev, new Shape(6), DType.I32, MemoryCategory.Data, "bi");
        using var good = Tensor.Zeros(dev, new Shape(6), DType.F32, MemoryCategory.Data, "b6");
        void Linear(Tensor bias) => MatMul.Gemm(MatrixOperand.Rows(x), MatrixOperand.Dense(w, transposed: true), MatrixOperand.Rows(y), 8, 6, 8, bias: bias);

        var e = Assert.Throws<ShapeException>(() => Linear(longer));
        Assert.Equal("matmul", e.Op);
        Assert.Contains("bias [7] must be [6]", e.Message);
        Assert.Contains("[2, 4, 6]", e.Message);
        Assert.Contains("bias [1, 6]", Assert.Throws<ShapeException>(() => Linear(matrix)).Message);
        Assert.Contains("bias [6] is int32", Assert.Throws<ShapeException>(() => Linear(ints)).Message);
        // Batch products summed into one C (a weight gradient) take no bias.
        var summed = Assert.Throws<ShapeException>(() =>
            MatMul.Gemm(MatrixOperand.Dense(x, transposed: true), MatrixOperand.Dense(y), MatrixOperand.Dense(sum), 8, 6, 4, 2, bias: good));
        Assert.Contains("sums 2 batch products", summed.Message);
        // The tensor-core entry checks the same, under its own name.
        using var h = Tensor.Zeros(dev, new Shape(8, 8), DType.BF16, MemoryCategory.Data, "h");
        var tc = Assert.Throws<ShapeException>(() =>
            TensorCoreGemm.GemmEmulated(MatrixOperand.Dense(h), MatrixOperand.Dense(h), MatrixOperand.Dense(sum), 8, 6, 8, bias: longer));
        Assert.Equal("tc_gemm", tc.Op);
        Assert.Contains("bias [7] must be [6]", tc.Message);
    }

    [Property(MaxTest = 30)]
    public void MatMul_gradients_match_finite_differences(
        PositiveInt m, PositiveInt n, PositiveInt k, PositiveInt batch, bool transA, bool transB, PositiveInt layout, int seed)
    {
        KernelPaths.ForEach(() =>
        {
            int M = Pick(SmallAwkward, m), N = Pick(SmallAwkward, n), K = Pick(SmallAwkward, k), B = batch.Get % 3 + 1;
            int mode = layout.Get % 4;
            var aShape = Operand(mode is 1 or 2 ? B : 0, transA ? K : M, transA ? M : K);
            var bShape = Operand(mode is 1 or 3 ? B : 0, transB ? N : K, transB ? K : N);
            var rng = new Random(seed);
            var r = GradCheck.Run(TestDevice.Get(),
                [(GradCheck.RandomValues(rng, aShape.Numel), aShape), (GradCheck.RandomValues(rng, bShape.Numel), bShape)], [true, true],
                v => Ops.MatMul(v[0], v[1], transA, transB),
                x => MatMul.Reference.Forward(x[0], aShape, x[1], bShape, transA, transB), seed);
            Assert.True(r.GradientErrors.All(e => e <= GradientTolerance), $"{aShape}{T(transA)}·{bShape}{T(transB)}: {r}");
        });
    }

    [Property(MaxTest = 25)]
    public void Linear_matches_reference_and_finite_differences(PositiveInt lead, PositiveInt rows, PositiveInt inF, PositiveInt outF, bool withBias, int seed)
    {
        KernelPaths.ForEach(() =>
        {
            int L = lead.Get % 3, R = Pick(SmallAwkward, rows), I = Pick(SmallAwkward, inF), O = Pick(SmallAwkward, outF);
            var xShape = L == 0 ? new Shape(R, I) : new Shape(L, R, I);
            var wShape = new Shape(O, I);
            var bShape = new Shape(O);
            var rng = new Random(seed);
            (float[], Shape)[] inputs = withBias
                ? [(GradCheck.RandomValues(rng, xShape.Numel), xShape), (GradCheck.RandomValues(rng, wShape.Numel), wShape), (GradCheck.RandomValues(rng, O), bShape)]
                : [(GradCheck.RandomValues(rng, xShape.Numel), xShape), (GradCheck.RandomValues(rng, wShape.Numel), wShape)];
            var flat = new Shape((int)xShape.Rows, I);
            var r = GradCheck.Run(TestDevice.Get(), inputs, inputs.Select(_ => true).ToArray(),
                v => Ops.Linear(v[0], v[1], withBias ? v[2] : null),
                x =>
                {
                    var y = MatMul.Reference.Forward(x[0], flat, x[1], wShape, transB: true);
                    return withBias ? BiasAdd.Reference.Forward(y, x[2]) : y;
                }, seed);
            // Forward: a dot product of length I ≤ 17 plus the bias: (I + 2)·u ≈ 1.2e-6 of Σ|terms| (see GradientTolerance on cancellation).
            Assert.True(r.ForwardError <= GradientTolerance && r.GradientErrors.All(e => e <= GradientTolerance), $"x {xShape}, W {wShape}, bias {withBias}: {r}");
        });
    }

    [Fact]
    public void Linear_output_has_pytorch_layout_y_equals_x_times_w_transposed_plus_b()
    {
        KernelPaths.ForEach(() =>
        {
            // torch.nn.functional.linear(x=[[1,2]], W=[[1,0],[0,1],[1,1]], b=[10,20,30]) = [[11, 22, 33]].
            var dev = TestDevice.Get();
            using var x = new Var(Tensor.FromHost(dev, [1f, 2f], new Shape(1, 2), MemoryCategory.Data, "x"));
            using var w = new Var(Tensor.FromHost(dev, [1f, 0f, 0f, 1f, 1f, 1f], new Shape(3, 2), MemoryCategory.Data, "w"));
            using var b = new Var(Tensor.FromHost(dev, [10f, 20f, 30f], new Shape(3), MemoryCategory.Data, "b"));
            using var y = Ops.Linear(x, w, b);
            Assert.Equal(new Shape(1, 3), y.Shape);
            Assert.Equal([11f, 22f, 33f], y.Value.ToFloatArray());
        });
    }

    [Fact]
    public void Inner_dimension_mismatch_names_matmul_and_both_shapes()
    {
        var dev = TestDevice.Get();
        using var a = Tensor.Zeros(dev, new Shape(4, 3), DType.F32, MemoryCategory.Data, "a");
        using var b = Tensor.Zeros(dev, new Shape(5, 6), DType.F32, MemoryCategory.Data, "b");
        using var c = Tensor.Zeros(dev, new Shape(4, 6), DType.F32, MemoryCategory.Data, "c");
        var e = Assert.Throws<ShapeException>(() => MatMul.Forward(a, b, c));
        Assert.Equal("matmul", e.Op);
        Assert.Contains("[4, 3]", e.Message);
        Assert.Contains("[5, 6]", e.Message);

        using var va = new Var(a.Share(), requiresGrad: true);
        using var vb = new Var(b.Share(), requiresGrad: true);
        var e2 = Assert.Throws<ShapeException>(() => Ops.MatMul(va, vb));
        Assert.Contains("matmul", e2.Message);
        Assert.Contains("[4, 3]", e2.Message);
        Assert.Contains("[5, 6]", e2.Message);
    }

    [Fact]
    public void Operands_that_address_past_their_tensor_or_mismatched_batches_are_rejected()
    {
        var dev = TestDevice.Get();
        using var x = Tensor.Zeros(dev, new Shape(2, 4, 8), DType.F32, MemoryCategory.Data, "x");
        using var w = Tensor.Zeros(dev, new Shape(8, 8), DType.F32, MemoryCategory.Data, "w");
        using var y = Tensor.Zeros(dev, new Shape(2, 4, 8), DType.F32, MemoryCategory.Data, "y");
        // Batch 3 runs past x's 2 matrices.
        var e = Assert.Throws<ShapeException>(() => MatMul.Gemm(MatrixOperand.Dense(x), MatrixOperand.Dense(w), MatrixOperand.Dense(y), 4, 8, 8, 3));
        Assert.Contains("matmul", e.Message);
        Assert.Contains("[2, 4, 8]", e.Message);
        // An offset that pushes the last row out of range.
        Assert.Throws<ShapeException>(() => MatMul.Gemm(MatrixOperand.Dense(x) with { Offset = 1 }, MatrixOperand.Dense(w), MatrixOperand.Dense(y), 4, 8, 8, 2));
        // ld smaller than the stored row.
        Assert.Throws<ShapeException>(() => MatMul.Gemm(MatrixOperand.Dense(x) with { Ld = 7 }, MatrixOperand.Dense(w), MatrixOperand.Dense(y), 4, 8, 8, 2));
        // Zero dimension, batch mismatch in the convenience form, wrong output shape.
        Assert.Throws<ShapeException>(() => MatMul.Gemm(MatrixOperand.Dense(x), MatrixOperand.Dense(w), MatrixOperand.Dense(y), 0, 8, 8, 2));
        using var x3 = Tensor.Zeros(dev, new Shape(3, 8, 8), DType.F32, MemoryCategory.Data, "x3");
        Assert.Throws<ShapeException>(() => MatMul.Forward(x, x3, y));
        Assert.Throws<ShapeException>(() => MatMul.Forward(x, w, w));
    }

    [Fact]
    public void Linear_rejects_mismatched_in_features_naming_both_shapes()
    {
        var dev = TestDevice.Get();
        using var x = new Var(Tensor.Zeros(dev, new Shape(2, 5), DType.F32, MemoryCategory.Data, "x"));
        using var w = new Var(Tensor.Zeros(dev, new Shape(3, 4), DType.F32, MemoryCategory.Data, "w"));
        var e = Assert.Throws<ShapeException>(() => Ops.Linear(x, w));
        Assert.Contains("linear", e.Message);
        Assert.Contains("[2, 5]", e.Message);
        Assert.Contains("[3, 4]", e.Message);
    }

    private static Shape Operand(int batch, int rows, int cols) => batch == 0 ? new Shape(rows, cols) : new Shape(batch, rows, cols);

    private static string T(bool transposed) => transposed ? "ᵀ" : "";

    internal static double[] D(float[] x) => x.Select(v => (double)v).ToArray();

    internal static double[] Abs(float[] x) => x.Select(v => Math.Abs((double)v)).ToArray();

    /// <summary>
    /// Every element within (length + 3)·u of its bound (|alpha|·|A|·|B| + |C₀| (+ |bias|), computed in float64); for a
    /// bf16 C (<paramref name="bf16"/>) plus its one rounding, 2^-8 of the value.
    /// </summary>
    internal static void AssertWithinRounding(float[] got, double[] want, double[] bound, int length, string what, bool bf16 = false)
    {
        Assert.Equal(want.Length, got.Length);
        for (int i = 0; i < got.Length; i++)
        {
            double tolerance = (length + RoundingsBeyondK) * UnitRoundoff * bound[i];
            if (bf16) tolerance += Bf16Rounding * (Math.Abs(want[i]) + tolerance);
            double error = Math.Abs(got[i] - want[i]);
            Assert.True(error <= tolerance, $"{what}: element {i} is {got[i]}, want {want[i]} (error {error:E2} > bound {tolerance:E2})");
        }
    }
}
