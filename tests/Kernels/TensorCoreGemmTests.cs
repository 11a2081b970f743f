using FsCheck;
using FsCheck.Xunit;
using Memopt.Kernels;
using Memopt.Tensors;
using Memopt.Tests.Harness;

namespace Memopt.Tests.Kernels;

public class TensorCoreGemmTests
{
    // Tolerance, per element. bf16 inputs are exact in float32 and so is each product (8-bit significands multiply into
    // 16 bits), so the only rounding is the float32 accumulation: a sum of L = K·(batches summed) products, in any
    // order, is within γ_L·Σ|a·b| (Higham §3.1, γ_L = L·u/(1−L·u), u = 2^-24) of the exact sum (split-K only reorders
    // those L − 1 additions: every split holds a term); alpha, the accumulate and the bias add ≤ 3 roundings, with
    // |C₀| and |bias| in the bound. A bf16 C then rounds once more: ≤ 2^-9 relative (half an ulp
    // of an 8-bit significand); 2^-8 keeps a factor 2. Worst-case bounds, so they cannot flake; a wrong fragment index
    // or swizzle moves elements by O(|a||b|), orders of magnitude past them.
    internal const double UnitRoundoff = 1.0 / (1 << 24);
    private const int RoundingsBeyondK = 3;
    private const double Bf16Rounding = 1.0 / 256;
    // Real tensor cores need not round their internal fp32 adds to nearest; the bound gets a factor 4 on CUDA (the
    // observed errors are ~√L·u, far inside either).
    private const double HardwareFactor = 4;

    /// <summary>Sizes around the 128×128 tile, the 32-wide K slice, the 16×8×16 mma and the 8-element chunks, plus 1 and primes.</summary>
    private static readonly int[] MnSizes = [1, 2, 7, 8, 9, 16, 17, 31, 33, 64, 70, 127, 129];
    private static readonly int[] KSizes = [1, 3, 8, 9, 15, 16, 17, 31, 32, 33, 48, 70, 97];

    private static readonly TensorCoreGemm.Tile[] Tiles =
        [TensorCoreGemm.Tile.Narrow, TensorCoreGemm.Tile.Wide, TensorCoreGemm.Tile.NarrowDeep, TensorCoreGemm.Tile.WideDeep, TensorCoreGemm.Tile.NarrowK64];

    private static int Pick(int[] sizes, PositiveInt i) => sizes[i.Get % sizes.Length];

    [Property(MaxTest = 40)]
    public void Emulated_kernel_matches_float64_for_every_transpose_batch_mode_and_awkward_shape(
        PositiveInt m, PositiveInt n, PositiveInt k, PositiveInt batch, bool transA, bool transB, PositiveInt mode,
        bool cBf16, bool accumulate, PositiveInt splits, PositiveInt tile, int seed)
    {
        // Sizes up to 2 tiles of the wide shape along N.
        var g = new Case(Pick(MnSizes, m), Pick(MnSizes, n) + n.Get % 2 * 200, Pick(KSizes, k), batch.Get % 3 + 1, transA, transB,
            (BatchMode)(mode.Get % 4), cBf16, accumulate, Alpha: accumulate ? -0.75f : 1f, Splits: splits.Get % 4, Pad: 0, seed);
        using var scope = TensorCoreGemm.UseTile(Tiles[tile.Get % Tiles.Length]);
        g.Check(emulate: true);
    }

    /// <summary>
    /// Attention-style addressing: operands inside bigger tensors at odd offsets, leading dimensions that are not
    /// multiples of 8 (the CUDA kernel's scalar-load path) and batch strides with gaps; C strided too, elements
    /// outside the addressed matrices untouched.
    /// </summary>
    /// <summary>
    /// The fused bias (fp32 or bf16, one value per column of every batch's C) on every tile: in the epilogue of the
    /// accumulator registers, or with K split, once, in the reduction (added to every partial it would count S times).
    /// </summary>
    [Property(MaxTest = 20)]
    public void Emulated_kernel_adds_the_bias_of_each_column_once_with_and_without_split_k(
        PositiveInt m, PositiveInt n, PositiveInt k, PositiveInt batch, bool transA, bool transB, PositiveInt mode,
        bool cBf16, bool biasBf16, bool accumulate, PositiveInt splits, PositiveInt tile, int seed)
    {
        var g = new Case(Pick(MnSizes, m), Pick(MnSizes, n) + n.Get % 2 * 200, Pick(KSizes, k), batch.Get % 3 + 1, transA, transB,
            (BatchMode)(mode.Get % 3), cBf16, accumulate, Alpha: accumulate ? -0.75f : 1f, Splits: splits.Get % 4, Pad: 0, seed,
            biasBf16 ? BiasKind.Bf16 : BiasKind.F32);
        using var scope = TensorCoreGemm.UseTile(Tiles[tile.Get % Tiles.Length]);
        g.Check(emulate: true);
    }

    [Property(MaxTest = 15)]
    public void Emulated_kernel_addresses_submatrices_at_odd_offsets_and_padded_strides(
        PositiveInt m, PositiveInt n, PositiveInt k, PositiveInt batch, bool transA, bool transB, PositiveInt pad, bool cBf16, PositiveInt tile, int seed)
    {
        var g = new Case(Pick(MnSizes, m), Pick(MnSizes, n), Pick(KSizes, k), batch.Get % 3 + 1, transA, transB,
            BatchMode.BothBatched, cBf16, Accumulate: true, Alpha: 0.125f, Splits: 0, Pad: pad.Get % 5 + 1, seed);
        using var scope = TensorCoreGemm.UseTile(Tiles[tile.Get % Tiles.Length]);
        g.Check(emulate: true);
    }

    /// <summary>
    /// The real kernel wherever the suite runs on CUDA (MEMOPT_TEST_DEVICE=cuda); elsewhere TryGemm must decline
    /// without touching C and say why.
    /// </summary>
    [Property(MaxTest = 12)]
    public void TryGemm_matches_float64_on_cuda_and_declines_elsewhere(
        PositiveInt m, PositiveInt n, PositiveInt k, PositiveInt batch, bool transA, bool transB, PositiveInt mode, bool cBf16, PositiveInt pad, int seed)
    {
        // A bias (fp32, bf16 or none) wherever C does not sum the batches.
        var batchMode = (BatchMode)(mode.Get % 4);
        var bias = batchMode == BatchMode.SumIntoOneC ? BiasKind.None : (BiasKind)(mode.Get / 4 % 3);
        var g = new Case(Pick(MnSizes, m) + m.Get % 3 * 64, Pick(MnSizes, n) + n.Get % 3 * 64, Pick(KSizes, k) + k.Get % 3 * 96,
            batch.Get % 3 + 1, transA, transB, batchMode, cBf16, Accumulate: mode.Get % 2 == 0, Alpha: 0.5f, Splits: 0,
            Pad: pad.Get % 3 == 0 ? 1 : 0, seed, bias);
        // Auto on every other case; a forced tile on the rest (on CUDA, the deep ones only where the device runs them).
        var tile = mode.Get % 2 == 0 ? TensorCoreGemm.Tile.Auto : Tiles[pad.Get % Tiles.Length];
        var dev = TestDevice.Get();
        if (tile is TensorCoreGemm.Tile.NarrowDeep or TensorCoreGemm.Tile.WideDeep or TensorCoreGemm.Tile.NarrowK64 && !TensorCoreGemm.DeepAvailable(dev)) tile = TensorCoreGemm.Tile.Auto;
        using var scope = TensorCoreGemm.UseTile(tile);
        g.Check(emulate: false);
    }

    [Fact]
    public void Ldmatrix_lane_offsets_step_by_the_constants_the_kernel_folds_into_immediates()
    {
        for (int lane = 0; lane < 32; lane++)
            for (int w = 0; w < 4; w++)
                for (int ks = 0; ks < 2; ks++)
                {
                    for (int mi = 0; mi < 4; mi++)
                    {
                        int wm = w & 1;
                        Assert.Equal(TensorCoreGemm.LdmatrixOffsetA(true, lane, wm, ks, 0) + 1024 * mi, TensorCoreGemm.LdmatrixOffsetA(true, lane, wm, ks, mi));
                        Assert.Equal(TensorCoreGemm.LdmatrixOffsetA(false, lane, wm, 0, mi) + 4096 * ks, TensorCoreGemm.LdmatrixOffsetA(false, lane, wm, ks, mi));
                        // 64-deep slices: 128-byte rows, k16 steps 0..3.
                        Assert.Equal(TensorCoreGemm.LdmatrixOffsetA(true, lane, wm, ks + 2, 0, 64) + 2048 * mi, TensorCoreGemm.LdmatrixOffsetA(true, lane, wm, ks + 2, mi, 64));
                        Assert.Equal(TensorCoreGemm.LdmatrixOffsetA(false, lane, wm, 0, mi, 64) + 4096 * (ks + 2), TensorCoreGemm.LdmatrixOffsetA(false, lane, wm, ks + 2, mi, 64));
                    }
                    for (int pair = 0; pair < 2; pair++)
                    {
                        Assert.Equal(TensorCoreGemm.LdmatrixOffsetB(true, lane, w, ks + 2, 0, 128, 64) + 2048 * pair, TensorCoreGemm.LdmatrixOffsetB(true, lane, w, ks + 2, pair, 128, 64));
                        Assert.Equal(TensorCoreGemm.LdmatrixOffsetB(false, lane, w, 0, pair, 128, 64) + 4096 * (ks + 2), TensorCoreGemm.LdmatrixOffsetB(false, lane, w, ks + 2, pair, 128, 64));
                    }
                    foreach (int bn in new[] { 128, 256 })
                        for (int pair = 0; pair < bn / 64; pair++)
                        {
                            Assert.Equal(TensorCoreGemm.LdmatrixOffsetB(true, lane, w, ks, 0, bn) + 1024 * pair, TensorCoreGemm.LdmatrixOffsetB(true, lane, w, ks, pair, bn));
                            Assert.Equal(TensorCoreGemm.LdmatrixOffsetB(false, lane, w, 0, pair, bn) + 32 * bn * ks, TensorCoreGemm.LdmatrixOffsetB(false, lane, w, ks, pair, bn));
                        }
                }
    }

    [Fact]
    public void Every_ldmatrix_phase_reads_eight_distinct_bank_groups_inside_the_slice()
    {
        foreach (bool kc in new[] { true, false })
            foreach (var (bn, sk) in new[] { (128, 32), (256, 32), (128, 64) })
                for (int w = 0; w < 4; w++)
                    for (int ks = 0; ks < sk / 16; ks++)
                        for (int sub = 0; sub < 4; sub++)
                            for (int matrix = 0; matrix < 4; matrix++)
                            {
                                var aGroups = new HashSet<int>();
                                var bGroups = new HashSet<int>();
                                for (int i = 0; i < 8; i++)
                                {
                                    int a = TensorCoreGemm.LdmatrixOffsetA(kc, 8 * matrix + i, w & 1, ks, sub, sk);
                                    Assert.InRange(a, 0, 128 * sk * 2 - 16);
                                    Assert.Equal(0, a % 16);
                                    aGroups.Add(a / 16 % 8);
                                    if (sub < bn / 64)
                                    {
                                        int b = TensorCoreGemm.LdmatrixOffsetB(kc, 8 * matrix + i, w, ks, sub, bn, sk);
                                        Assert.InRange(b, 0, bn * sk * 2 - 16);
                                        Assert.Equal(0, b % 16);
                                        bGroups.Add(b / 16 % 8);
                                    }
                                }
                                Assert.Equal(8, aGroups.Count);
                                if (sub < bn / 64) Assert.Equal(8, bGroups.Count);
                            }
    }

    [Fact]
    public void The_chunks_of_a_slice_land_in_distinct_slots_for_both_orientations_and_slice_heights()
    {
        foreach (bool kc in new[] { true, false })
            foreach (var (rows, sk) in new[] { (128, 32), (256, 32), (128, 64) })
            {
                var slots = new HashSet<int>();
                int chunks = rows * sk / 8;
                for (int id = 0; id < chunks; id++)
                {
                    var c = TensorCoreGemm.Chunk(kc, id, 0, 1000, 0, 1000, rows, sk);
                    Assert.Equal(0, c.Smem % 16);
                    slots.Add(c.Smem / 16);
                }
                Assert.Equal(chunks, slots.Count);
                Assert.True(slots.All(s => s < chunks));
            }
    }

    [Fact]
    public void The_64_deep_kernel_derives_a_threads_other_chunks_from_its_first()
    {
        foreach (bool kc in new[] { true, false })
            foreach (var (x0, rows) in new[] { (0, 1000), (128, 150), (256, 300) })
                for (int tid = 0; tid < TensorCoreGemm.Threads; tid++)
                {
                    var c0 = TensorCoreGemm.Chunk(kc, tid, x0, rows, 5, 77, 128, 64);
                    for (int i = 1; i < 4; i++)
                        Assert.Equal(TensorCoreGemm.Chunk(kc, tid + i * TensorCoreGemm.Threads, x0, rows, 5, 77, 128, 64),
                            TensorCoreGemm.ChunkStep(kc, c0, i, 77, rows - x0 - (tid >> 3)));
                }
    }

    [Fact]
    public void Misaligned_operands_take_the_scalar_load_path_and_say_why()
    {
        var dev = TestDevice.Get();
        using var t = Tensor.Zeros(dev, new Shape(64, 64), DType.BF16, MemoryCategory.Data, "x");
        Assert.StartsWith("cp.async", TensorCoreGemm.LoadPath(new MatrixOperand(t, 0, 64, 0), 1));
        Assert.Contains("offset 3", TensorCoreGemm.LoadPath(new MatrixOperand(t, 3, 32, 0), 1));
        Assert.Contains("leading dimension 60", TensorCoreGemm.LoadPath(new MatrixOperand(t, 0, 60, 0), 1));
        Assert.Contains("batch stride 100", TensorCoreGemm.LoadPath(new MatrixOperand(t, 0, 8, 100), 2));
    }

    [Fact]
    public void Non_bf16_operands_are_declined_and_bad_shapes_name_tc_gemm()
    {
        var dev = TestDevice.Get();
        using var f = Tensor.Zeros(dev, new Shape(4, 8), DType.F32, MemoryCategory.Data, "f");
        using var h = Tensor.Zeros(dev, new Shape(8, 8), DType.BF16, MemoryCategory.Data, "h");
        using var c = Tensor.Zeros(dev, new Shape(4, 8), DType.F32, MemoryCategory.Data, "c");
        Assert.Contains("A is float32", TensorCoreGemm.WhyNot(MatrixOperand.Dense(f), MatrixOperand.Dense(h), MatrixOperand.Dense(c)));
        Assert.False(TensorCoreGemm.TryGemm(MatrixOperand.Dense(f), MatrixOperand.Dense(h), MatrixOperand.Dense(c), 4, 8, 8));

        using var a = Tensor.Zeros(dev, new Shape(4, 8), DType.BF16, MemoryCategory.Data, "a");
        var e = Assert.Throws<ShapeException>(() =>
            TensorCoreGemm.GemmEmulated(MatrixOperand.Dense(a) with { Offset = 1 }, MatrixOperand.Dense(h), MatrixOperand.Dense(c), 4, 8, 8));
        Assert.Equal("tc_gemm", e.Op);
        Assert.Contains("[4, 8]", e.Message);
        Assert.Throws<ShapeException>(() => TensorCoreGemm.GemmEmulated(MatrixOperand.Dense(a), MatrixOperand.Dense(h), MatrixOperand.Dense(c), 4, 8, 0));
        Assert.Throws<ShapeException>(() => TensorCoreGemm.GemmEmulated(MatrixOperand.Dense(a), MatrixOperand.Dense(f), MatrixOperand.Dense(c), 4, 8, 8));
        if (!dev.IsCuda)
            Assert.Contains("CUDA", TensorCoreGemm.WhyNot(MatrixOperand.Dense(a), MatrixOperand.Dense(h), MatrixOperand.Dense(c)));
    }

    public enum BatchMode { BothBatched, ABroadcast, BBroadcast, SumIntoOneC }

    public enum BiasKind { None, F32, Bf16 }

    // fp32 operands. TF32 rounds a and b to 11 significant bits (|a − rna(a)| ≤ 2^-11·|a|), so a product is off by at
    // most (2·2^-11 + 2^-22)·|a·b|. 3xTF32 writes a = big + small + δ with |δ| ≤ 2^-11·|a − big| ≤ 2^-22·|a| and drops
    // small_a·small_b (≤ 2^-22·|a·b|): at most 3·2^-22 plus second-order terms; 3.1·2^-22 bounds them.
    internal const double Tf32ProductError = 2.0 / 2048 + 1.0 / (1 << 22);
    internal const double Tf32x3ProductError = 3.1 / (1 << 22);

    /// <summary>One random GEMM: operands laid out inside flat tensors (with optional padding), run, compared with float64.</summary>
    /// <param name="Fp32">Null: bf16 operands (<see cref="TensorCoreGemm.GemmEmulated"/>, TryGemm); else fp32 operands in that mode
    /// (<see cref="TensorCoreGemm.GemmF32Emulated"/>, TryGemmF32).</param>
    internal sealed record Case(int M, int N, int K, int Batch, bool TransA, bool TransB, BatchMode Mode, bool CBf16,
        bool Accumulate, float Alpha, int Splits, int Pad, int Seed, BiasKind Bias = BiasKind.None, Fp32Matmul? Fp32 = null,
        int LdcAlign = 1, bool ExpectStaged = false)
    {
        public void Check(bool emulate)
        {
            var rng = new Random(Seed);
            var dev = TestDevice.Get();
            bool aBatched = Mode != BatchMode.ABroadcast, bBatched = Mode != BatchMode.BBroadcast, sum = Mode == BatchMode.SumIntoOneC;
            var (aValues, aOp) = Operand(dev, rng, TransA ? K : M, TransA ? M : K, aBatched, TransA, "a");
            var (bValues, bOp) = Operand(dev, rng, TransB ? N : K, TransB ? K : N, bBatched, TransB, "b");
            using var aT = aOp.Tensor;
            using var bT = bOp.Tensor;

            int ldc = (N + Pad + LdcAlign - 1) / LdcAlign * LdcAlign;
            long cBatch = sum ? 0 : (long)M * ldc + Pad;
            long cOffset = Pad;
            long cSize = cOffset + (sum ? 0 : (Batch - 1) * cBatch) + (long)M * ldc;
            float[] c0 = GradCheck.RandomValues(rng, cSize);
            if (CBf16) c0 = c0.Select(BFloat16.Round).ToArray();
            using var cT = Tensor.FromHost(dev, c0, new Shape(checked((int)cSize)), MemoryCategory.Data, "c", CBf16 ? DType.BF16 : DType.F32);
            var cOp = new MatrixOperand(cT, cOffset, ldc, cBatch);
            if (ExpectStaged) Assert.True(TensorCoreGemm.StagesOutput(TensorCoreGemm.Tile.NarrowK64, cOp, Batch, Accumulate, splits: 1, Bias != BiasKind.None), "C should take the staged stores");
            // Bias values of a few units (the size of a product sum here), bf16-representable for a bf16 bias.
            float[]? bias = Bias == BiasKind.None ? null : GradCheck.RandomValues(rng, N, 4.0);
            if (Bias == BiasKind.Bf16) bias = bias!.Select(BFloat16.Round).ToArray();
            using var biasT = bias is null ? null : Tensor.FromHost(dev, bias, new Shape(N), MemoryCategory.Data, "bias", Bias == BiasKind.Bf16 ? DType.BF16 : DType.F32);

            string what = $"{M}×{N}×{K} batch {Batch} {Mode} A{(TransA ? "ᵀ" : "")} B{(TransB ? "ᵀ" : "")} C {(CBf16 ? "bf16" : "f32")}" +
                          $" accumulate {Accumulate} alpha {Alpha} splits {Splits} pad {Pad} bias {Bias} inputs {Fp32?.ToString() ?? "bf16"}";
            bool ran = (Fp32, emulate) switch
            {
                (null, true) => Run(() => TensorCoreGemm.GemmEmulated(aOp, bOp, cOp, M, N, K, Batch, Alpha, Accumulate, Splits, biasT)),
                (null, false) => TensorCoreGemm.TryGemm(aOp, bOp, cOp, M, N, K, Batch, Alpha, Accumulate, biasT),
                ({ } mode, true) => Run(() => TensorCoreGemm.GemmF32Emulated(aOp, bOp, cOp, M, N, K, mode, Batch, Alpha, Accumulate, Splits, biasT)),
                ({ } mode, false) => TensorCoreGemm.TryGemmF32(aOp, bOp, cOp, M, N, K, mode, Batch, Alpha, Accumulate, biasT),
            };
            if (!ran)
            {
                Assert.False(dev.IsCuda, $"TryGemm declined on CUDA: {TensorCoreGemm.WhyNot(aOp, bOp, cOp)} ({what})");
                Assert.Equal(c0, cT.ToFloatArray());
                return;
            }

            double[] want = c0.Select(v => (double)v).ToArray();
            MatMul.Reference.Gemm(aValues, aOp.Offset, aOp.Ld, aOp.BatchStride, TransA, bValues, bOp.Offset, bOp.Ld, bOp.BatchStride, TransB,
                want, cOffset, ldc, cBatch, M, N, K, Batch, Alpha, Accumulate, bias?.Select(v => (double)v).ToArray());
            double[] bound = c0.Select(v => Math.Abs((double)v)).ToArray();
            MatMul.Reference.Gemm(Abs(aValues), aOp.Offset, aOp.Ld, aOp.BatchStride, TransA, Abs(bValues), bOp.Offset, bOp.Ld, bOp.BatchStride, TransB,
                bound, cOffset, ldc, cBatch, M, N, K, Batch, Math.Abs(Alpha), Accumulate, bias?.Select(v => Math.Abs((double)v)).ToArray());

            int terms = K * (sum ? Batch : 1);
            // fp32 operands: each product is off by at most ProductError·|a·b| before the fp32 adds (3 mma per product
            // for 3xTF32, so three times the adds).
            var (productError, adds) = Fp32 switch
            {
                Fp32Matmul.Tf32 => (Tf32ProductError, terms),
                Fp32Matmul.Tf32x3 => (Tf32x3ProductError, 3 * terms),
                _ => (0.0, terms),
            };
            double factor = (productError + (adds + RoundingsBeyondK) * UnitRoundoff * (1 + productError)) * (emulate ? 1 : HardwareFactor);
            float[] got = cT.ToFloatArray();
            for (int i = 0; i < got.Length; i++)
            {
                double tol = factor * bound[i];
                if (CBf16) tol += Bf16Rounding * (Math.Abs(want[i]) + tol);
                Assert.True(Math.Abs(got[i] - want[i]) <= tol + 1e-30,
                    $"{what}: element {i} is {got[i]}, want {want[i]} ± {tol:G3} ({(emulate ? "emulated" : "CUDA")})");
            }
        }

        private static bool Run(Action gemm)
        {
            gemm();
            return true;
        }

        /// <summary>A stored rows×cols bf16 (or fp32) matrix (per batch if batched) at offset Pad, ld cols + Pad, batch stride rows·ld + Pad.</summary>
        private (double[] Values, MatrixOperand Op) Operand(ComputeDevice dev, Random rng, int rows, int cols, bool batched, bool transposed, string name)
        {
            int ld = cols + Pad;
            long stride = batched ? (long)rows * ld + Pad : 0;
            long size = Pad + (batched ? (Batch - 1) * stride : 0) + (long)rows * ld;
            float[] values = GradCheck.RandomValues(rng, size);
            if (Fp32 is null) values = values.Select(BFloat16.Round).ToArray();
            var t = Tensor.FromHost(dev, values, new Shape(checked((int)size)), MemoryCategory.Data, name, Fp32 is null ? DType.BF16 : DType.F32);
            return (values.Select(v => (double)v).ToArray(), new MatrixOperand(t, Pad, ld, stride, transposed));
        }

        private static double[] Abs(double[] values) => values.Select(Math.Abs).ToArray();
    }

    /// <summary>
    /// The 64-deep tile's staged epilogue (output tile through shared memory, 16-byte stores): C rows aligned to 16
    /// bytes with N not a multiple of the chunk, so the last chunk of a row straddles N; edge rows; batches; both C
    /// dtypes; alpha and bias; accumulating into a float32 C (the fused head's dW). Emulated everywhere, the real kernel on CUDA.
    /// </summary>
    [Theory]
    [InlineData(200, 521, 256, 1, false, true, TensorCoreGemmTests.BatchMode.BothBatched, true, TensorCoreGemmTests.BiasKind.F32, 8, 1f, false)]
    [InlineData(130, 300, 64, 2, true, false, TensorCoreGemmTests.BatchMode.BothBatched, false, TensorCoreGemmTests.BiasKind.Bf16, 4, 1f, false)]
    [InlineData(129, 257, 100, 1, false, false, TensorCoreGemmTests.BatchMode.ABroadcast, true, TensorCoreGemmTests.BiasKind.None, 8, 0.5f, false)]
    [InlineData(64, 131, 32, 3, true, true, TensorCoreGemmTests.BatchMode.SumIntoOneC, false, TensorCoreGemmTests.BiasKind.None, 4, -2f, false)]
    [InlineData(200, 521, 256, 1, true, false, TensorCoreGemmTests.BatchMode.BothBatched, false, TensorCoreGemmTests.BiasKind.None, 4, 1f, true)]
    [InlineData(64, 131, 32, 3, true, true, TensorCoreGemmTests.BatchMode.SumIntoOneC, false, TensorCoreGemmTests.BiasKind.None, 4, -0.75f, true)]
    public void Staged_output_tiles_match_float64_with_chunks_straddling_N(int m, int n, int k, int batch, bool transA, bool transB,
        BatchMode mode, bool cBf16, BiasKind bias, int ldcAlign, float alpha, bool accumulate)
    {
        var g = new Case(m, n, k, batch, transA, transB, mode, cBf16, accumulate, alpha, Splits: 1, Pad: 0, Seed: m + n, bias,
            LdcAlign: ldcAlign, ExpectStaged: true);
        using var scope = TensorCoreGemm.UseTile(TensorCoreGemm.Tile.NarrowK64);
        g.Check(emulate: true);
        if (TensorCoreGemm.DeepAvailable(TestDevice.Get())) g.Check(emulate: false);
    }

    /// <summary>Accumulating into C stages only a float32 C without a bias (the bias would have to be added after C).</summary>
    [Theory]
    [InlineData(false, false, false, true)]
    [InlineData(true, false, false, true)]
    [InlineData(true, true, false, false)]
    [InlineData(true, false, true, false)]
    [InlineData(false, true, true, true)]
    public void Accumulating_stages_only_a_float32_C_without_bias(bool accumulate, bool bias, bool cBf16, bool staged)
    {
        using var c = Tensor.Zeros(TestDevice.Get(), new Shape(130, 64), cBf16 ? DType.BF16 : DType.F32, MemoryCategory.Data, "c");
        Assert.Equal(staged, TensorCoreGemm.StagesOutput(TensorCoreGemm.Tile.NarrowK64, MatrixOperand.Dense(c), 1, accumulate, splits: 1, bias));
    }

    /// <summary>
    /// The split-K sum: four outputs per thread where N is a multiple of 4 (16-byte partial reads, five splits: one
    /// four-split block and a tail), one per thread otherwise; both against float64, with the accumulate, alpha and
    /// the bias the sum applies, and the kernel each shape must take.
    /// </summary>
    [Theory]
    [InlineData(33, 64, 200, true, "tc_gemm.split_k_sum_x4")]
    [InlineData(33, 63, 200, false, "tc_gemm.split_k_sum")]
    [InlineData(17, 8, 170, true, "tc_gemm.split_k_sum_x4")]
    public void Split_k_sums_match_float64_four_outputs_per_thread_or_one(int m, int n, int k, bool cBf16, string kernel)
    {
        var g = new Case(m, n, k, 2, false, true, BatchMode.BothBatched, cBf16, Accumulate: true, Alpha: -0.75f, Splits: 5, Pad: 0, Seed: m + n,
            BiasKind.F32);
        using var scope = TensorCoreGemm.UseTile(TensorCoreGemm.Tile.Narrow);
        using (var launches = new LaunchCounter(TestDevice.Get()))
        {
            g.Check(emulate: true);
            Assert.Equal(1, launches[kernel]);
        }
    }

    /// <summary>
    /// The staged tile's layout: the threads' chunks cover the 128 × 128 tile once, 16-byte aligned inside the ring; a
    /// warp's fragment stores (one word per lane for bf16, two for fp32, half a warp at a time) hit 32 distinct banks.
    /// </summary>
    [Fact]
    public void Staged_chunks_cover_the_tile_once_and_fragment_stores_are_free_of_bank_conflicts()
    {
        foreach (bool bf16 in new[] { true, false })
        {
            int perChunk = bf16 ? 8 : 4;
            var seen = new HashSet<(int, int)>();
            for (int tid = 0; tid < TensorCoreGemm.Threads; tid++)
                for (int j = 0; j < TensorCoreGemm.StagedChunksPerThread(bf16); j++)
                {
                    TensorCoreGemm.StagedChunk(tid, j, bf16, out int r, out int c);
                    Assert.True(r is >= 0 and < 128 && c % perChunk == 0 && c is >= 0 and < 128, $"thread {tid} chunk {j}: ({r}, {c})");
                    Assert.Equal(0, TensorCoreGemm.StagedOffset(r, c, bf16) % 16);
                    for (int e = 0; e < perChunk; e++) Assert.True(seen.Add((r, c + e)), $"({r}, {c + e}) twice");
                }
            Assert.Equal(128 * 128, seen.Count);
            Assert.True(TensorCoreGemm.StagedOffset(127, 127, bf16) + (bf16 ? 2 : 4) <= 3 * TensorCoreGemm.StageBytesOf(128, 64));

            // A lane (g, t) of warp tile (wm, wn) stores columns 2t, 2t+1 of rows g and g + 8 of each 16 × 8 fragment.
            for (int warp = 0; warp < 8; warp++)
                for (int mi = 0; mi < 4; mi++)
                    for (int ni = 0; ni < 4; ni++)
                        for (int half = 0; half < (bf16 ? 1 : 2); half++)
                        {
                            var banks = new HashSet<int>();
                            int lanes = bf16 ? 32 : 16;
                            for (int l = half * lanes; l < (half + 1) * lanes; l++)
                            {
                                int r = (warp >> 2) * TensorCoreGemm.WarpM + mi * 16 + (l >> 2), c = (warp & 3) * 32 + ni * 8 + 2 * (l & 3);
                                int word = TensorCoreGemm.StagedOffset(r, c, bf16) / 4;
                                banks.Add(word % 32);
                                if (!bf16) banks.Add((word + 1) % 32);
                            }
                            Assert.Equal(32, banks.Count);
                        }
        }
    }

    /// <summary>TileOf visits every (tile, split, batch) exactly once, in row order or in raster bands (awkward band remainders).</summary>
    [Theory]
    [InlineData(3, 5, 2, 1, 0)]
    [InlineData(32, 32, 1, 1, 16)]
    [InlineData(37, 33, 2, 3, 16)]
    [InlineData(17, 40, 1, 2, 16)]
    public void TileOf_covers_every_tile_once(int tilesM, int tilesN, int splits, int batches, int rasterRows)
    {
        var p = new TensorCoreGemm.TcParams { TilesM = tilesM, TilesN = tilesN, Splits = splits, BlockN = 128, RasterRows = rasterRows };
        var seen = new HashSet<(int, int, int, int)>();
        for (int block = 0; block < tilesM * tilesN * splits * batches; block++)
        {
            TensorCoreGemm.TileOf(block, p, out int m0, out int n0, out int split, out int batch);
            Assert.True(m0 % TensorCoreGemm.BlockM == 0 && m0 / TensorCoreGemm.BlockM < tilesM && n0 % 128 == 0 && n0 / 128 < tilesN, $"block {block}: tile ({m0}, {n0})");
            Assert.True(split < splits && batch < batches, $"block {block}: split {split}, batch {batch}");
            Assert.True(seen.Add((m0, n0, split, batch)), $"block {block}: ({m0}, {n0}, {split}, {batch}) twice");
        }
        Assert.Equal(16, TensorCoreGemm.RasterRowsFor(32, 32));
        Assert.Equal(0, TensorCoreGemm.RasterRowsFor(16, 393)); // the LM head's logits keep the row order
    }
}
