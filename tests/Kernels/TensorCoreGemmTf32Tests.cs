using FsCheck;
using FsCheck.Xunit;
using Memopt.Kernels;
using Memopt.Tensors;
using Memopt.Tests.Harness;
using static Memopt.Tests.Kernels.TensorCoreGemmTests;

namespace Memopt.Tests.Kernels;

/// <summary>
/// The fp32-operand forms of the tensor-core GEMM (TF32 and 3xTF32): the emulated kernel against float64 over the
/// same awkward shapes, transposes, batch modes, offsets, bias and split-K as the bf16 form; the lane addressing the
/// inline PTX folds into immediates; and 3xTF32 really recovering fp32 accuracy that TF32 alone loses.
/// </summary>
public class TensorCoreGemmTf32Tests
{
    private static readonly int[] MnSizes = [1, 2, 5, 8, 9, 16, 17, 31, 33, 64, 70, 127, 129];
    private static readonly int[] KSizes = [1, 3, 4, 5, 7, 8, 9, 15, 16, 17, 31, 32, 33, 70];
    private static readonly TensorCoreGemm.Tile[] Tiles = [TensorCoreGemm.Tile.Narrow, TensorCoreGemm.Tile.NarrowDeep];

    private static int Pick(int[] sizes, PositiveInt i) => sizes[i.Get % sizes.Length];

    [Property(MaxTest = 40)]
    public void Emulated_tf32_and_3xtf32_match_float64_for_every_transpose_batch_mode_offset_and_awkward_shape(
        PositiveInt m, PositiveInt n, PositiveInt k, PositiveInt batch, bool transA, bool transB, PositiveInt mode,
        bool cBf16, bool accumulate, PositiveInt splits, PositiveInt pad, bool threePasses, int seed)
    {
        var batchMode = (BatchMode)(mode.Get % 4);
        var bias = batchMode == BatchMode.SumIntoOneC ? BiasKind.None : (BiasKind)(mode.Get / 4 % 3);
        var g = new Case(Pick(MnSizes, m), Pick(MnSizes, n), Pick(KSizes, k), batch.Get % 3 + 1, transA, transB, batchMode, cBf16,
            accumulate, Alpha: accumulate ? -0.75f : 1f, Splits: splits.Get % 4, Pad: pad.Get % 3 == 0 ? pad.Get % 5 : 0, seed, bias,
            threePasses ? Fp32Matmul.Tf32x3 : Fp32Matmul.Tf32);
        using var scope = TensorCoreGemm.UseTile(Tiles[(m.Get + n.Get) % Tiles.Length]);
        g.Check(emulate: true);
    }

    /// <summary>The real kernels wherever the suite runs on CUDA; elsewhere TryGemmF32 declines without touching C.</summary>
    [Property(MaxTest = 16)]
    public void TryGemmF32_matches_float64_on_cuda_and_declines_elsewhere(
        PositiveInt m, PositiveInt n, PositiveInt k, PositiveInt batch, bool transA, bool transB, PositiveInt mode, bool cBf16, PositiveInt pad,
        bool threePasses, int seed)
    {
        var batchMode = (BatchMode)(mode.Get % 4);
        var bias = batchMode == BatchMode.SumIntoOneC ? BiasKind.None : (BiasKind)(mode.Get / 4 % 3);
        var g = new Case(Pick(MnSizes, m) + m.Get % 3 * 64, Pick(MnSizes, n) + n.Get % 3 * 64, Pick(KSizes, k) + k.Get % 3 * 96,
            batch.Get % 3 + 1, transA, transB, batchMode, cBf16, Accumulate: mode.Get % 2 == 0, Alpha: 0.5f, Splits: 0,
            Pad: pad.Get % 3 == 0 ? 1 : 0, seed, bias, threePasses ? Fp32Matmul.Tf32x3 : Fp32Matmul.Tf32);
        var dev = TestDevice.Get();
        var tile = pad.Get % 2 == 0 || !TensorCoreGemm.DeepAvailable(dev) ? TensorCoreGemm.Tile.Narrow : TensorCoreGemm.Tile.NarrowDeep;
        using var scope = TensorCoreGemm.UseTile(mode.Get % 3 == 0 ? TensorCoreGemm.Tile.Auto : tile);
        g.Check(emulate: false);
    }

    /// <summary>
    /// The split is real: on data with full 24-bit significands, 3xTF32's error is within a small multiple of fp32
    /// accumulation error, at least 256 times below TF32's (whose products lose 2^-11 of each operand).
    /// </summary>
    [Fact]
    public void Three_passes_recover_the_bits_one_tf32_pass_loses()
    {
        var dev = TestDevice.Get();
        const int M = 40, N = 24, K = 70;
        var rng = new Random(7);
        float[] a = GradCheck.RandomValues(rng, M * K), b = GradCheck.RandomValues(rng, K * N);
        using var aT = Tensor.FromHost(dev, a, new Shape(M, K), MemoryCategory.Data, "a");
        using var bT = Tensor.FromHost(dev, b, new Shape(K, N), MemoryCategory.Data, "b");
        double[] want = new double[M * N];
        MatMul.Reference.Gemm(a.Select(v => (double)v).ToArray(), 0, K, 0, false, b.Select(v => (double)v).ToArray(), 0, N, 0, false,
            want, 0, N, 0, M, N, K, 1);
        double Error(Fp32Matmul mode)
        {
            using var cT = Tensor.Zeros(dev, new Shape(M, N), DType.F32, MemoryCategory.Data, "c");
            TensorCoreGemm.GemmF32Emulated(MatrixOperand.Dense(aT), MatrixOperand.Dense(bT), MatrixOperand.Dense(cT), M, N, K, mode);
            return cT.ToFloatArray().Select((v, i) => Math.Abs(v - want[i])).Max();
        }
        double tf32 = Error(Fp32Matmul.Tf32), threePass = Error(Fp32Matmul.Tf32x3);
        double scale = want.Select(Math.Abs).Max();
        Assert.True(tf32 > 1e-5 * scale, $"TF32 error {tf32:G3} is implausibly small for 11-bit operands (max |C| {scale:G3})");
        Assert.True(threePass * 256 < tf32, $"3xTF32 error {threePass:G3} is not 256× below TF32's {tf32:G3}");
        Assert.True(threePass < 64 * UnitRoundoff * scale, $"3xTF32 error {threePass:G3} is not near fp32 (max |C| {scale:G3})");
    }

    [Fact]
    public void Word_lane_offsets_step_by_the_constants_the_ptx_folds_into_immediates_and_hit_32_banks()
    {
        for (int w = 0; w < 4; w++)
            for (int ks = 0; ks < 2; ks++)
            {
                for (int f = 0; f < 4; f++)
                    for (int r = 0; r < 4; r++)
                    {
                        var banks = new HashSet<int>();
                        for (int lane = 0; lane < 32; lane++)
                        {
                            int a = TensorCoreGemm.LdsOffsetAF32(lane, w & 1, ks, f, r);
                            // LoadAMnF32: lane address tcla[(mi mod 2)·2 + r mod 2] + 128·(mi/2) + 2048·(r/2), + 4096 per k8 step.
                            Assert.Equal(TensorCoreGemm.LdsOffsetAF32(lane, w & 1, 0, f & 1, r & 1) + 128 * (f >> 1) + 2048 * (r >> 1) + 4096 * ks, a);
                            Assert.InRange(a, 0, 8192 - 4);
                            banks.Add(a / 4 % 32);
                        }
                        Assert.Equal(32, banks.Count);
                        if (r >= 2) continue;
                        banks.Clear();
                        for (int lane = 0; lane < 32; lane++)
                        {
                            int b = TensorCoreGemm.LdsOffsetBF32(lane, w, ks, f, r, 128);
                            // LoadBMnF32Narrow: lane address tclb[ni] + 2048·r, + 4096 per k8 step.
                            Assert.Equal(TensorCoreGemm.LdsOffsetBF32(lane, w, 0, f, 0, 128) + 2048 * r + 4096 * ks, b);
                            Assert.InRange(b, 0, 8192 - 4);
                            banks.Add(b / 4 % 32);
                        }
                        Assert.Equal(32, banks.Count);
                    }
            }
    }

    [Fact]
    public void The_fp32_chunks_of_an_mn_contiguous_slice_fill_it_once_and_count_words()
    {
        var slots = new HashSet<int>();
        for (int id = 0; id < 512; id++)
        {
            var c = TensorCoreGemm.ChunkMnF32(id, 128, 130, 6, 2000, 128);
            Assert.Equal(0, c.Smem % 16);
            Assert.True(slots.Add(c.Smem / 16), $"chunk {id} lands on slot {c.Smem / 16} twice");
            int krow = id / 32, chunk = id % 32;
            Assert.Equal(6 + krow * 2000L + 2 * (128 + 4 * chunk), c.Elem);
            Assert.Equal(2 * krow, c.KIndex);
            Assert.Equal(chunk == 0 ? 4 : 0, c.Fixed); // rows 128, 129 of 130 exist: 2 fp32 = 4 words in chunk 0
        }
        Assert.True(slots.All(s => s < 512));
    }

    [Fact]
    public void Fp32_kernels_compile_with_their_tensor_core_instructions()
    {
        var dev = TestDevice.Get();
        string three = TensorCoreGemm.CompilePtx(dev, TensorCoreGemm.Tile.Narrow, passes: 3, layout: TensorCoreGemm.ATransposedBit);
        Assert.Equal(2 * 48, Count(three, "mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32"));
        Assert.Equal(2 * 48, Count(three, "cvt.rna.tf32.f32"));
        Assert.Equal(0, Count(three, "m16n8k16"));
        string one = TensorCoreGemm.CompilePtx(dev, TensorCoreGemm.Tile.NarrowDeep, passes: 1, layout: TensorCoreGemm.BTransposedBit | TensorCoreGemm.AVectorBit);
        Assert.Equal(2 * 16, Count(one, "mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32"));
        Assert.Throws<ArgumentException>(() => TensorCoreGemm.CompilePtx(dev, TensorCoreGemm.Tile.Wide, passes: 3));
    }

    [Fact]
    public void Non_fp32_operands_are_declined_and_ieee_is_not_a_tensor_core_mode()
    {
        var dev = TestDevice.Get();
        using var h = Tensor.Zeros(dev, new Shape(8, 8), DType.BF16, MemoryCategory.Data, "h");
        using var f = Tensor.Zeros(dev, new Shape(8, 8), DType.F32, MemoryCategory.Data, "f");
        Assert.False(TensorCoreGemm.TryGemmF32(MatrixOperand.Dense(h), MatrixOperand.Dense(f), MatrixOperand.Dense(f), 8, 8, 8, Fp32Matmul.Tf32));
        var e = Assert.Throws<ShapeException>(() =>
            TensorCoreGemm.GemmF32Emulated(MatrixOperand.Dense(h), MatrixOperand.Dense(f), MatrixOperand.Dense(f), 8, 8, 8, Fp32Matmul.Tf32x3));
        Assert.Contains("A is bfloat16, not float32", e.Message);
        Assert.Throws<ArgumentOutOfRangeException>(() => TensorCoreGemm.PassesOf(Fp32Matmul.Ieee));
        Assert.Contains("leading dimension 6 not a multiple of 4", TensorCoreGemm.LoadPath(new MatrixOperand(f, 0, 6, 0), 1));
    }

    [Fact]
    public void The_modes_are_named_and_parsed_in_one_place_and_tf32_cannot_contradict_3xtf32()
    {
        foreach (var mode in Enum.GetValues<Fp32Matmul>())
            Assert.Equal(mode, Fp32MatmulNames.Parse(mode.Name().ToUpperInvariant()));
        Assert.Contains("--fp32-matmul must be ieee, tf32 or 3xtf32, got 'fp16'", Assert.Throws<ArgumentException>(() => Fp32MatmulNames.Parse("fp16")).Message);
        Assert.Equal(Fp32Matmul.Tf32, new Memopt.Runner.Commands.TrainOptions { Tf32 = true }.ParsedFp32Matmul());
        Assert.Equal("3xtf32", new Memopt.Runner.Commands.TrainOptions { Fp32Matmul = "3xTF32" }.TechniqueLabel());
        Assert.Contains("contradict", Assert.Throws<ArgumentException>(() =>
            new Memopt.Runner.Commands.TrainOptions { Tf32 = true, Fp32Matmul = "3xtf32" }.ParsedFp32Matmul()).Message);
    }

    private static int Count(string text, string what)
    {
        int count = 0;
        for (int i = text.IndexOf(what, StringComparison.Ordinal); i >= 0; i = text.IndexOf(what, i + what.Length, StringComparison.Ordinal)) count++;
        return count;
    }
}
