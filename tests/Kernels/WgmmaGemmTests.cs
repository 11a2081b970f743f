using Memopt.Kernels;
using Memopt.Tensors;
using Memopt.Tests.Harness;
using static Memopt.Tests.Kernels.TensorCoreGemmTests;

namespace Memopt.Tests.Kernels;

/// <summary>
/// The 64-deep tile on Hopper's wgmma (TensorCoreGemm.Wgmma.cs): its shared-memory layout and descriptors here, the
/// real kernel against float64 wherever the suite runs on an H100 (MEMOPT_TEST_DEVICE=cuda, compute capability 9.0).
/// </summary>
public class WgmmaGemmTests
{
    /// <summary>
    /// Every transpose (both operand orientations reach both descriptor forms), edge tiles, K not a multiple of the
    /// 64-deep slice, batches, both C dtypes, accumulate, bias, split K, the staged and direct epilogues, and operands
    /// at odd offsets (the scalar-load path, whose 16-byte shared stores the async proxy must also see). The split count
    /// is TryGemm's own plan; <paramref name="splits"/> is what that plan gives on an H100 (checked here on any device):
    /// the 300 × 260 × 1000 and 256 × 256 × 2048 cases split K (their fp32 partials then go through the reduction),
    /// the aligned unsplit ones stage their output tile (fp32 and bf16 C), the rest store directly.
    /// </summary>
    [Theory]
    [InlineData(128, 128, 64, 1, false, false, BatchMode.BothBatched, false, false, 1, 0, BiasKind.None)]
    [InlineData(128, 128, 64, 1, false, true, BatchMode.BothBatched, false, false, 1, 0, BiasKind.None)]
    [InlineData(128, 128, 64, 1, true, false, BatchMode.BothBatched, false, false, 1, 0, BiasKind.None)]
    [InlineData(128, 128, 64, 1, true, true, BatchMode.BothBatched, false, false, 1, 0, BiasKind.None)]
    [InlineData(128, 128, 64, 1, true, false, BatchMode.BothBatched, true, false, 1, 0, BiasKind.Bf16)]
    [InlineData(256, 200, 448, 1, false, true, BatchMode.BothBatched, true, false, 1, 0, BiasKind.F32)]
    [InlineData(300, 260, 1000, 1, false, false, BatchMode.BothBatched, true, false, 2, 0, BiasKind.F32)]
    [InlineData(300, 260, 1000, 1, false, true, BatchMode.BothBatched, false, true, 2, 0, BiasKind.Bf16)]
    [InlineData(300, 260, 1000, 1, true, false, BatchMode.BothBatched, true, true, 2, 0, BiasKind.None)]
    [InlineData(300, 260, 1000, 1, true, true, BatchMode.BothBatched, false, false, 2, 0, BiasKind.F32)]
    [InlineData(129, 257, 97, 3, false, false, BatchMode.ABroadcast, false, false, 1, 0, BiasKind.None)]
    [InlineData(129, 257, 97, 3, true, true, BatchMode.SumIntoOneC, false, true, 1, 0, BiasKind.None)]
    [InlineData(256, 256, 2048, 1, false, true, BatchMode.BothBatched, false, true, 4, 0, BiasKind.F32)]
    [InlineData(200, 136, 300, 2, true, false, BatchMode.BothBatched, true, true, 1, 1, BiasKind.None)]
    [InlineData(70, 90, 130, 2, false, false, BatchMode.BBroadcast, false, false, 1, 3, BiasKind.Bf16)]
    public void Wgmma_kernel_matches_float64(int m, int n, int k, int batch, bool transA, bool transB, BatchMode mode,
        bool cBf16, bool accumulate, int splits, int pad, BiasKind bias)
    {
        var dev = TestDevice.Get();
        // The case labelled split really splits K on an H100 (132 multiprocessors, the 64-deep tile).
        int splitsOnH100 = TensorCoreGemm.PlanOf(m, n, k, batch, mode == BatchMode.SumIntoOneC, TensorCoreGemm.LayoutOf(transA, true, transB, true),
            deepTiles: true, 132, TensorCoreGemm.Tile.NarrowK64).Splits;
        Assert.Equal(splits, splitsOnH100);
        bool hopper = dev.Accelerator is ILGPU.Runtime.Cuda.CudaAccelerator { Architecture.Major: 9, Architecture.Minor: 0 };
        if (hopper) Assert.True(TensorCoreGemm.WgmmaAvailable(dev), $"wgmma unavailable on compute capability 9.0: {TensorCoreGemm.WgmmaUnavailableBecause(dev)}");
        else Assert.False(TensorCoreGemm.WgmmaFor(dev));
        using var tile = TensorCoreGemm.UseTile(TensorCoreGemm.Tile.NarrowK64);
        using var mma = TensorCoreGemm.UseMma(TensorCoreGemm.MmaKind.Wgmma);
        var g = new Case(m, n, k, batch, transA, transB, mode, cBf16, accumulate, accumulate ? -0.75f : 1f, splits, pad, Seed: m * 31 + n + k, bias);
        using var launches = new LaunchCounter(dev);
        g.Check(emulate: false);
        // On the H100 the GEMM must really have run on wgmma, not fallen back to mma.sync.
        Assert.Equal(hopper, launches.Keys.Any(key => key.StartsWith("tc_gemm_wgmma.", StringComparison.Ordinal)));
    }

    /// <summary>
    /// Auto takes wgmma where each group walks at least WgmmaMinSlices 64-deep K slices and mma.sync below (K = 256, the
    /// forward products, measured mixed); forcing wgmma takes it whatever K. Seen through the launched kernels' keys.
    /// </summary>
    [Theory]
    [InlineData(256, TensorCoreGemm.MmaKind.Auto, false)]
    [InlineData(448, TensorCoreGemm.MmaKind.Auto, false)]
    [InlineData(512, TensorCoreGemm.MmaKind.Auto, true)]
    [InlineData(256, TensorCoreGemm.MmaKind.Wgmma, true)]
    [InlineData(4096, TensorCoreGemm.MmaKind.MmaSync, false)]
    public void Auto_takes_wgmma_from_eight_k_slices_per_group(int k, TensorCoreGemm.MmaKind kind, bool wgmma)
    {
        var dev = TestDevice.Get();
        // 18 × 18 output tiles, more than an H100's 132 multiprocessors: PlanOf splits K only below that, so a group walks all of K.
        const int m = 2304, n = 2304;
        using var a = Tensor.Zeros(dev, new Shape(m, k), DType.BF16, MemoryCategory.Data, "a");
        using var b = Tensor.Zeros(dev, new Shape(n, k), DType.BF16, MemoryCategory.Data, "b");
        using var c = Tensor.Zeros(dev, new Shape(m, n), DType.F32, MemoryCategory.Data, "c");
        using var tile = TensorCoreGemm.UseTile(TensorCoreGemm.Tile.NarrowK64);
        using var mma = TensorCoreGemm.UseMma(kind);
        using var launches = new LaunchCounter(dev);
        bool ran = TensorCoreGemm.TryGemm(MatrixOperand.Dense(a), MatrixOperand.Dense(b, transposed: true), MatrixOperand.Dense(c), m, n, k);
        if (!TensorCoreGemm.WgmmaAvailable(dev))
        {
            Assert.Equal(dev.IsCuda, ran);
            Assert.Equal(0, launches.Keys.Count(key => key.StartsWith("tc_gemm_wgmma.", StringComparison.Ordinal)));
            return;
        }
        int layout = TensorCoreGemm.LayoutOf(MatrixOperand.Dense(a), MatrixOperand.Dense(b, transposed: true), 1);
        Assert.Equal(wgmma ? TensorCoreGemm.MmaKind.Wgmma : TensorCoreGemm.MmaKind.MmaSync,
            TensorCoreGemm.InstructionFor(MatrixOperand.Dense(a), MatrixOperand.Dense(b, transposed: true), MatrixOperand.Dense(c), m, n, k));
        Assert.Equal(1, TensorCoreGemm.PlanOf(m, n, k, 1, false, layout, deepTiles: true, dev.Multiprocessors, TensorCoreGemm.Tile.NarrowK64).Splits);
        Assert.Equal(wgmma ? 1 : 0, launches[$"tc_gemm_wgmma.{layout}"]);
        Assert.Equal(wgmma ? 0 : 1, launches[$"tc_gemm.NarrowK64.{layout}"]);
    }

    [Fact]
    public void Mn_slices_fill_each_slot_once_and_follow_the_128_byte_swizzle()
    {
        var seen = new HashSet<int>();
        for (int krow = 0; krow < 64; krow++)
            for (int chunk = 0; chunk < 16; chunk++)
            {
                int at = TensorCoreGemm.WgmmaMnOffset(krow, chunk);
                Assert.True(at % 16 == 0 && at >= 0 && at < 16384);
                Assert.True(seen.Add(at), $"k-row {krow} chunk {chunk} lands on a taken slot");
                // The hardware's 128-byte swizzle: address bits 4-6 are the chunk inside its 128-byte row XOR bits 7-9.
                int unswizzled = (chunk >> 3) * 8192 + krow * 128 + ((chunk & 7) << 4);
                Assert.Equal(unswizzled ^ (((unswizzled >> 7) & 7) << 4), at);
            }
        // The K-contiguous slices the mma.sync kernel already wrote are the same swizzle on [128 rows][128 bytes].
        for (int row = 0; row < 128; row++)
            for (int chunk = 0; chunk < 8; chunk++)
            {
                int plain = row * 128 + (chunk << 4);
                Assert.Equal(plain ^ (((plain >> 7) & 7) << 4), TensorCoreGemm.KContiguousOffset(row, chunk, 64));
            }
    }

    [Fact]
    public void A_threads_other_mn_chunks_are_2048_bytes_apart_in_the_wgmma_layout()
    {
        foreach (var (x0, rows) in new[] { (0, 1000), (128, 150) })
            for (int tid = 0; tid < TensorCoreGemm.Threads; tid++)
            {
                var c0 = TensorCoreGemm.Chunk(false, tid, x0, rows, 5, 77, 128, 64);
                c0.Smem = TensorCoreGemm.WgmmaMnOffset(tid >> 4, tid & 15);
                for (int i = 1; i < 4; i++)
                {
                    int id = tid + i * TensorCoreGemm.Threads;
                    var want = TensorCoreGemm.Chunk(false, id, x0, rows, 5, 77, 128, 64);
                    want.Smem = TensorCoreGemm.WgmmaMnOffset(id >> 4, id & 15);
                    Assert.Equal(want, TensorCoreGemm.ChunkStep(false, c0, i, 77, rows - x0 - (tid >> 3), mnSmemStep: 2048));
                }
            }
    }

    /// <summary>
    /// The kernel's slices read back through its own descriptors, in the PTX ISA's model of what wgmma reads
    /// (<see cref="TensorCoreGemm.WgmmaElementAddress"/>): for each operand orientation, both warpgroups and the four
    /// k16 steps of a stage in a ring at a 1024-aligned base, every element of A (64 × 16 per warpgroup) and of B
    /// (128 × 16) is the matrix's own. A swapped leading/stride offset, a wrong k16 step or warpgroup offset, or a
    /// layout the descriptors do not describe reads other elements.
    /// </summary>
    [Theory]
    [InlineData(false, false)]
    [InlineData(false, true)]
    [InlineData(true, false)]
    [InlineData(true, true)]
    public void Each_k16_step_reads_its_own_elements_through_the_kernels_descriptors(bool transA, bool transB)
    {
        bool aKc = !transA, bKc = transB;
        const int ringBase = 5 * 1024, stage = 32 * 1024, aSlice = 16 * 1024;
        int aBase = ringBase + stage, bBase = aBase + aSlice;   // the ring's second stage
        var smem = new ushort[(ringBase + 3 * stage) / 2];
        static ushort A(int m, int k) => (ushort)(1 + m * 64 + k);
        static ushort B(int n, int k) => (ushort)(20000 + n * 64 + k);
        for (int row = 0; row < 128; row++)
            for (int k = 0; k < 64; k++)
            {
                smem[(aBase + SliceOffset(aKc, row, k)) / 2] = A(row, k);
                smem[(bBase + SliceOffset(bKc, row, k)) / 2] = B(row, k);
            }
        ulong stageUnits = (ulong)(aBase >> 4);
        for (int j = 0; j < 4; j++)
        {
            for (int wg = 0; wg < 2; wg++)
            {
                ulong da = TensorCoreGemm.WgmmaOperandDescriptor(TensorCoreGemm.WgmmaDescriptor(aKc), 0, wg) + stageUnits + (ulong)(j * TensorCoreGemm.WgmmaKStepUnits(aKc));
                for (int m = 0; m < 64; m++)
                    for (int k = 0; k < 16; k++)
                        Assert.Equal(A(wg * 64 + m, 16 * j + k), smem[TensorCoreGemm.WgmmaElementAddress(da, aKc, m, k) / 2]);
            }
            ulong db = TensorCoreGemm.WgmmaOperandDescriptor(TensorCoreGemm.WgmmaDescriptor(bKc), aSlice, 0) + stageUnits + (ulong)(j * TensorCoreGemm.WgmmaKStepUnits(bKc));
            for (int n = 0; n < 128; n++)
                for (int k = 0; k < 16; k++)
                    Assert.Equal(B(n, 16 * j + k), smem[TensorCoreGemm.WgmmaElementAddress(db, bKc, n, k) / 2]);
        }
    }

    /// <summary>Byte offset of element (row, k) in the wgmma kernel's 64-deep slice of 128 rows: K-contiguous or MN-contiguous.</summary>
    private static int SliceOffset(bool kContiguous, int row, int k) => kContiguous
        ? TensorCoreGemm.KContiguousOffset(row, k >> 3, 64) + (k & 7) * 2
        : TensorCoreGemm.WgmmaMnOffset(k, row >> 3) + (row & 7) * 2;

    [Fact]
    public void Descriptors_carry_the_strides_and_the_128_byte_swizzle_and_the_ptx_targets_sm_90a()
    {
        ulong k = TensorCoreGemm.WgmmaDescriptor(kMajor: true);
        Assert.Equal(0UL, k & 0x3FFF);                  // start address: added in the kernel
        Assert.Equal(1UL, (k >> 16) & 0x3FFF);          // leading offset unused by K-major swizzled layouts (1)
        Assert.Equal(1024UL >> 4, (k >> 32) & 0x3FFF);  // 8 rows of 128 bytes
        Assert.Equal(1UL, k >> 62);                     // 128-byte swizzle
        ulong mn = TensorCoreGemm.WgmmaDescriptor(kMajor: false);
        Assert.Equal(1UL, mn >> 62);
        Assert.Equal(8192UL >> 4, (mn >> 16) & 0x3FFF);  // leading: the next 64 MN rows (the other half of the slice)
        Assert.Equal(1024UL >> 4, (mn >> 32) & 0x3FFF);  // stride: the next 8 k-rows

        // Each layout's PTX advances its descriptors by the k16 steps the model above reads, and transposes as it should.
        foreach (bool transA in new[] { false, true })
            foreach (bool transB in new[] { false, true })
            {
                int layout = TensorCoreGemm.AVectorBit | TensorCoreGemm.BVectorBit | (transA ? TensorCoreGemm.ATransposedBit : 0) | (transB ? TensorCoreGemm.BTransposedBit : 0);
                var ptx = TensorCoreGemm.CompileWgmmaPtx(TestDevice.Get(), layout);
                Assert.Contains("\n.target sm_90a\n", ptx);
                bool aKc = !transA, bKc = transB;
                Assert.Contains($"add.s64 da, da, {TensorCoreGemm.WgmmaKStepUnits(aKc)}; add.s64 db, db, {TensorCoreGemm.WgmmaKStepUnits(bKc)};", ptx);
                Assert.Contains($"wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16 {{tcc0,", ptx);
                Assert.Contains($"}}, da, db, wgp, 1, 1, {(aKc ? 0 : 1)}, {(bKc ? 0 : 1)};", ptx);
            }
        Assert.Throws<InvalidOperationException>(() => TensorCoreGemm.WgmmaPtx(".version 8.8\n.address_size 64\n"));
    }
}
