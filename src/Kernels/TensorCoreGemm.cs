using System.Runtime.InteropServices;
using ILGPU;
using ILGPU.Runtime;
using ILGPU.Runtime.Cuda;
using Memopt.Tensors;

namespace Memopt.Kernels;

/// <summary>
/// Batched bf16 GEMM on tensor cores, fp32 accumulation: C[b] = alpha·op(A[b])·op(B[b]) (+ C[b] when accumulating)
/// (+ a bias per column of C, when given), with the addressing and semantics of <see cref="MatMul.Gemm"/> (offsets,
/// leading dimensions, batch strides, a batch stride of 0 broadcasting, a C batch stride of 0 with batch &gt; 1 summing
/// the batch products). A and B are bf16; C is fp32 or bf16 (a bf16 C is rounded once, after alpha, after adding the
/// old C and after adding the bias); the bias is fp32 or bf16.
///
/// Memory flow (CUDA): one 256-thread group owns one 128×BN output tile, BN = 128 ("narrow") or 256 ("wide"): 8 warps,
/// 2 along M × 4 along N, each warp a 64×(BN/4) tile of m16n8 accumulators (64 or 128 fp32 registers per thread).
/// The group walks K in slices of 32 or 64 through a ring of shared-memory stages (48 KB declared in the PTX, or up to
/// 96 KB of dynamic shared memory for the "deep" tiles; the default, <see cref="Tile.NarrowK64"/>, is 128×128 with
/// 64-deep slices in 3 × 32 KB): each thread copies its 16-byte chunks of A's and B's slice with cp.async (or, for
/// operands whose chunk addresses are not 16-byte aligned, with plain loads and one 16-byte shared store), chunks past
/// M, N or K zero-filled, so the copy of slice q+stages-1 overlaps the math on slice q; one barrier per slice. Each
/// slice is stored in the operand's own orientation ("K-contiguous" [row][k] or "MN-contiguous" [k][row]) with an XOR
/// swizzle of the 16-byte chunks that keeps every ldmatrix phase free of bank conflicts; ldmatrix (.trans for
/// MN-contiguous slices) turns them into mma fragments, so every transpose combination runs on the same path. Per k16
/// step a warp issues 4 + BN/64 ldmatrix.x4 and BN/8 mma.sync.m16n8k16.row.col.f32.bf16 (16 or 32). Fragments,
/// accumulators and this lane's ldmatrix addresses live in PTX registers named in the inline assembly (tca*, tcb*,
/// tcc*, tcl*): ILGPU routes CudaAsm outputs through local memory and re-derives addresses inside loops, named
/// registers do neither. Epilogue: alpha, accumulate, bias (read once per accumulator column: a lane's 2 columns of
/// each 8-wide fragment, before the fragment's rows are stored), fp32 or bf16 store straight from the registers, or,
/// in the 64-deep tile when C is aligned and not accumulated, staged through shared memory into 16-byte stores. When
/// the output has too few tiles to fill the GPU and K is long (weight gradients: M, N ≤ 1024, K = B·T), K is split
/// across groups that write fp32 partial tiles to a workspace, summed in a fixed order by a second kernel
/// (deterministic), which alone adds the bias.
/// Measurements of each tile and version: docs/performance.md.
/// fp32 operands (<see cref="TryGemmF32"/>, --fp32-matmul tf32|3xtf32): the narrow tiles with m16n8k8.tf32 mma, one pass
/// (TF32) or three (3xTF32: big and small TF32 parts of every fragment), the operands seen as 16-bit words so that the
/// copies, swizzles and K-contiguous ldmatrix addressing are the bf16 ones byte for byte (TensorCoreKernel);
/// launch bounds hold those kernels to 128 registers, two groups per SM.
///
/// The CPU accelerator cannot run PTX: <see cref="GemmEmulated"/> runs the same tile schedule with one thread per
/// group, emulating cp.async, ldmatrix and mma lane by lane from the PTX ISA's fragment layouts, through the same
/// index helpers as the CUDA kernel (swizzle, chunk assignment, ldmatrix lane addresses, accumulator coordinates);
/// the tests check it against float64. <see cref="TryGemm"/> itself returns false off CUDA.
/// </summary>
public static partial class TensorCoreGemm
{
    /// <summary>BlockK is the depth of a K slice for every tile but <see cref="Tile.NarrowK64"/> (64).</summary>
    public const int BlockM = 128, BlockK = 32, Threads = 256, WarpM = 64;
    /// <summary>Bytes of A's 32-deep slice in a stage (128 rows × 32 k × 2 bytes); B's slice (BN rows) follows it.</summary>
    public const int ASliceBytes = 8192;

    /// <summary>The group tile and pipeline depth.</summary>
    public enum Tile
    {
        /// <summary>The fastest measured tile for the layout (<see cref="ChooseTile"/>).</summary>
        Auto,
        /// <summary>128×128, 3 stages, 48 KB of static shared memory.</summary>
        Narrow,
        /// <summary>128×256, 2 stages, 48 KB of static shared memory.</summary>
        Wide,
        /// <summary>128×128, 4 stages, 64 KB of dynamic shared memory.</summary>
        NarrowDeep,
        /// <summary>128×256, 4 stages, 96 KB of dynamic shared memory.</summary>
        WideDeep,
        /// <summary>128×128 with 64-deep K slices (half the barriers per mma), 3 stages, 96 KB of dynamic shared memory.</summary>
        NarrowK64,
    }

    public static int BlockNOf(Tile tile) => tile is Tile.Wide or Tile.WideDeep ? 256 : 128;
    public static int StagesOf(Tile tile) => tile switch { Tile.Narrow or Tile.NarrowK64 => 3, Tile.Wide => 2, _ => 4 };
    public static int SliceKOf(Tile tile) => tile == Tile.NarrowK64 ? 64 : BlockK;
    public static int StageBytesOf(int blockN, int sliceK = BlockK) => (BlockM + blockN) * sliceK * 2;
    private static bool IsDeep(Tile tile) => tile is Tile.NarrowDeep or Tile.WideDeep or Tile.NarrowK64;

    private static readonly LaunchOverride<Tile> TileOverride = new();

    /// <summary>Forces <paramref name="tile"/> for the GEMMs of this logical thread until disposed (benchmarks, tests).</summary>
    public static IDisposable UseTile(Tile tile) => TileOverride.Use(tile);

    // Kernel variants: layout bits (the four instantiations of the generic kernel per tile).
    public const int ATransposedBit = 1, BTransposedBit = 2, AVectorBit = 4, BVectorBit = 8;

    /// <summary>Why the tensor-core path cannot take this GEMM (the caller then uses the SIMT GEMM), or null if it can.</summary>
    public static string? WhyNot(MatrixOperand a, MatrixOperand b, MatrixOperand c) =>
        WhyNotDTypes(a, b, c) ?? WhyNotOn(a.Tensor.Device);

    /// <summary>Why this device cannot run the tensor-core path at all (null: CUDA with bf16 tensor cores).</summary>
    public static string? WhyNotOn(ComputeDevice device)
    {
        if (!device.IsCuda) return "not a CUDA device (inline PTX runs only there)";
        if (device.Accelerator is not CudaAccelerator { Architecture.Major: >= 8 }) return "the GPU has no bf16 tensor cores (compute capability < 8.0)";
        return null;
    }

    public static bool Supports(MatrixOperand a, MatrixOperand b, MatrixOperand c) => WhyNot(a, b, c) is null;

    /// <summary>Tensor-core passes per product for fp32 operands: 1 rounds them to TF32, 3 splits each into a TF32 big and small part (3xTF32).</summary>
    public static int PassesOf(Fp32Matmul mode) => mode switch
    {
        Fp32Matmul.Tf32 => 1,
        Fp32Matmul.Tf32x3 => 3,
        _ => throw new ArgumentOutOfRangeException(nameof(mode), mode, "tc_gemm: IEEE fp32 GEMMs run on the SIMT kernels, not the tensor cores"),
    };

    /// <summary>
    /// C[b] = alpha·op(A[b])·op(B[b]) (+ C[b]) (+ bias) for fp32 A and B on tensor cores, rounded to TF32
    /// (<see cref="Fp32Matmul.Tf32"/>) or as 3xTF32 (<see cref="Fp32Matmul.Tf32x3"/>: each operand x = big + small,
    /// big = rna_tf32(x), small = rna_tf32(x − big), and the product summed as small·big + big·small + big·big, within
    /// about 3·2^-22 of |x·y| per product); false (nothing launched) off CUDA or for non-fp32 operands. The narrow 128×128
    /// tiles of the bf16 kernel, 16 fp32 of K per slice.
    /// </summary>
    public static bool TryGemmF32(MatrixOperand a, MatrixOperand b, MatrixOperand c, int m, int n, int k, Fp32Matmul mode, int batch = 1,
        float alpha = 1f, bool accumulate = false, Tensor? bias = null)
    {
        int passes = PassesOf(mode);
        if (WhyNotDTypes(a, b, c, passes) is not null || WhyNotOn(a.Tensor.Device) is not null) return false;
        Run(a, b, c, m, n, k, batch, alpha, accumulate, bias, emulate: false, splits: 0, passes);
        return true;
    }

    /// <summary>The emulated twin of <see cref="TryGemmF32"/> on any device (see <see cref="GemmEmulated"/>).</summary>
    public static void GemmF32Emulated(MatrixOperand a, MatrixOperand b, MatrixOperand c, int m, int n, int k, Fp32Matmul mode, int batch = 1,
        float alpha = 1f, bool accumulate = false, int splits = 0, Tensor? bias = null)
    {
        int passes = PassesOf(mode);
        if (WhyNotDTypes(a, b, c, passes) is string reason) throw new ShapeException("tc_gemm", reason);
        Run(a, b, c, m, n, k, batch, alpha, accumulate, bias, emulate: true, splits, passes);
    }

    /// <summary>
    /// C[b] = alpha·op(A[b])·op(B[b]) (+ C[b]) on tensor cores; false (nothing launched) when <see cref="WhyNot"/>
    /// gives a reason. Every transpose combination and any alignment is taken: operands whose offset, leading dimension
    /// or batch stride is not a multiple of 8 elements load with plain loads instead of cp.async (<see cref="LoadPath"/>).
    /// </summary>
    public static bool TryGemm(MatrixOperand a, MatrixOperand b, MatrixOperand c, int m, int n, int k, int batch = 1,
        float alpha = 1f, bool accumulate = false, Tensor? bias = null)
    {
        if (WhyNot(a, b, c) is not null) return false;
        Run(a, b, c, m, n, k, batch, alpha, accumulate, bias, emulate: false, splits: 0, passes: 0);
        return true;
    }

    /// <summary>
    /// The emulated twin on any device (the CPU accelerator in tests): the same tiles, swizzle, lane addressing and
    /// fragment layouts as the CUDA kernel, with cp.async/ldmatrix/mma emulated lane by lane. <paramref name="splits"/>
    /// &gt; 0 forces that many K splits (0 chooses as on CUDA); the tile comes from <see cref="UseTile"/> (narrow by default).
    /// </summary>
    public static void GemmEmulated(MatrixOperand a, MatrixOperand b, MatrixOperand c, int m, int n, int k, int batch = 1,
        float alpha = 1f, bool accumulate = false, int splits = 0, Tensor? bias = null)
    {
        if (WhyNotDTypes(a, b, c) is string reason) throw new ShapeException("tc_gemm", reason);
        Run(a, b, c, m, n, k, batch, alpha, accumulate, bias, emulate: true, splits, passes: 0);
    }

    /// <summary>How an operand's slices reach shared memory: "cp.async" when every chunk address is 16-byte aligned, else "scalar" with the reason.</summary>
    public static string LoadPath(MatrixOperand x, int batch)
    {
        string? why = MisalignedBecause(x, batch);
        return why is null ? "cp.async 16 B" : $"scalar loads ({why})";
    }

    /// <summary>The kernel variant bits of a GEMM's operands: which are transposed, which load with cp.async.</summary>
    public static int LayoutOf(MatrixOperand a, MatrixOperand b, int batch) =>
        LayoutOf(a.Transposed, MisalignedBecause(a, batch) is null, b.Transposed, MisalignedBecause(b, batch) is null);

    /// <summary>The kernel variant bits from the operands' facts: transposed, and loaded with cp.async (every chunk 16-byte aligned).</summary>
    public static int LayoutOf(bool aTransposed, bool aVector, bool bTransposed, bool bVector) =>
        (aTransposed ? ATransposedBit : 0) | (bTransposed ? BTransposedBit : 0) | (aVector ? AVectorBit : 0) | (bVector ? BVectorBit : 0);

    /// <summary>
    /// The tile <see cref="TryGemm"/> uses on this device for an operand layout (<see cref="ATransposedBit"/> etc.).
    /// Measured on the H100 (docs/performance.md): the narrow tiles fit two groups per SM (≤ 128 registers) and beat
    /// the wide ones (231 registers, one group); 64-deep slices beat 32-deep ones everywhere except where an
    /// MN-contiguous operand is misaligned (scalar loads of 4 chunks per slice), and need dynamic shared memory.
    /// </summary>
    public static Tile ChooseTile(ComputeDevice device, int layout) => ChooseTile(TileOverride.Value, DeepTilesFor(device), layout);

    /// <summary>
    /// <see cref="ChooseTile(ComputeDevice, int)"/> from facts: a forced tile (<see cref="UseTile"/>) wins; without the
    /// deep tiles (<see cref="DeepAvailable"/>) the narrow one; else 64-deep slices unless an MN-contiguous operand loads with scalar loads.
    /// </summary>
    public static Tile ChooseTile(Tile requested, bool deepTiles, int layout)
    {
        if (requested != Tile.Auto) return requested;
        if (!deepTiles) return Tile.Narrow;
        bool aScalarMn = (layout & ATransposedBit) != 0 && (layout & AVectorBit) == 0;
        bool bScalarMn = (layout & BTransposedBit) == 0 && (layout & BVectorBit) == 0;
        return aScalarMn || bScalarMn ? Tile.Narrow : Tile.NarrowK64;
    }

    /// <summary>
    /// The tile of an fp32-operand (TF32, 3xTF32) GEMM: only the 32-deep narrow tiles have fp32 forms; a forced narrow
    /// tile is kept, anything else becomes the 4-stage one where the deep tiles run, else the 3-stage one.
    /// </summary>
    public static Tile ChooseTileF32(Tile requested, bool deepTiles) =>
        requested is Tile.Narrow or Tile.NarrowDeep ? requested : deepTiles ? Tile.NarrowDeep : Tile.Narrow;

    /// <summary>Whether the auto tile choice may take a deep tile here (a forced tile needs no probe: the probe itself forces one).</summary>
    private static bool DeepTilesFor(ComputeDevice device) => TileOverride.Value == Tile.Auto && DeepAvailable(device);

    /// <summary>
    /// The PTX ILGPU generates for one kernel variant (by default the non-transposed, cp.async, bf16 form of <paramref name="tile"/>),
    /// for inspection with ptxas -v or cuobjdump; the device's own backend on CUDA, an sm_90 one elsewhere.
    /// </summary>
    public static string CompilePtx(ComputeDevice device, Tile tile, int passes = 0, int layout = AVectorBit | BVectorBit)
    {
        var method = KernelMethod(tile == Tile.Auto ? Tile.Narrow : tile, layout, passes);
        return WarpMma.CompilePtx(device, method);
    }

    private static string? WhyNotDTypes(MatrixOperand a, MatrixOperand b, MatrixOperand c, int passes = 0)
    {
        var inputs = passes == 0 ? DType.BF16 : DType.F32;
        if (a.Tensor.DType != inputs) return $"A is {a.Tensor.DType.Name()}, not {inputs.Name()}";
        if (b.Tensor.DType != inputs) return $"B is {b.Tensor.DType.Name()}, not {inputs.Name()}";
        if (c.Tensor.DType is not (DType.F32 or DType.BF16)) return $"C is {c.Tensor.DType.Name()}, not f32 or bf16";
        return null;
    }

    /// <summary>Null when every 16-byte chunk (8 bf16 or 4 fp32) of the operand starts on a 16-byte boundary, else the first reason it does not.</summary>
    private static string? MisalignedBecause(MatrixOperand x, int batch)
    {
        int size = x.Tensor.DType.SizeOf();
        long start = (long)x.Tensor.Address + x.Offset * size;
        return MisalignedBecause(start, x.Offset, x.Ld, x.BatchStride, batch, size);
    }

    /// <summary>
    /// <see cref="MisalignedBecause(MatrixOperand, int)"/> from facts: the address of the operand's first element
    /// (<paramref name="offset"/> elements into its tensor), its leading dimension and batch stride.
    /// </summary>
    public static string? MisalignedBecause(long startAddress, long offset, int ld, long batchStride, int batch, int elementBytes = 2)
    {
        int chunk = 16 / elementBytes;
        if (startAddress % 16 != 0) return $"start address {startAddress % 16} bytes past a 16-byte boundary (offset {offset})";
        if (ld % chunk != 0) return $"leading dimension {ld} not a multiple of {chunk}";
        if (batch > 1 && batchStride % chunk != 0) return $"batch stride {batchStride} not a multiple of {chunk}";
        return null;
    }

    /// <param name="passes">0: bf16 operands; 1 or 3: fp32 operands as TF32 or 3xTF32 (<see cref="PassesOf"/>). The kernels see
    /// every operand as 16-bit words: an fp32 operand's offsets, leading dimension, batch stride and K count two words per element.</param>
    private static void Run(MatrixOperand a, MatrixOperand b, MatrixOperand c, int m, int n, int k, int batch,
        float alpha, bool accumulate, Tensor? bias, bool emulate, int splits, int passes)
    {
        MatMul.CheckGemm("tc_gemm", a, b, c, m, n, k, batch, bias);
        var device = a.Tensor.Device;
        bool sumBatches = c.BatchStride == 0 && batch > 1;
        int layout = LayoutOf(a, b, batch);
        int w = passes == 0 ? 1 : 2;
        var plan = PlanOf(m, n, k, batch, sumBatches, layout, DeepTilesFor(device), device.Multiprocessors, TileOverride.Value, splits, passes);
        var tile = plan.Tile;
        int outBatches = plan.OutBatches;
        splits = plan.Splits;
        long blocks = plan.Blocks;
        if (blocks > int.MaxValue) throw new ShapeException("tc_gemm", $"{blocks} output tiles is more than one launch can take (M={m}, N={n}, batch={batch})");

        var p = new TcParams
        {
            APtr = a.Tensor.Address, BPtr = b.Tensor.Address,
            AOffset = a.Offset * w, ABatch = a.BatchStride * w, Lda = checked(a.Ld * w),
            BOffset = b.Offset * w, BBatch = b.BatchStride * w, Ldb = checked(b.Ld * w),
            COffset = c.Offset, CBatch = c.BatchStride, Ldc = c.Ld,
            M = m, N = n, K = checked(k * w), Passes = passes, Batch = batch, OutBatches = outBatches, SumBatches = sumBatches ? 1 : 0,
            BlockN = BlockNOf(tile), Stages = StagesOf(tile), SliceK = SliceKOf(tile),
            TilesM = plan.TilesM, TilesN = plan.TilesN, KTiles = plan.KTiles, Splits = splits, SlicesPerSplit = plan.SlicesPerSplit,
            RasterRows = RasterRowsFor(plan.TilesM, plan.TilesN),
            // cH starts at the tensor; the offset is in the index, whose parity the epilogue checks per pair.
            PairStores = c.Tensor.DType == DType.BF16 && c.Tensor.Address % 4 == 0 ? 1 : 0,
            CBf16 = c.Tensor.DType == DType.BF16 ? 1 : 0, Accumulate = accumulate ? 1 : 0, Alpha = alpha, HasBias = bias is null ? 0 : 1,
            StagedStores = !DirectStoresOverride.Value && StagesOutput(tile, c, batch, accumulate, splits, bias is not null) ? 1 : 0, CPtr = c.Tensor.Address,
        };

        // The kernels take C as both an fp32 and a bf16 view; the unused one is C's own memory seen as the other type
        // (never accessed), or for a one-element bf16 C, a small stand-in.
        Tensor? standIn = StandInFor(c.Tensor.DType, c.Tensor.Bytes) is Shape standInShape
            ? Tensor.Empty(device, standInShape, DType.F32, MemoryCategory.Workspace, StandInOp) : null;
        Tensor? partials = null;
        try
        {
            var cF = c.Tensor.DType == DType.F32 ? c.Tensor.F32 : standIn?.F32 ?? c.Tensor.Raw.SubView(0, c.Tensor.Bytes / 4 * 4).Cast<float>();
            var cH = c.Tensor.DType == DType.BF16 ? c.Tensor.BF16 : c.Tensor.Raw.Cast<ushort>();
            // Without a bias the kernels get C's own memory (or the stand-in) in its place: never read (HasBias 0).
            var biasView = FloatView.Of(bias ?? standIn ?? c.Tensor);
            var kernelC = cF;
            if (plan.SplitKWorkspace is Shape partialsShape)
            {
                // fp32 partial tiles [split][outBatch][M][N]; the reduction applies alpha, accumulate, the bias and the dtype.
                partials = Tensor.Empty(device, partialsShape, DType.F32, MemoryCategory.Workspace, SplitKOp);
                kernelC = partials.F32;
                p.Partial = 1;
                p.COffset = 0; p.CBatch = (long)m * n; p.Ldc = n; p.SplitStride = (long)outBatches * m * n;
            }

            var kernelP = p;
            if (partials is not null) kernelP.HasBias = 0; // the partials stay raw sums: the bias is added once, by the reduction
            // bf16 operands as they are, fp32 ones as pairs of 16-bit words (the copies move bytes; the fragments read words).
            ArrayView<ushort> aWords = a.Tensor.Raw.Cast<ushort>(), bWords = b.Tensor.Raw.Cast<ushort>();
            if (emulate) LaunchEmulated(device, aWords, bWords, kernelC, cH, biasView, kernelP, layout, blocks);
            else LaunchCuda(device, tile, layout, passes, (int)blocks, aWords, bWords, kernelC, cH, biasView, kernelP);

            if (partials is not null) ReduceSplits(device, partials, p, c, cF, cH, biasView);
        }
        finally
        {
            partials?.Dispose();
            standIn?.Dispose();
        }
    }

    /// <summary>Op names of the scratch <see cref="Run"/> rents (category workspace), as the memory tracker records them.</summary>
    public const string SplitKOp = "tc_gemm.split_k", StandInOp = "tc_gemm.unused_view";

    /// <summary>
    /// How <see cref="Run"/> launches one GEMM: the tile, the output tiles, the K slices and how they are split. The
    /// fp32 partial tiles of a split K, [Splits, OutBatches, M, N], are the scratch Run rents (<see cref="SplitKWorkspace"/>).
    /// </summary>
    public readonly record struct GemmPlan(int M, int N, Tile Tile, int TilesM, int TilesN, int KTiles, int OutBatches, int Splits, int SlicesPerSplit)
    {
        public long Blocks => (long)TilesM * TilesN * OutBatches * Splits;

        /// <summary>The split-K partials Run allocates (fp32, category workspace, op <see cref="SplitKOp"/>); null with one split.</summary>
        public Shape? SplitKWorkspace => Splits > 1 ? new Shape(Splits, OutBatches, M, N) : null;
    }

    /// <summary>
    /// The launch plan of a GEMM from facts alone (no device, no tensors), so that the memory model predicts the
    /// split-K workspace with this same code: the operand <paramref name="layout"/> (<see cref="LayoutOf(bool, bool, bool, bool)"/>),
    /// whether the deep tiles run (<see cref="DeepAvailable"/>), the device's multiprocessors, a forced tile
    /// (<see cref="UseTile"/>) and forced splits (&gt; 0, <see cref="GemmEmulated"/>), and for fp32 operands their
    /// <paramref name="passes"/> (1 or 3: <see cref="ChooseTileF32"/>; a slice then holds 16 fp32 of K, 32 of its words).
    /// K splits only when the tiles leave multiprocessors idle and K is long (the weight gradients: M, N ≤ 1024,
    /// K = B·T): enough splits to give every multiprocessor its resident groups (two narrow or one wide), each split
    /// keeping at least 8 K slices (256) so its pipeline fills. Split partial tiles stay under 2^31 elements. The
    /// split count is then corrected so that no split is empty.
    /// </summary>
    public static GemmPlan PlanOf(int m, int n, int k, int batch, bool sumBatches, int layout, bool deepTiles, int multiprocessors,
        Tile requestedTile = Tile.Auto, int splits = 0, int passes = 0)
    {
        var tile = passes == 0 ? ChooseTile(requestedTile, deepTiles, layout) : ChooseTileF32(requestedTile, deepTiles);
        int outBatches = sumBatches ? 1 : batch;
        int blockN = BlockNOf(tile), sliceK = SliceKOf(tile);
        int kWords = passes == 0 ? k : checked(2 * k); // the kernels walk K in 16-bit words of the operands
        int tilesM = (m + BlockM - 1) / BlockM, tilesN = (n + blockN - 1) / blockN, kTiles = (kWords + sliceK - 1) / sliceK;
        int totalSlices = sumBatches ? batch * kTiles : kTiles;
        long tiles = (long)tilesM * tilesN * outBatches;
        if (splits <= 0)
        {
            int sms = Math.Max(1, multiprocessors);
            splits = 1;
            if (tiles < sms && totalSlices >= 16)
            {
                long target = (long)sms * (blockN == 128 ? 2 : 1);
                long wanted = (target + tiles - 1) / tiles;
                long chosen = Math.Clamp(Math.Min(wanted, totalSlices / 8), 1, 64);
                if (chosen * outBatches * m * n <= int.MaxValue) splits = (int)chosen;
            }
        }
        int slicesPerSplit = (totalSlices + splits - 1) / splits;
        splits = (totalSlices + slicesPerSplit - 1) / slicesPerSplit; // no empty split
        return new GemmPlan(m, n, tile, tilesM, tilesN, kTiles, outBatches, splits, slicesPerSplit);
    }

    /// <summary>The kernels see C as fp32 and bf16: for a bf16 C under 4 bytes (one element) Run rents this fp32 stand-in for the fp32 view.</summary>
    public static Shape? StandInFor(DType c, long cBytes) => c == DType.BF16 && cBytes < 4 ? new Shape(1) : null;

    /// <summary>
    /// Kernel arguments (public because ILGPU's CPU backend must see the type). op(A)[m,k] of batch b is
    /// a[AOffset + b·ABatch + m·Lda + k] (or + k·Lda + m when A is transposed), likewise B; C[m,n] of output batch ob
    /// and K split s is c[COffset + ob·CBatch + s·SplitStride + m·Ldc + n]. APtr/BPtr are the device addresses of the
    /// tensors' element 0 (for cp.async). A group's K slices are q ∈ [s·SlicesPerSplit, …) of the Batch·KTiles
    /// (summing) or KTiles slices. BlockN and Stages describe the tile (the CUDA kernel has them as constants).
    /// </summary>
    public struct TcParams
    {
        public ulong APtr, BPtr;
        public long AOffset, ABatch, BOffset, BBatch, COffset, CBatch, SplitStride;
        public int Lda, Ldb, Ldc;
        /// <summary>K in 16-bit words of the operands (2·K for fp32 operands).</summary>
        public int K;
        /// <summary>0 for bf16 operands; 1 (TF32) or 3 (3xTF32) for fp32 ones.</summary>
        public int Passes;
        public int M, N, Batch, OutBatches, SumBatches, BlockN, Stages, SliceK, TilesM, TilesN, KTiles, Splits, SlicesPerSplit;
        /// <summary>M tiles per raster band of <see cref="TileOf"/> (0: N tiles fastest).</summary>
        public int RasterRows;
        /// <summary>1 when C is bf16 and 4-byte aligned: the epilogue stores a lane's two adjacent values as one 32-bit word.</summary>
        public int PairStores;
        public int CBf16, Accumulate, Partial;
        /// <summary>1 when the 64-deep kernel stages its output tile in shared memory for 16-byte stores (<see cref="StagesOutput"/>).</summary>
        public int StagedStores;
        /// <summary>C's device address (its element 0), for the staged 16-byte stores.</summary>
        public ulong CPtr;
        /// <summary>1 when the epilogue adds the bias (never in the split-K partials: the reduction adds it).</summary>
        public int HasBias;
        /// <summary>The wgmma kernel's A and B shared-memory descriptors without their start address (<see cref="WgmmaDescriptor"/>).</summary>
        public ulong DescA, DescB;
        public float Alpha;
    }

    // ---------------------------------------------------------------------------------------------------------------
    // Index helpers shared by the CUDA kernel and the emulation (public so tests can check their identities).
    // ---------------------------------------------------------------------------------------------------------------

    /// <summary>
    /// Byte offset of 16-byte chunk <paramref name="chunk"/> (k/8) of row <paramref name="row"/> in a K-contiguous
    /// slice ([rows][sliceK], rows of sliceK·2 bytes). The chunk index is XORed with bits of the row so that the 8 rows
    /// an ldmatrix phase reads (same logical chunk, rows 8i..8i+7) hit 8 distinct 16-byte bank groups: bits 1–2 for
    /// 64-byte rows (two rows share a 128-byte line), bits 0–2 for 128-byte rows.
    /// </summary>
    public static int KContiguousOffset(int row, int chunk, int sliceK = BlockK) => sliceK == BlockK
        ? row * 64 + ((chunk ^ ((row >> 1) & 3)) << 4)
        : row * 128 + ((chunk ^ (row & 7)) << 4);

    /// <summary>
    /// Byte offset of chunk <paramref name="chunk"/> (row/8) of k-row <paramref name="krow"/> in an MN-contiguous
    /// slice ([sliceK][sliceRows], rows of sliceRows·2 bytes); the chunk is XORed with k mod 8 for the same reason.
    /// </summary>
    public static int MnContiguousOffset(int krow, int chunk, int sliceRows) => krow * sliceRows * 2 + ((chunk ^ (krow & 7)) << 4);

    /// <summary>
    /// The 16-byte chunk a thread copies for one operand slice: chunk id = thread + 256·i (sliceRows·sliceK/8 chunks
    /// per slice). Smem is its byte offset in the slice; Elem the tensor element of its first value for slice 0 of
    /// batch 0; Fixed the values valid whatever the K slice (8 or 0 for a K-contiguous chunk's row; the count left in
    /// the row range for an MN-contiguous chunk); KIndex its k inside the slice (first k of the chunk, or its k-row).
    /// </summary>
    public struct ChunkLoad
    {
        public int Smem, Fixed, KIndex;
        public long Elem;
    }

    /// <param name="kContiguous">The stored operand has k as its contiguous index (A not transposed, B transposed).</param>
    /// <param name="x0">First row (M for A, N for B) of the group's tile.</param>
    /// <param name="rows">M for A, N for B.</param>
    /// <param name="sliceRows">Rows of the slice: 128 for A, BN for B.</param>
    public static ChunkLoad Chunk(bool kContiguous, int id, int x0, int rows, long offset, int ld, int sliceRows, int sliceK = BlockK)
    {
        var c = new ChunkLoad();
        if (kContiguous)
        {
            int perRow = sliceK >> 3;
            int row = id / perRow, chunk = id - row * perRow;
            c.Smem = KContiguousOffset(row, chunk, sliceK);
            c.Elem = offset + (long)(x0 + row) * ld + chunk * 8;
            c.Fixed = x0 + row < rows ? 8 : 0;
            c.KIndex = chunk * 8;
        }
        else
        {
            int perRow = sliceRows >> 3;
            int krow = id / perRow, chunk = id - krow * perRow;
            c.Smem = MnContiguousOffset(krow, chunk, sliceRows);
            c.Elem = offset + (long)krow * ld + x0 + chunk * 8;
            c.Fixed = Math.Min(Math.Max(rows - (x0 + chunk * 8), 0), 8);
            c.KIndex = krow;
        }
        return c;
    }

    /// <summary>
    /// Byte offset of chunk <paramref name="chunk"/> (rows 4·chunk …+3) of k-row <paramref name="krow"/> in an
    /// MN-contiguous fp32 slice ([16][sliceRows] fp32, rows of sliceRows·4 bytes). The fragments of m16n8k8.tf32 are read
    /// one word per lane (ldmatrix.trans moves 16-bit halves, not words): lane (g, t) reads row g (+8), k-row t (+4), so
    /// XORing the chunk with 2·(k-row mod 4) sends the warp's 32 words to 32 distinct banks.
    /// </summary>
    public static int MnContiguousF32Offset(int krow, int chunk, int sliceRows) => krow * sliceRows * 4 + ((chunk ^ ((krow & 3) << 1)) << 4);

    /// <summary>
    /// <see cref="Chunk"/> for an MN-contiguous fp32 operand seen as 16-bit words (offset and ld in words): 32 chunks of
    /// 4 fp32 per k-row of a 128-row slice, 16 k-rows per slice. Fixed and KIndex count words (2 per fp32), so that
    /// <see cref="ChunkValid"/> compares them with the word counts of K.
    /// </summary>
    public static ChunkLoad ChunkMnF32(int id, int x0, int rows, long offsetWords, int ldWords, int sliceRows)
    {
        int perRow = sliceRows >> 2;
        int krow = id / perRow, chunk = id - krow * perRow;
        return new ChunkLoad
        {
            Smem = MnContiguousF32Offset(krow, chunk, sliceRows),
            Elem = offsetWords + (long)krow * ldWords + 2L * (x0 + chunk * 4),
            Fixed = 2 * Math.Min(Math.Max(rows - (x0 + chunk * 4), 0), 4),
            KIndex = 2 * krow,
        };
    }

    /// <summary>Byte offset, in A's MN-contiguous fp32 slice, of the word lane <paramref name="lane"/> loads into register
    /// <paramref name="r"/> of A fragment <paramref name="mi"/> at k8 step <paramref name="ks"/>: A[wm·64 + mi·16 + g + 8(r mod 2)][ks·8 + t + 4(r/2)].</summary>
    public static int LdsOffsetAF32(int lane, int wm, int ks, int mi, int r)
    {
        int row = wm * WarpM + mi * 16 + (lane >> 2) + 8 * (r & 1);
        return MnContiguousF32Offset(ks * 8 + (lane & 3) + 4 * (r >> 1), row >> 2, BlockM) + (row & 3) * 4;
    }

    /// <summary>Byte offset, in B's MN-contiguous fp32 slice (BN rows), of the word lane <paramref name="lane"/> loads into
    /// register <paramref name="r"/> of B fragment <paramref name="ni"/> at k8 step <paramref name="ks"/>: B[ks·8 + t + 4r][wn·BN/4 + ni·8 + g].</summary>
    public static int LdsOffsetBF32(int lane, int wn, int ks, int ni, int r, int blockN)
    {
        int col = wn * (blockN / 4) + ni * 8 + (lane >> 2);
        return MnContiguousF32Offset(ks * 8 + (lane & 3) + 4 * r, col >> 2, blockN) + (col & 3) * 4;
    }

    /// <summary>
    /// The next K slice a group copies: its batch and k tile (a group's slices run through the k tiles of one batch, or
    /// of every batch in turn when C sums them), and the element shifts of the operands' chunks for it, kept
    /// incrementally (one add per slice, a multiply only when the batch changes). <paramref name="aStep"/> /
    /// <paramref name="bStep"/>: elements between the same chunk of consecutive slices (<see cref="SliceStep"/>).
    /// </summary>
    public struct SliceCursor
    {
        public int Batch, Kt;
        public long AShift, BShift;

        /// <summary>The cursor at slice <paramref name="first"/> of the group's (batch, k tile) sequence.</summary>
        public static SliceCursor At(TcParams p, int first, int outBatch, long aStep, long bStep)
        {
            var c = new SliceCursor { Batch = p.SumBatches != 0 ? first / p.KTiles : outBatch };
            c.Kt = first - (p.SumBatches != 0 ? c.Batch * p.KTiles : 0);
            c.AShift = c.Batch * p.ABatch + c.Kt * aStep;
            c.BShift = c.Batch * p.BBatch + c.Kt * bStep;
            return c;
        }

        public void Advance(TcParams p, long aStep, long bStep)
        {
            AShift += aStep;
            BShift += bStep;
            Kt++;
            if (Kt == p.KTiles)
            {
                Kt = 0;
                Batch++;
                AShift = Batch * p.ABatch;
                BShift = Batch * p.BBatch;
            }
        }
    }

    /// <summary>Values of the chunk that exist for the slice starting at k0 (the rest is zero-filled).</summary>
    public static int ChunkValid(bool kContiguous, ChunkLoad c, int k0, int k) =>
        kContiguous ? Math.Max(Math.Min(c.Fixed, k - k0 - c.KIndex), 0) : (k0 + c.KIndex < k ? c.Fixed : 0);

    /// <summary>
    /// Chunk id + 256·<paramref name="i"/> of a 128-row, 64-deep slice from chunk id (the 64-deep kernel keeps one
    /// chunk per operand and derives its other three): 32 rows further for a K-contiguous slice (valid while
    /// 32·i &lt; <paramref name="rowsLeft"/>, the rows left below the first chunk's), 16 k-rows for an MN-contiguous one;
    /// 4096 bytes further in shared memory, or <paramref name="mnSmemStep"/> for an MN-contiguous slice (2048 in the
    /// wgmma kernel's layout, <see cref="WgmmaMnOffset"/>).
    /// </summary>
    public static ChunkLoad ChunkStep(bool kContiguous, ChunkLoad c0, int i, int ld, int rowsLeft, int mnSmemStep = 4096)
    {
        var c = c0;
        c.Smem += (kContiguous ? 4096 : mnSmemStep) * i;
        if (kContiguous)
        {
            c.Elem += 32L * i * ld;
            c.Fixed = 32 * i < rowsLeft ? 8 : 0;
        }
        else
        {
            c.Elem += 16L * i * ld;
            c.KIndex += 16 * i;
        }
        return c;
    }

    /// <summary>This thread's chunk <paramref name="id"/> of a slice: <see cref="Chunk"/>, or <see cref="ChunkMnF32"/> for an MN-contiguous fp32 operand.</summary>
    public static ChunkLoad SliceChunk(bool kContiguous, bool f32, int id, int x0, int rows, long offset, int ld, int sliceRows, int sliceK = BlockK) =>
        f32 && !kContiguous ? ChunkMnF32(id, x0, rows, offset, ld, sliceRows) : Chunk(kContiguous, id, x0, rows, offset, ld, sliceRows, sliceK);

    /// <summary><see cref="SliceStep"/> in words; an MN-contiguous fp32 slice holds 16 k-rows of <paramref name="ld"/> words.</summary>
    public static long SliceStepOf(bool kContiguous, bool f32, int ld, int sliceK = BlockK) =>
        f32 && !kContiguous ? 16L * ld : SliceStep(kContiguous, ld, sliceK);

    /// <summary>Elements between the same chunk of consecutive K slices.</summary>
    public static long SliceStep(bool kContiguous, int ld, int sliceK = BlockK) => kContiguous ? sliceK : (long)sliceK * ld;

    /// <summary>
    /// Byte offset, inside A's slice, of the row this lane hands to ldmatrix.x4 for A fragment <paramref name="mi"/>
    /// (rows wm·64 + mi·16 …+15) at k16 step <paramref name="ks"/>. Matrices 0–3 of the x4 are (rows 0–7, k 0–7),
    /// (rows 8–15, k 0–7), (rows 0–7, k 8–15), (rows 8–15, k 8–15): registers a0..a3 of mma.m16n8k16's A fragment.
    /// K-contiguous: plain ldmatrix, lane l gives row l mod 16, k chunk l/16. MN-contiguous: ldmatrix.trans, lane l
    /// gives k-row (l mod 8) + 8·(l/16) of m chunk (l/8) mod 2. Identities the kernel relies on (tested): K-contiguous
    /// offsets grow by 16 rows (sliceK·32 bytes) per mi; MN-contiguous ones by 4096 per ks.
    /// </summary>
    public static int LdmatrixOffsetA(bool kContiguous, int lane, int wm, int ks, int mi, int sliceK = BlockK)
    {
        if (kContiguous) return KContiguousOffset(wm * WarpM + mi * 16 + (lane & 15), ks * 2 + (lane >> 4), sliceK);
        return MnContiguousOffset(ks * 16 + (lane & 7) + (lane >> 4) * 8, wm * (WarpM / 8) + mi * 2 + ((lane >> 3) & 1), BlockM);
    }

    /// <summary>
    /// Byte offset, inside B's slice (BN = <paramref name="blockN"/> rows), of the row this lane hands to ldmatrix.x4
    /// number <paramref name="pair"/> (B fragments ni = 2·pair and 2·pair + 1, columns wn·BN/4 + pair·16 …+15) at k16
    /// step <paramref name="ks"/>. Matrices 0–3 are (n 0–7, k 0–7), (n 0–7, k 8–15), (n 8–15, k 0–7), (n 8–15, k 8–15):
    /// b0, b1 of fragment 2·pair, then of 2·pair + 1. K-contiguous ([n][k], B transposed): plain ldmatrix; offsets grow
    /// by 16 rows (sliceK·32 bytes) per pair. MN-contiguous ([k][n]): ldmatrix.trans; offsets grow by 32·BN per ks.
    /// </summary>
    public static int LdmatrixOffsetB(bool kContiguous, int lane, int wn, int ks, int pair, int blockN, int sliceK = BlockK)
    {
        int warpN = blockN / 4;
        if (kContiguous) return KContiguousOffset(wn * warpN + pair * 16 + (lane & 7) + (lane >> 4) * 8, ks * 2 + ((lane >> 3) & 1), sliceK);
        return MnContiguousOffset(ks * 16 + (lane & 7) + ((lane >> 3) & 1) * 8, wn * (warpN / 8) + pair * 2 + (lane >> 4), blockN);
    }

    /// <summary>
    /// The group's output tile, K split and output batch from its index: the tiles of one split and batch first, then
    /// the split, then the batch. Within them N tiles run fastest, or, with <see cref="TcParams.RasterRows"/> = g,
    /// in bands of g M tiles walked column by column, so the groups resident at once share fewer A and B panels in L2
    /// (<see cref="RasterRowsFor"/>).
    /// </summary>
    public static void TileOf(int block, TcParams p, out int m0, out int n0, out int split, out int outBatch)
    {
        int tiles = p.TilesM * p.TilesN;
        int tile = block % tiles;
        int rest = block / tiles;
        split = rest % p.Splits;
        outBatch = rest / p.Splits;
        int tm, tn;
        if (p.RasterRows > 0)
        {
            int band = tile / (p.RasterRows * p.TilesN);
            int firstM = band * p.RasterRows;
            int rows = Math.Min(p.RasterRows, p.TilesM - firstM);
            int inBand = tile - band * p.RasterRows * p.TilesN;
            tm = firstM + inBand % rows;
            tn = inBand / rows;
        }
        else
        {
            tm = tile / p.TilesN;
            tn = tile - tm * p.TilesN;
        }
        m0 = tm * BlockM;
        n0 = tn * p.BlockN;
    }

    /// <summary>M tiles per raster band: the ~264 groups resident on an H100 (two per SM) then cover about 16 × 16
    /// tiles (32 MB of A and B panels at K = 4096) instead of 8 rows × 32 (40 MB, near the 50 MB L2). Only for outputs
    /// of at least 32 × 32 tiles and at most 64 tiles wide; the others keep the N-fastest order.</summary>
    public static int RasterRowsFor(int tilesM, int tilesN) => tilesM >= 2 * RasterBand && tilesN >= 2 * RasterBand && tilesN <= 64 ? RasterBand : 0;

    private const int RasterBand = 16;

    /// <summary>
    /// The bias of a lane's two accumulator columns, col and col + 1 (0 past N or without a bias). Read
    /// once per column: the epilogues take each 8-wide fragment column's bias, then store all its rows.
    /// </summary>
    private static void BiasPair(FloatView bias, TcParams p, int col, out float b0, out float b1)
    {
        // Unconditional loads (the column clamped to N − 1; without a bias the view is C's own memory, at least N
        // values) so that a lane's loads can all be in flight at once; the select drops what is not wanted.
        float x0 = bias.Load(Math.Min(col, p.N - 1)), x1 = bias.Load(Math.Min(col + 1, p.N - 1));
        b0 = p.HasBias != 0 && col < p.N ? x0 : 0f;
        b1 = p.HasBias != 0 && col + 1 < p.N ? x1 : 0f;
    }

    /// <summary>
    /// Stores accumulators (row, col) and (row, col + 1), packed low/high in <paramref name="pair"/>, through the
    /// epilogue; <paramref name="b0"/>, <paramref name="b1"/> are the two columns' bias (<see cref="BiasPair"/>).
    /// </summary>
    private static void StorePair(ArrayView<float> cF, ArrayView<ushort> cH, TcParams p, long cBase, int row, int col, ulong pair, float b0, float b1)
    {
        if (row >= p.M) return;
        long i = cBase + (long)row * p.Ldc + col;
        float v0 = Interop.IntAsFloat((uint)pair), v1 = Interop.IntAsFloat((uint)(pair >> 32));
        if (p.PairStores != 0 && p.Partial == 0 && col + 1 < p.N && (i & 1) == 0)
        {
            // Both bf16 values in one 32-bit store: two 2-byte stores per pair multiplied the L2 write sectors of the
            // K = 256 products (the LM head's logits) until L2 throughput, not the tensor pipe, bounded them.
            uint lo = BFloat16.FromFloat(Bf16Value(cH, i, v0, p.Alpha, p.Accumulate, p.HasBias, b0));
            uint hi = BFloat16.FromFloat(Bf16Value(cH, i + 1, v1, p.Alpha, p.Accumulate, p.HasBias, b1));
            cH.Cast<uint>()[i >> 1] = lo | (hi << 16);
            return;
        }
        if (col < p.N) StoreOne(cF, cH, p, i, v0, b0);
        if (col + 1 < p.N) StoreOne(cF, cH, p, i + 1, v1, b1);
    }

    /// <summary>alpha·v (+ the bf16 C[i] when accumulating) (+ bias), in fp32: what a bf16 C[i] becomes, before its one rounding.</summary>
    private static float Bf16Value(ArrayView<ushort> cH, long i, float v, float alpha, int accumulate, int hasBias, float bias)
    {
        v *= alpha;
        if (accumulate != 0) v += BFloat16.ToFloat(cH[i]);
        if (hasBias != 0) v += bias;
        return v;
    }

    /// <summary>C[i] = alpha·v (+ C[i]) (+ bias) (<see cref="Finish"/>); a split-K partial stores v as it is.</summary>
    private static void StoreOne(ArrayView<float> cF, ArrayView<ushort> cH, TcParams p, long i, float v, float bias)
    {
        if (p.Partial != 0) cF[i] = v;
        else Finish(cF, cH, i, v, p.Alpha, p.Accumulate, p.HasBias, bias, p.CBf16);
    }

    /// <summary>
    /// The epilogue of one element, shared by the kernels' stores and the split-K reduction: C[i] = alpha·v (+ C[i])
    /// (+ bias), in fp32, rounded once for a bf16 C.
    /// </summary>
    private static void Finish(ArrayView<float> cF, ArrayView<ushort> cH, long i, float v, float alpha, int accumulate, int hasBias, float bias, int cBf16)
    {
        if (cBf16 != 0)
        {
            cH[i] = BFloat16.FromFloat(Bf16Value(cH, i, v, alpha, accumulate, hasBias, bias));
        }
        else
        {
            v *= alpha;
            if (accumulate != 0) v += cF[i];
            if (hasBias != 0) v += bias;
            cF[i] = v;
        }
    }

    // ---------------------------------------------------------------------------------------------------------------
    // The staged epilogue of the 64-deep tile: the 128×128 output tile goes through shared memory (the drained ring)
    // so that global stores are 16-byte chunks, whole rows of a tile per 16 (bf16) or 32 (fp32) threads. Storing a
    // lane's pairs straight from the accumulators writes 16 bytes per row per warp instruction (half a sector): the
    // K = 256 products (the LM head's logits, qkv and fc forward) were bound by those L2 writes.
    // ---------------------------------------------------------------------------------------------------------------

    /// <summary>Bytes per staged row: 128 values plus 8 of padding, so that a warp's fragment stores hit 32 banks.</summary>
    public static int StagedRowBytes(bool cBf16) => cBf16 ? 272 : 544;

    /// <summary>Byte offset of value (r, c) of the staged tile (r, c &lt; 128).</summary>
    public static int StagedOffset(int r, int c, bool cBf16) => r * StagedRowBytes(cBf16) + c * (cBf16 ? 2 : 4);

    /// <summary>Chunks each thread stores: 16 bytes hold 8 bf16 or 4 fp32 values, a tile row 16 or 32 chunks.</summary>
    public static int StagedChunksPerThread(bool cBf16) => cBf16 ? 8 : 16;

    /// <summary>Tile row and first column of a thread's <paramref name="j"/>-th staged chunk: consecutive threads take consecutive chunks of a row.</summary>
    public static void StagedChunk(int tid, int j, bool cBf16, out int r, out int c)
    {
        int id = tid + j * Threads;
        if (cBf16) { r = id >> 4; c = (id & 15) * 8; }
        else { r = id >> 5; c = (id & 31) * 4; }
    }

    /// <summary>
    /// Whether <see cref="Run"/> stages the output tile: the 64-deep tile, one K split (partials keep the direct
    /// stores) and every 16-byte chunk of C aligned; accumulating into C only where C is float32 and there is no bias
    /// (the fused head's dW += Gᵀ·x into the fp32 gradient): the store then reads C's chunk and adds the staged
    /// alpha·v to it, as <see cref="Finish"/> does value by value, where a bias would have to come after C.
    /// </summary>
    public static bool StagesOutput(Tile tile, MatrixOperand c, int batch, bool accumulate, int splits, bool hasBias = false) =>
        tile == Tile.NarrowK64 && splits == 1 && (!accumulate || c.Tensor.DType == DType.F32 && !hasBias) && MisalignedBecause(c, batch) is null;

    private static readonly LaunchOverride<bool> DirectStoresOverride = new();

    /// <summary>Forces the direct (unstaged) epilogue for this thread of execution until disposed (benchmarks compare the two).</summary>
    public static IDisposable UseDirectStores() => DirectStoresOverride.Use(true);

    /// <summary>What the epilogue does with a lane's pair of accumulators: store it to C, or stage it in shared memory.</summary>
    public interface IPairSink
    {
        void Put(ArrayView<float> cF, ArrayView<ushort> cH, TcParams p, long cBase, int m0, int n0, int row, int col, ulong pair, float b0, float b1);
    }

    public struct DirectStores : IPairSink
    {
        public readonly void Put(ArrayView<float> cF, ArrayView<ushort> cH, TcParams p, long cBase, int m0, int n0, int row, int col, ulong pair, float b0, float b1) =>
            StorePair(cF, cH, p, cBase, row, col, pair, b0, b1);
    }

    public struct StagedStores : IPairSink
    {
        public readonly void Put(ArrayView<float> cF, ArrayView<ushort> cH, TcParams p, long cBase, int m0, int n0, int row, int col, ulong pair, float b0, float b1)
        {
            float v0 = StagedValue(p, Interop.IntAsFloat((uint)pair), b0), v1 = StagedValue(p, Interop.IntAsFloat((uint)(pair >> 32)), b1);
            if (p.CBf16 != 0)
                CudaAsm.Emit("{ .reg .u32 t; add.u32 t, tcsb, %0; st.shared.b32 [t], %1; }",
                    StagedOffset(row - m0, col - n0, true), (uint)BFloat16.FromFloat(v0) | ((uint)BFloat16.FromFloat(v1) << 16));
            else
                CudaAsm.Emit("{ .reg .u32 t; add.u32 t, tcsb, %0; st.shared.v2.f32 [t], {%1,%2}; }", StagedOffset(row - m0, col - n0, false), v0, v1);
        }
    }

    /// <summary>A staged value: alpha·v (+ bias), as <see cref="Finish"/> computes it before C (a stage that accumulates has no bias).</summary>
    private static float StagedValue(TcParams p, float v, float bias)
    {
        v *= p.Alpha;
        if (p.HasBias != 0) v += bias;
        return v;
    }

    /// <summary>
    /// The staged tile to C: each thread's chunks as one 16-byte load from shared memory and, where all of the chunk
    /// lies inside N, one 16-byte store (the chunk straddling N stores its values one by one); accumulating, one
    /// 16-byte load of C's chunk before it and a float32 add per value.
    /// </summary>
    private static void StoreStaged(ArrayView<float> cF, ArrayView<ushort> cH, TcParams p, long cBase, int m0, int n0, int tid)
    {
        bool bf16 = p.CBf16 != 0;
        int perChunk = bf16 ? 8 : 4, esize = bf16 ? 2 : 4;
        for (int j = 0; j < StagedChunksPerThread(bf16); j++)
        {
            StagedChunk(tid, j, bf16, out int r, out int c);
            int row = m0 + r, col = n0 + c;
            if (row >= p.M || col >= p.N) continue;
            long i = cBase + (long)row * p.Ldc + col;
            if (col + perChunk <= p.N)
            {
                if (p.Accumulate != 0)
                    CudaAsm.Emit("{ .reg .u32 t; .reg .f32 x<4>, y<4>; add.u32 t, tcsb, %0; ld.shared.v4.f32 {x0,x1,x2,x3}, [t]; ld.global.v4.f32 {y0,y1,y2,y3}, [%1]; " +
                        "add.rn.f32 x0, x0, y0; add.rn.f32 x1, x1, y1; add.rn.f32 x2, x2, y2; add.rn.f32 x3, x3, y3; st.global.v4.f32 [%1], {x0,x1,x2,x3}; }",
                        StagedOffset(r, c, bf16), p.CPtr + (ulong)(i * esize));
                else
                    CudaAsm.Emit("{ .reg .u32 t; .reg .b32 x<4>; add.u32 t, tcsb, %0; ld.shared.v4.b32 {x0,x1,x2,x3}, [t]; st.global.v4.b32 [%1], {x0,x1,x2,x3}; }",
                        StagedOffset(r, c, bf16), p.CPtr + (ulong)(i * esize));
                continue;
            }
            CudaAsm.Emit("{ .reg .u32 t; add.u32 t, tcsb, %1; ld.shared.b64 %0, [t]; }", out ulong lo, StagedOffset(r, c, bf16));
            CudaAsm.Emit("{ .reg .u32 t; add.u32 t, tcsb, %1; ld.shared.b64 %0, [t+8]; }", out ulong hi, StagedOffset(r, c, bf16));
            StoreChunkValues(cF, cH, bf16, p.Accumulate != 0, i, p.N - col, (uint)lo, (uint)(lo >> 32), (uint)hi, (uint)(hi >> 32));
        }
    }

    /// <summary>
    /// The first <paramref name="count"/> values of a staged chunk (words w0..w3) to C from element i, one by one;
    /// with <paramref name="accumulate"/> (float32 C) each is added to C's value.
    /// </summary>
    private static void StoreChunkValues(ArrayView<float> cF, ArrayView<ushort> cH, bool bf16, bool accumulate, long i, int count, uint w0, uint w1, uint w2, uint w3)
    {
        for (int e = 0; e < count; e++)
        {
            if (bf16)
            {
                uint w = e < 2 ? w0 : e < 4 ? w1 : e < 6 ? w2 : w3;
                cH[i + e] = (ushort)((e & 1) == 0 ? w & 0xFFFF : w >> 16);
                continue;
            }
            float v = Interop.IntAsFloat(e == 0 ? w0 : e == 1 ? w1 : e == 2 ? w2 : w3);
            cF[i + e] = accumulate ? v + cF[i + e] : v;
        }
    }

    // ---------------------------------------------------------------------------------------------------------------
    // The CUDA kernel: one generic method, instantiated per tile shape and layout (the branches on them fold away).
    // ---------------------------------------------------------------------------------------------------------------

    public interface IFlag { bool On { get; } }
    public struct Yes : IFlag { public readonly bool On => true; }
    public struct No : IFlag { public readonly bool On => false; }

    /// <summary>The operands' precision: 0 tensor-core passes for bf16 operands, 1 (TF32) or 3 (3xTF32) for fp32 ones.</summary>
    public interface IPrecision { int Passes { get; } }
    public struct Bf16Inputs : IPrecision { public readonly int Passes => 0; }
    public struct Tf32Inputs : IPrecision { public readonly int Passes => 1; }
    public struct Tf32x3Inputs : IPrecision { public readonly int Passes => 3; }

    public interface ITileShape { bool Wide { get; } int Stages { get; } bool Deep { get; } }
    public struct NarrowShape : ITileShape { public readonly bool Wide => false; public readonly int Stages => 3; public readonly bool Deep => false; }
    public struct WideShape : ITileShape { public readonly bool Wide => true; public readonly int Stages => 2; public readonly bool Deep => false; }
    public struct NarrowDeepShape : ITileShape { public readonly bool Wide => false; public readonly int Stages => 4; public readonly bool Deep => true; }
    public struct WideDeepShape : ITileShape { public readonly bool Wide => true; public readonly int Stages => 4; public readonly bool Deep => true; }

    private static readonly string[] KernelKeys = Enumerable.Range(0, 6 * 16).Select(i => $"tc_gemm.{(Tile)(i / 16)}.{i % 16}").ToArray();
    private static readonly string[] Tf32KernelKeys = Enumerable.Range(0, 6 * 16).Select(i => $"tc_gemm_tf32.{(Tile)(i / 16)}.{i % 16}").ToArray();
    private static readonly string[] Tf32x3KernelKeys = Enumerable.Range(0, 6 * 16).Select(i => $"tc_gemm_3xtf32.{(Tile)(i / 16)}.{i % 16}").ToArray();

    /// <summary>Bytes of dynamic shared memory a deep tile asks for: its stages plus 128 for aligning the base.</summary>
    private static int DynamicBytes(Tile tile) => StagesOf(tile) * StageBytesOf(BlockNOf(tile), SliceKOf(tile)) + 128;

    private static System.Reflection.MethodInfo KernelMethod(Tile tile, int layout, int passes = 0)
    {
        Type Flag(int bit) => (layout & bit) != 0 ? typeof(Yes) : typeof(No);
        if (passes != 0 && tile is not (Tile.Narrow or Tile.NarrowDeep))
            throw new ArgumentException($"tc_gemm: fp32 operands run on the narrow tiles only, not {tile}", nameof(tile));
        Type precision = passes switch { 0 => typeof(Bf16Inputs), 1 => typeof(Tf32Inputs), _ => typeof(Tf32x3Inputs) };
        if (tile == Tile.NarrowK64)
            return typeof(TensorCoreGemm).GetMethod(nameof(TensorCoreKernelK64), System.Reflection.BindingFlags.NonPublic | System.Reflection.BindingFlags.Static)!
                .MakeGenericMethod(Flag(ATransposedBit), Flag(BTransposedBit), Flag(AVectorBit), Flag(BVectorBit));
        Type shape = tile switch
        {
            Tile.Narrow => typeof(NarrowShape), Tile.Wide => typeof(WideShape),
            Tile.NarrowDeep => typeof(NarrowDeepShape), _ => typeof(WideDeepShape),
        };
        return typeof(TensorCoreGemm).GetMethod(nameof(TensorCoreKernel), System.Reflection.BindingFlags.NonPublic | System.Reflection.BindingFlags.Static)!
            .MakeGenericMethod(shape, precision, Flag(ATransposedBit), Flag(BTransposedBit), Flag(AVectorBit), Flag(BVectorBit));
    }

    private static void LaunchCuda(ComputeDevice device, Tile tile, int layout, int passes, int blocks,
        ArrayView<ushort> a, ArrayView<ushort> b, ArrayView<float> cF, ArrayView<ushort> cH, FloatView bias, TcParams p)
    {
        if (LaunchWgmmaNow(device, tile, passes, p.SlicesPerSplit))
        {
            LaunchWgmma(device, layout, blocks, a, b, cF, cH, bias, p);
            return;
        }
        var launch = Launcher(device, tile, layout, passes);
        var config = IsDeep(tile)
            ? new KernelConfig(new Index1D(blocks), new Index1D(Threads), SharedMemoryConfig.RequestDynamic<byte>(DynamicBytes(tile)))
            : new KernelConfig(blocks, Threads);
        launch(config, a, b, cF, cH, bias, p);
    }

    /// <summary>What the driver made of one kernel variant on CUDA (registers, spills, groups per SM); null elsewhere.</summary>
    public static KernelResources? Resources(ComputeDevice device, Tile tile, int layout, int passes = 0) =>
        !device.IsCuda ? null : KernelResources.Of(device, Launcher(device, tile, layout, passes), Threads, IsDeep(tile) ? DynamicBytes(tile) : 0);

    private static Action<KernelConfig, ArrayView<ushort>, ArrayView<ushort>, ArrayView<float>, ArrayView<ushort>, FloatView, TcParams> Launcher(
        ComputeDevice device, Tile tile, int layout, int passes)
    {
        var keys = passes switch { 0 => KernelKeys, 1 => Tf32KernelKeys, _ => Tf32x3KernelKeys };
        return device.Kernel(keys[(int)tile * 16 + layout], acc =>
        {
            var kernel = (Action<ArrayView<ushort>, ArrayView<ushort>, ArrayView<float>, ArrayView<ushort>, FloatView, TcParams>)Delegate.CreateDelegate(
                typeof(Action<ArrayView<ushort>, ArrayView<ushort>, ArrayView<float>, ArrayView<ushort>, FloatView, TcParams>), KernelMethod(tile, layout, passes));
            // The fp32 kernels need ~155 registers: launch bounds for two groups per SM cap them at 128 (a few bytes of
            // spills) and run the 3xTF32 GEMMs 10-35% faster on the H100 (docs/performance.md). The bf16 narrow tiles
            // too: ptxas gave four of their six layouts 129-148 registers, one group per SM; capped at 128 (0-64 B of
            // spills) the scalar-load layouts take 34-44% less time (the unfused LM head's dx and dW, session 8).
            bool twoGroups = passes != 0 || tile is Tile.Narrow or Tile.NarrowDeep;
            var loaded = twoGroups && device.IsCuda ? acc.LoadStreamKernel(kernel, new KernelSpecialization(Threads, 2)) : acc.LoadStreamKernel(kernel);
            if (IsDeep(tile)) AllowDynamicSharedMemory(loaded, DynamicBytes(tile));
            return loaded;
        });
    }

    private static readonly System.Runtime.CompilerServices.ConditionalWeakTable<ComputeDevice, object> DeepProbe = new();

    /// <summary>
    /// Whether this device runs the deep tiles (more than 48 KB of dynamic shared memory per group): probed once per
    /// device by raising the kernel's limit with cuFuncSetAttribute and launching the deep narrow kernel on a tiny GEMM.
    /// </summary>
    public static bool DeepAvailable(ComputeDevice device)
    {
        if (!device.IsCuda) return false;
        var result = DeepProbe.GetValue(device, d =>
        {
            try
            {
                using var scope = UseTile(Tile.NarrowDeep);
                using var x = Tensor.Zeros(d, new Shape(8, 8), DType.BF16, MemoryCategory.Workspace, "tc_gemm.probe");
                using var y = Tensor.Zeros(d, new Shape(8, 8), DType.F32, MemoryCategory.Workspace, "tc_gemm.probe");
                Run(MatrixOperand.Dense(x), MatrixOperand.Dense(x), MatrixOperand.Dense(y), 8, 8, 8, 1, 1f, false, null, emulate: false, splits: 1, passes: 0);
                d.Synchronize();
                return (object)true;
            }
            catch (Exception e) when (e is not OutOfMemoryException)
            {
                return e.Message;
            }
        });
        return result is true;
    }

    /// <summary>Why the deep tiles are unavailable (null when they work or were not probed).</summary>
    public static string? DeepUnavailableBecause(ComputeDevice device) => DeepProbe.TryGetValue(device, out var r) ? r as string : null;

    [DllImport("libcuda.so.1", EntryPoint = "cuFuncSetAttribute")]
    private static extern int CuFuncSetAttribute(IntPtr function, int attribute, int value);

    private const int CuFuncAttributeMaxDynamicSharedSizeBytes = 8;

    private static void AllowDynamicSharedMemory(Delegate loaded, int bytes)
    {
        var kernel = KernelUtil.GetKernel(loaded);
        if (kernel is not CudaKernel cuda) throw new InvalidOperationException($"deep tensor-core tile: {kernel.GetType().Name} is not a CUDA kernel");
        SetMaxDynamicSharedMemory(cuda, bytes);
    }

    private static void SetMaxDynamicSharedMemory(CudaKernel cuda, int bytes)
    {
        int status = CuFuncSetAttribute(cuda.FunctionPtr, CuFuncAttributeMaxDynamicSharedSizeBytes, bytes);
        if (status != 0) throw new InvalidOperationException($"cuFuncSetAttribute(max dynamic shared memory = {bytes}) failed with CUDA error {status}");
    }

    /// <summary>
    /// The named registers, declared once at the top of the kernel: tcc0..127 the warp tile's accumulators
    /// ((mi·NI + ni)·4 + r, NI = BN/32 fragments along N), tca0..15 its A fragments (mi·4 + r), tcb0..15 its B fragments
    /// (ni·2 + r), tcsb the ring's shared-window address, tcla0..3 / tclb0..3 this lane's ldmatrix addresses in stage 0
    /// (%0..%7: ring base + LdmatrixOffsetA/B). Addresses kept in named registers cost one add per ldmatrix group and
    /// nothing else per slice: ILGPU would otherwise recompute them (and reload the base from local memory) in the loop.
    /// </summary>
    private const string DeclareRegisters =
        ".reg .f32 tcc<128>;\n\t.reg .b32 tca<16>;\n\t.reg .b32 tcb<16>;\n\t.reg .u32 tcsb;\n\t.reg .u32 tcla<4>;\n\t.reg .u32 tclb<4>;\n\t";

    private const string SetAddresses =
        "add.u32 tcla0, tcsb, %0;\n\tadd.u32 tcla1, tcsb, %1;\n\tadd.u32 tcla2, tcsb, %2;\n\tadd.u32 tcla3, tcsb, %3;\n\t" +
        "add.u32 tclb0, tcsb, %4;\n\tadd.u32 tclb1, tcsb, %5;\n\tadd.u32 tclb2, tcsb, %6;\n\tadd.u32 tclb3, tcsb, %7;";

    /// <summary>The static tiles' 48 KB ring, declared in the kernel body.</summary>
    private const string DeclareStatic = ".shared .align 128 .b8 memopt_tc_smem[49152];\n\t" + DeclareRegisters +
        "mov.u32 tcsb, memopt_tc_smem;\n\t" + SetAddresses;

    /// <summary>The deep tiles' ring is ILGPU's dynamic shared memory (declared by it at module scope), base rounded up to 128.</summary>
    private const string DeclareDynamic = DeclareRegisters +
        "mov.u32 tcsb, __dyn_shared_alloca;\n\tadd.u32 tcsb, tcsb, 127;\n\tand.b32 tcsb, tcsb, -128;\n\t" + SetAddresses;

    private const string LdsmA = WarpMma.Ldsm;
    private const string LdsmT = WarpMma.LdsmTrans;

    /// <summary>A fragments 0..3 from a K-contiguous slice (%0: stage offset): one lane address, fragments 16 rows (1024 bytes) apart; k16 step 0 uses tcla0, step 1 tcla1.</summary>
    private const string LoadAKContiguous0 = "{ .reg .u32 t; add.u32 t, tcla0, %0;\n\t" +
        LdsmA + "{tca0,tca1,tca2,tca3}, [t];\n\t" + LdsmA + "{tca4,tca5,tca6,tca7}, [t+1024];\n\t" +
        LdsmA + "{tca8,tca9,tca10,tca11}, [t+2048];\n\t" + LdsmA + "{tca12,tca13,tca14,tca15}, [t+3072]; }";
    private const string LoadAKContiguous1 = "{ .reg .u32 t; add.u32 t, tcla1, %0;\n\t" +
        LdsmA + "{tca0,tca1,tca2,tca3}, [t];\n\t" + LdsmA + "{tca4,tca5,tca6,tca7}, [t+1024];\n\t" +
        LdsmA + "{tca8,tca9,tca10,tca11}, [t+2048];\n\t" + LdsmA + "{tca12,tca13,tca14,tca15}, [t+3072]; }";

    /// <summary>A fragments 0..3 from an MN-contiguous slice: transposing loads, one lane address per fragment (%0: stage offset, + 4096 for k16 step 1).</summary>
    private const string LoadAMnContiguous = "{ .reg .u32 t0, t1, t2, t3; add.u32 t0, tcla0, %0; add.u32 t1, tcla1, %0; add.u32 t2, tcla2, %0; add.u32 t3, tcla3, %0;\n\t" +
        LdsmT + "{tca0,tca1,tca2,tca3}, [t0];\n\t" + LdsmT + "{tca4,tca5,tca6,tca7}, [t1];\n\t" +
        LdsmT + "{tca8,tca9,tca10,tca11}, [t2];\n\t" + LdsmT + "{tca12,tca13,tca14,tca15}, [t3]; }";

    private const string LoadBKContiguousNarrow0 = "{ .reg .u32 t; add.u32 t, tclb0, %0;\n\t" +
        LdsmA + "{tcb0,tcb1,tcb2,tcb3}, [t];\n\t" + LdsmA + "{tcb4,tcb5,tcb6,tcb7}, [t+1024]; }";
    private const string LoadBKContiguousNarrow1 = "{ .reg .u32 t; add.u32 t, tclb1, %0;\n\t" +
        LdsmA + "{tcb0,tcb1,tcb2,tcb3}, [t];\n\t" + LdsmA + "{tcb4,tcb5,tcb6,tcb7}, [t+1024]; }";
    private const string LoadBKContiguousWide0 = "{ .reg .u32 t; add.u32 t, tclb0, %0;\n\t" +
        LdsmA + "{tcb0,tcb1,tcb2,tcb3}, [t];\n\t" + LdsmA + "{tcb4,tcb5,tcb6,tcb7}, [t+1024];\n\t" +
        LdsmA + "{tcb8,tcb9,tcb10,tcb11}, [t+2048];\n\t" + LdsmA + "{tcb12,tcb13,tcb14,tcb15}, [t+3072]; }";
    private const string LoadBKContiguousWide1 = "{ .reg .u32 t; add.u32 t, tclb1, %0;\n\t" +
        LdsmA + "{tcb0,tcb1,tcb2,tcb3}, [t];\n\t" + LdsmA + "{tcb4,tcb5,tcb6,tcb7}, [t+1024];\n\t" +
        LdsmA + "{tcb8,tcb9,tcb10,tcb11}, [t+2048];\n\t" + LdsmA + "{tcb12,tcb13,tcb14,tcb15}, [t+3072]; }";

    /// <summary>B fragments from an MN-contiguous slice (%0: stage offset, + 32·BN for k16 step 1).</summary>
    private const string LoadBMnContiguousNarrow = "{ .reg .u32 t0, t1; add.u32 t0, tclb0, %0; add.u32 t1, tclb1, %0;\n\t" +
        LdsmT + "{tcb0,tcb1,tcb2,tcb3}, [t0];\n\t" + LdsmT + "{tcb4,tcb5,tcb6,tcb7}, [t1]; }";
    private const string LoadBMnContiguousWide = "{ .reg .u32 t0, t1, t2, t3; add.u32 t0, tclb0, %0; add.u32 t1, tclb1, %0; add.u32 t2, tclb2, %0; add.u32 t3, tclb3, %0;\n\t" +
        LdsmT + "{tcb0,tcb1,tcb2,tcb3}, [t0];\n\t" + LdsmT + "{tcb4,tcb5,tcb6,tcb7}, [t1];\n\t" +
        LdsmT + "{tcb8,tcb9,tcb10,tcb11}, [t2];\n\t" + LdsmT + "{tcb12,tcb13,tcb14,tcb15}, [t3]; }";

    private const string Mma = WarpMma.Mma;

    private const string ZeroNarrow =
        "mov.f32 tcc0, 0f00000000; mov.f32 tcc1, 0f00000000; mov.f32 tcc2, 0f00000000; mov.f32 tcc3, 0f00000000; mov.f32 tcc4, 0f00000000; mov.f32 tcc5, 0f00000000; mov.f32 tcc6, 0f00000000; mov.f32 tcc7, 0f00000000;\n\t" +
        "mov.f32 tcc8, 0f00000000; mov.f32 tcc9, 0f00000000; mov.f32 tcc10, 0f00000000; mov.f32 tcc11, 0f00000000; mov.f32 tcc12, 0f00000000; mov.f32 tcc13, 0f00000000; mov.f32 tcc14, 0f00000000; mov.f32 tcc15, 0f00000000;\n\t" +
        "mov.f32 tcc16, 0f00000000; mov.f32 tcc17, 0f00000000; mov.f32 tcc18, 0f00000000; mov.f32 tcc19, 0f00000000; mov.f32 tcc20, 0f00000000; mov.f32 tcc21, 0f00000000; mov.f32 tcc22, 0f00000000; mov.f32 tcc23, 0f00000000;\n\t" +
        "mov.f32 tcc24, 0f00000000; mov.f32 tcc25, 0f00000000; mov.f32 tcc26, 0f00000000; mov.f32 tcc27, 0f00000000; mov.f32 tcc28, 0f00000000; mov.f32 tcc29, 0f00000000; mov.f32 tcc30, 0f00000000; mov.f32 tcc31, 0f00000000;\n\t" +
        "mov.f32 tcc32, 0f00000000; mov.f32 tcc33, 0f00000000; mov.f32 tcc34, 0f00000000; mov.f32 tcc35, 0f00000000; mov.f32 tcc36, 0f00000000; mov.f32 tcc37, 0f00000000; mov.f32 tcc38, 0f00000000; mov.f32 tcc39, 0f00000000;\n\t" +
        "mov.f32 tcc40, 0f00000000; mov.f32 tcc41, 0f00000000; mov.f32 tcc42, 0f00000000; mov.f32 tcc43, 0f00000000; mov.f32 tcc44, 0f00000000; mov.f32 tcc45, 0f00000000; mov.f32 tcc46, 0f00000000; mov.f32 tcc47, 0f00000000;\n\t" +
        "mov.f32 tcc48, 0f00000000; mov.f32 tcc49, 0f00000000; mov.f32 tcc50, 0f00000000; mov.f32 tcc51, 0f00000000; mov.f32 tcc52, 0f00000000; mov.f32 tcc53, 0f00000000; mov.f32 tcc54, 0f00000000; mov.f32 tcc55, 0f00000000;\n\t" +
        "mov.f32 tcc56, 0f00000000; mov.f32 tcc57, 0f00000000; mov.f32 tcc58, 0f00000000; mov.f32 tcc59, 0f00000000; mov.f32 tcc60, 0f00000000; mov.f32 tcc61, 0f00000000; mov.f32 tcc62, 0f00000000; mov.f32 tcc63, 0f00000000;";

    private const string ZeroWide =
        "mov.f32 tcc0, 0f00000000; mov.f32 tcc1, 0f00000000; mov.f32 tcc2, 0f00000000; mov.f32 tcc3, 0f00000000; mov.f32 tcc4, 0f00000000; mov.f32 tcc5, 0f00000000; mov.f32 tcc6, 0f00000000; mov.f32 tcc7, 0f00000000;\n\t" +
        "mov.f32 tcc8, 0f00000000; mov.f32 tcc9, 0f00000000; mov.f32 tcc10, 0f00000000; mov.f32 tcc11, 0f00000000; mov.f32 tcc12, 0f00000000; mov.f32 tcc13, 0f00000000; mov.f32 tcc14, 0f00000000; mov.f32 tcc15, 0f00000000;\n\t" +
        "mov.f32 tcc16, 0f00000000; mov.f32 tcc17, 0f00000000; mov.f32 tcc18, 0f00000000; mov.f32 tcc19, 0f00000000; mov.f32 tcc20, 0f00000000; mov.f32 tcc21, 0f00000000; mov.f32 tcc22, 0f00000000; mov.f32 tcc23, 0f00000000;\n\t" +
        "mov.f32 tcc24, 0f00000000; mov.f32 tcc25, 0f00000000; mov.f32 tcc26, 0f00000000; mov.f32 tcc27, 0f00000000; mov.f32 tcc28, 0f00000000; mov.f32 tcc29, 0f00000000; mov.f32 tcc30, 0f00000000; mov.f32 tcc31, 0f00000000;\n\t" +
        "mov.f32 tcc32, 0f00000000; mov.f32 tcc33, 0f00000000; mov.f32 tcc34, 0f00000000; mov.f32 tcc35, 0f00000000; mov.f32 tcc36, 0f00000000; mov.f32 tcc37, 0f00000000; mov.f32 tcc38, 0f00000000; mov.f32 tcc39, 0f00000000;\n\t" +
        "mov.f32 tcc40, 0f00000000; mov.f32 tcc41, 0f00000000; mov.f32 tcc42, 0f00000000; mov.f32 tcc43, 0f00000000; mov.f32 tcc44, 0f00000000; mov.f32 tcc45, 0f00000000; mov.f32 tcc46, 0f00000000; mov.f32 tcc47, 0f00000000;\n\t" +
        "mov.f32 tcc48, 0f00000000; mov.f32 tcc49, 0f00000000; mov.f32 tcc50, 0f00000000; mov.f32 tcc51, 0f00000000; mov.f32 tcc52, 0f00000000; mov.f32 tcc53, 0f00000000; mov.f32 tcc54, 0f00000000; mov.f32 tcc55, 0f00000000;\n\t" +
        "mov.f32 tcc56, 0f00000000; mov.f32 tcc57, 0f00000000; mov.f32 tcc58, 0f00000000; mov.f32 tcc59, 0f00000000; mov.f32 tcc60, 0f00000000; mov.f32 tcc61, 0f00000000; mov.f32 tcc62, 0f00000000; mov.f32 tcc63, 0f00000000;\n\t" +
        "mov.f32 tcc64, 0f00000000; mov.f32 tcc65, 0f00000000; mov.f32 tcc66, 0f00000000; mov.f32 tcc67, 0f00000000; mov.f32 tcc68, 0f00000000; mov.f32 tcc69, 0f00000000; mov.f32 tcc70, 0f00000000; mov.f32 tcc71, 0f00000000;\n\t" +
        "mov.f32 tcc72, 0f00000000; mov.f32 tcc73, 0f00000000; mov.f32 tcc74, 0f00000000; mov.f32 tcc75, 0f00000000; mov.f32 tcc76, 0f00000000; mov.f32 tcc77, 0f00000000; mov.f32 tcc78, 0f00000000; mov.f32 tcc79, 0f00000000;\n\t" +
        "mov.f32 tcc80, 0f00000000; mov.f32 tcc81, 0f00000000; mov.f32 tcc82, 0f00000000; mov.f32 tcc83, 0f00000000; mov.f32 tcc84, 0f00000000; mov.f32 tcc85, 0f00000000; mov.f32 tcc86, 0f00000000; mov.f32 tcc87, 0f00000000;\n\t" +
        "mov.f32 tcc88, 0f00000000; mov.f32 tcc89, 0f00000000; mov.f32 tcc90, 0f00000000; mov.f32 tcc91, 0f00000000; mov.f32 tcc92, 0f00000000; mov.f32 tcc93, 0f00000000; mov.f32 tcc94, 0f00000000; mov.f32 tcc95, 0f00000000;\n\t" +
        "mov.f32 tcc96, 0f00000000; mov.f32 tcc97, 0f00000000; mov.f32 tcc98, 0f00000000; mov.f32 tcc99, 0f00000000; mov.f32 tcc100, 0f00000000; mov.f32 tcc101, 0f00000000; mov.f32 tcc102, 0f00000000; mov.f32 tcc103, 0f00000000;\n\t" +
        "mov.f32 tcc104, 0f00000000; mov.f32 tcc105, 0f00000000; mov.f32 tcc106, 0f00000000; mov.f32 tcc107, 0f00000000; mov.f32 tcc108, 0f00000000; mov.f32 tcc109, 0f00000000; mov.f32 tcc110, 0f00000000; mov.f32 tcc111, 0f00000000;\n\t" +
        "mov.f32 tcc112, 0f00000000; mov.f32 tcc113, 0f00000000; mov.f32 tcc114, 0f00000000; mov.f32 tcc115, 0f00000000; mov.f32 tcc116, 0f00000000; mov.f32 tcc117, 0f00000000; mov.f32 tcc118, 0f00000000; mov.f32 tcc119, 0f00000000;\n\t" +
        "mov.f32 tcc120, 0f00000000; mov.f32 tcc121, 0f00000000; mov.f32 tcc122, 0f00000000; mov.f32 tcc123, 0f00000000; mov.f32 tcc124, 0f00000000; mov.f32 tcc125, 0f00000000; mov.f32 tcc126, 0f00000000; mov.f32 tcc127, 0f00000000;";

    private const string MmaNarrow =
        Mma + "{tcc0,tcc1,tcc2,tcc3}, {tca0,tca1,tca2,tca3}, {tcb0,tcb1}, {tcc0,tcc1,tcc2,tcc3};\n\t" +
        Mma + "{tcc4,tcc5,tcc6,tcc7}, {tca0,tca1,tca2,tca3}, {tcb2,tcb3}, {tcc4,tcc5,tcc6,tcc7};\n\t" +
        Mma + "{tcc8,tcc9,tcc10,tcc11}, {tca0,tca1,tca2,tca3}, {tcb4,tcb5}, {tcc8,tcc9,tcc10,tcc11};\n\t" +
        Mma + "{tcc12,tcc13,tcc14,tcc15}, {tca0,tca1,tca2,tca3}, {tcb6,tcb7}, {tcc12,tcc13,tcc14,tcc15};\n\t" +
        Mma + "{tcc16,tcc17,tcc18,tcc19}, {tca4,tca5,tca6,tca7}, {tcb0,tcb1}, {tcc16,tcc17,tcc18,tcc19};\n\t" +
        Mma + "{tcc20,tcc21,tcc22,tcc23}, {tca4,tca5,tca6,tca7}, {tcb2,tcb3}, {tcc20,tcc21,tcc22,tcc23};\n\t" +
        Mma + "{tcc24,tcc25,tcc26,tcc27}, {tca4,tca5,tca6,tca7}, {tcb4,tcb5}, {tcc24,tcc25,tcc26,tcc27};\n\t" +
        Mma + "{tcc28,tcc29,tcc30,tcc31}, {tca4,tca5,tca6,tca7}, {tcb6,tcb7}, {tcc28,tcc29,tcc30,tcc31};\n\t" +
        Mma + "{tcc32,tcc33,tcc34,tcc35}, {tca8,tca9,tca10,tca11}, {tcb0,tcb1}, {tcc32,tcc33,tcc34,tcc35};\n\t" +
        Mma + "{tcc36,tcc37,tcc38,tcc39}, {tca8,tca9,tca10,tca11}, {tcb2,tcb3}, {tcc36,tcc37,tcc38,tcc39};\n\t" +
        Mma + "{tcc40,tcc41,tcc42,tcc43}, {tca8,tca9,tca10,tca11}, {tcb4,tcb5}, {tcc40,tcc41,tcc42,tcc43};\n\t" +
        Mma + "{tcc44,tcc45,tcc46,tcc47}, {tca8,tca9,tca10,tca11}, {tcb6,tcb7}, {tcc44,tcc45,tcc46,tcc47};\n\t" +
        Mma + "{tcc48,tcc49,tcc50,tcc51}, {tca12,tca13,tca14,tca15}, {tcb0,tcb1}, {tcc48,tcc49,tcc50,tcc51};\n\t" +
        Mma + "{tcc52,tcc53,tcc54,tcc55}, {tca12,tca13,tca14,tca15}, {tcb2,tcb3}, {tcc52,tcc53,tcc54,tcc55};\n\t" +
        Mma + "{tcc56,tcc57,tcc58,tcc59}, {tca12,tca13,tca14,tca15}, {tcb4,tcb5}, {tcc56,tcc57,tcc58,tcc59};\n\t" +
        Mma + "{tcc60,tcc61,tcc62,tcc63}, {tca12,tca13,tca14,tca15}, {tcb6,tcb7}, {tcc60,tcc61,tcc62,tcc63};";

    private const string MmaWide =
        Mma + "{tcc0,tcc1,tcc2,tcc3}, {tca0,tca1,tca2,tca3}, {tcb0,tcb1}, {tcc0,tcc1,tcc2,tcc3};\n\t" +
        Mma + "{tcc4,tcc5,tcc6,tcc7}, {tca0,tca1,tca2,tca3}, {tcb2,tcb3}, {tcc4,tcc5,tcc6,tcc7};\n\t" +
        Mma + "{tcc8,tcc9,tcc10,tcc11}, {tca0,tca1,tca2,tca3}, {tcb4,tcb5}, {tcc8,tcc9,tcc10,tcc11};\n\t" +
        Mma + "{tcc12,tcc13,tcc14,tcc15}, {tca0,tca1,tca2,tca3}, {tcb6,tcb7}, {tcc12,tcc13,tcc14,tcc15};\n\t" +
        Mma + "{tcc16,tcc17,tcc18,tcc19}, {tca0,tca1,tca2,tca3}, {tcb8,tcb9}, {tcc16,tcc17,tcc18,tcc19};\n\t" +
        Mma + "{tcc20,tcc21,tcc22,tcc23}, {tca0,tca1,tca2,tca3}, {tcb10,tcb11}, {tcc20,tcc21,tcc22,tcc23};\n\t" +
        Mma + "{tcc24,tcc25,tcc26,tcc27}, {tca0,tca1,tca2,tca3}, {tcb12,tcb13}, {tcc24,tcc25,tcc26,tcc27};\n\t" +
        Mma + "{tcc28,tcc29,tcc30,tcc31}, {tca0,tca1,tca2,tca3}, {tcb14,tcb15}, {tcc28,tcc29,tcc30,tcc31};\n\t" +
        Mma + "{tcc32,tcc33,tcc34,tcc35}, {tca4,tca5,tca6,tca7}, {tcb0,tcb1}, {tcc32,tcc33,tcc34,tcc35};\n\t" +
        Mma + "{tcc36,tcc37,tcc38,tcc39}, {tca4,tca5,tca6,tca7}, {tcb2,tcb3}, {tcc36,tcc37,tcc38,tcc39};\n\t" +
        Mma + "{tcc40,tcc41,tcc42,tcc43}, {tca4,tca5,tca6,tca7}, {tcb4,tcb5}, {tcc40,tcc41,tcc42,tcc43};\n\t" +
        Mma + "{tcc44,tcc45,tcc46,tcc47}, {tca4,tca5,tca6,tca7}, {tcb6,tcb7}, {tcc44,tcc45,tcc46,tcc47};\n\t" +
        Mma + "{tcc48,tcc49,tcc50,tcc51}, {tca4,tca5,tca6,tca7}, {tcb8,tcb9}, {tcc48,tcc49,tcc50,tcc51};\n\t" +
        Mma + "{tcc52,tcc53,tcc54,tcc55}, {tca4,tca5,tca6,tca7}, {tcb10,tcb11}, {tcc52,tcc53,tcc54,tcc55};\n\t" +
        Mma + "{tcc56,tcc57,tcc58,tcc59}, {tca4,tca5,tca6,tca7}, {tcb12,tcb13}, {tcc56,tcc57,tcc58,tcc59};\n\t" +
        Mma + "{tcc60,tcc61,tcc62,tcc63}, {tca4,tca5,tca6,tca7}, {tcb14,tcb15}, {tcc60,tcc61,tcc62,tcc63};\n\t" +
        Mma + "{tcc64,tcc65,tcc66,tcc67}, {tca8,tca9,tca10,tca11}, {tcb0,tcb1}, {tcc64,tcc65,tcc66,tcc67};\n\t" +
        Mma + "{tcc68,tcc69,tcc70,tcc71}, {tca8,tca9,tca10,tca11}, {tcb2,tcb3}, {tcc68,tcc69,tcc70,tcc71};\n\t" +
        Mma + "{tcc72,tcc73,tcc74,tcc75}, {tca8,tca9,tca10,tca11}, {tcb4,tcb5}, {tcc72,tcc73,tcc74,tcc75};\n\t" +
        Mma + "{tcc76,tcc77,tcc78,tcc79}, {tca8,tca9,tca10,tca11}, {tcb6,tcb7}, {tcc76,tcc77,tcc78,tcc79};\n\t" +
        Mma + "{tcc80,tcc81,tcc82,tcc83}, {tca8,tca9,tca10,tca11}, {tcb8,tcb9}, {tcc80,tcc81,tcc82,tcc83};\n\t" +
        Mma + "{tcc84,tcc85,tcc86,tcc87}, {tca8,tca9,tca10,tca11}, {tcb10,tcb11}, {tcc84,tcc85,tcc86,tcc87};\n\t" +
        Mma + "{tcc88,tcc89,tcc90,tcc91}, {tca8,tca9,tca10,tca11}, {tcb12,tcb13}, {tcc88,tcc89,tcc90,tcc91};\n\t" +
        Mma + "{tcc92,tcc93,tcc94,tcc95}, {tca8,tca9,tca10,tca11}, {tcb14,tcb15}, {tcc92,tcc93,tcc94,tcc95};\n\t" +
        Mma + "{tcc96,tcc97,tcc98,tcc99}, {tca12,tca13,tca14,tca15}, {tcb0,tcb1}, {tcc96,tcc97,tcc98,tcc99};\n\t" +
        Mma + "{tcc100,tcc101,tcc102,tcc103}, {tca12,tca13,tca14,tca15}, {tcb2,tcb3}, {tcc100,tcc101,tcc102,tcc103};\n\t" +
        Mma + "{tcc104,tcc105,tcc106,tcc107}, {tca12,tca13,tca14,tca15}, {tcb4,tcb5}, {tcc104,tcc105,tcc106,tcc107};\n\t" +
        Mma + "{tcc108,tcc109,tcc110,tcc111}, {tca12,tca13,tca14,tca15}, {tcb6,tcb7}, {tcc108,tcc109,tcc110,tcc111};\n\t" +
        Mma + "{tcc112,tcc113,tcc114,tcc115}, {tca12,tca13,tca14,tca15}, {tcb8,tcb9}, {tcc112,tcc113,tcc114,tcc115};\n\t" +
        Mma + "{tcc116,tcc117,tcc118,tcc119}, {tca12,tca13,tca14,tca15}, {tcb10,tcb11}, {tcc116,tcc117,tcc118,tcc119};\n\t" +
        Mma + "{tcc120,tcc121,tcc122,tcc123}, {tca12,tca13,tca14,tca15}, {tcb12,tcb13}, {tcc120,tcc121,tcc122,tcc123};\n\t" +
        Mma + "{tcc124,tcc125,tcc126,tcc127}, {tca12,tca13,tca14,tca15}, {tcb14,tcb15}, {tcc124,tcc125,tcc126,tcc127};";


    /// <summary>
    /// Step <paramref name="ks"/> (0 or 1) of the slice in the stage at byte <paramref name="st"/>: the warp's A and B
    /// fragments, then its mma (a k16 step for bf16, a k8 step for fp32). K-contiguous lanes use their ks address;
    /// MN-contiguous ones move 16 bf16 or 8 fp32 k-rows (4096 bytes for A, 32·BN = <paramref name="bKsStep"/> for B).
    /// </summary>
    private static void WarpStep(int ks, int st, bool aKc, bool bKc, bool wide, int passes, int bKsStep)
    {
        if (aKc)
        {
            if (ks == 0) CudaAsm.Emit(LoadAKContiguous0, st);
            else CudaAsm.Emit(LoadAKContiguous1, st);
        }
        else if (passes != 0) CudaAsm.Emit(LoadAMnF32, st + 4096 * ks);
        else CudaAsm.Emit(LoadAMnContiguous, st + 4096 * ks);
        if (wide)
        {
            if (bKc)
            {
                if (ks == 0) CudaAsm.Emit(LoadBKContiguousWide0, st);
                else CudaAsm.Emit(LoadBKContiguousWide1, st);
            }
            else CudaAsm.Emit(LoadBMnContiguousWide, st + bKsStep * ks);
            CudaAsm.Emit(MmaWide);
            return;
        }
        if (bKc)
        {
            if (ks == 0) CudaAsm.Emit(LoadBKContiguousNarrow0, st);
            else CudaAsm.Emit(LoadBKContiguousNarrow1, st);
        }
        else if (passes != 0) CudaAsm.Emit(LoadBMnF32Narrow, st + bKsStep * ks);
        else CudaAsm.Emit(LoadBMnContiguousNarrow, st + bKsStep * ks);
        if (passes == 0) CudaAsm.Emit(MmaNarrow);
        else if (passes == 1) CudaAsm.Emit(MmaTf32Narrow);
        else CudaAsm.Emit(MmaTf32x3Narrow);
    }

    /// <summary>
    /// The 32-deep kernel (tiles Narrow, Wide, NarrowDeep, WideDeep). With fp32 operands (<typeparamref name="TPrecision"/>,
    /// narrow tiles only) the operands are 16-bit word arrays and a slice is 16 fp32 of K in the same bytes: K-contiguous
    /// slices are byte for byte the bf16 ones (plain ldmatrix hands each lane the fp32 word that m16n8k8.tf32 wants in
    /// that register), MN-contiguous ones are [16 k][128 rows] fp32 read one word per register
    /// (<see cref="MnContiguousF32Offset"/>); each 16-word step is one k8 step of m16n8k8.tf32 mma, 1 or 3 passes.
    /// </summary>
    private static void TensorCoreKernel<TShape, TPrecision, TATransposed, TBTransposed, TAVector, TBVector>(
        ArrayView<ushort> a, ArrayView<ushort> b, ArrayView<float> cF, ArrayView<ushort> cH, FloatView bias, TcParams p)
        where TShape : struct, ITileShape
        where TPrecision : struct, IPrecision
        where TATransposed : struct, IFlag
        where TBTransposed : struct, IFlag
        where TAVector : struct, IFlag
        where TBVector : struct, IFlag
    {
        int tid = Group.IdxX;
        int block = Grid.IdxX;
        bool wide = default(TShape).Wide, deep = default(TShape).Deep;
        int stages = default(TShape).Stages;
        bool aKc = !default(TATransposed).On, bKc = default(TBTransposed).On;
        bool aVec = default(TAVector).On, bVec = default(TBVector).On;
        int passes = default(TPrecision).Passes;
        bool f32 = passes != 0;
        int blockN = wide ? 256 : 128;
        int stageBytes = ASliceBytes + blockN * BlockK * 2;

        TileOf(block, p, out int m0, out int n0, out int split, out int outBatch);
        int lane = tid & 31, warp = tid >> 5;
        int wm = warp >> 2, wn = warp & 3;

        // This lane's ldmatrix addresses in stage 0 (the constant strides between fragments are immediates in the PTX
        // for K-contiguous slices; MN-contiguous ones move 4096 bytes (A) or 32·BN (B) per k16 step). An MN-contiguous
        // fp32 slice has four word addresses per operand (A: fragment parity × row half; B: the four fragments).
        int la0, la1, la2, la3, lb0, lb1, lb2, lb3;
        if (f32 && !aKc)
        {
            la0 = LdsOffsetAF32(lane, wm, 0, 0, 0); la1 = LdsOffsetAF32(lane, wm, 0, 0, 1);
            la2 = LdsOffsetAF32(lane, wm, 0, 1, 0); la3 = LdsOffsetAF32(lane, wm, 0, 1, 1);
        }
        else
        {
            la0 = LdmatrixOffsetA(aKc, lane, wm, 0, 0);
            la1 = aKc ? LdmatrixOffsetA(aKc, lane, wm, 1, 0) : LdmatrixOffsetA(aKc, lane, wm, 0, 1);
            la2 = LdmatrixOffsetA(aKc, lane, wm, 0, 2); la3 = LdmatrixOffsetA(aKc, lane, wm, 0, 3);
        }
        if (f32 && !bKc)
        {
            lb0 = ASliceBytes + LdsOffsetBF32(lane, wn, 0, 0, 0, blockN); lb1 = ASliceBytes + LdsOffsetBF32(lane, wn, 0, 1, 0, blockN);
            lb2 = ASliceBytes + LdsOffsetBF32(lane, wn, 0, 2, 0, blockN); lb3 = ASliceBytes + LdsOffsetBF32(lane, wn, 0, 3, 0, blockN);
        }
        else
        {
            lb0 = ASliceBytes + LdmatrixOffsetB(bKc, lane, wn, 0, 0, blockN);
            lb1 = ASliceBytes + (bKc ? LdmatrixOffsetB(bKc, lane, wn, 1, 0, blockN) : LdmatrixOffsetB(bKc, lane, wn, 0, 1, blockN));
            lb2 = ASliceBytes + LdmatrixOffsetB(bKc, lane, wn, 0, 2, blockN); lb3 = ASliceBytes + LdmatrixOffsetB(bKc, lane, wn, 0, 3, blockN);
        }
        if (deep)
        {
            // Referencing the dynamic view keeps ILGPU's declaration of it (never runs: M > 0).
            var dynamicShared = SharedMemory.GetDynamic<byte>();
            if (p.M < 0) dynamicShared[0] = 0;
            CudaAsm.Emit(DeclareDynamic, la0, la1, la2, la3, lb0, lb1, lb2, lb3);
        }
        else CudaAsm.Emit(DeclareStatic, la0, la1, la2, la3, lb0, lb1, lb2, lb3);
        if (passes == 3) CudaAsm.Emit(DeclareTf32Small);
        if (wide) CudaAsm.Emit(ZeroWide);
        else CudaAsm.Emit(ZeroNarrow);
        int bKsStep = BlockK * blockN;

        // This thread's chunks (two of A, two or four of B): element index of the next slice to load, advanced per slice.
        var a0 = SliceChunk(aKc, f32, tid, m0, p.M, p.AOffset, p.Lda, BlockM);
        var a1 = SliceChunk(aKc, f32, tid + Threads, m0, p.M, p.AOffset, p.Lda, BlockM);
        var b0 = SliceChunk(bKc, f32, tid, n0, p.N, p.BOffset, p.Ldb, blockN);
        var b1 = SliceChunk(bKc, f32, tid + Threads, n0, p.N, p.BOffset, p.Ldb, blockN);
        var b2 = wide ? Chunk(bKc, tid + 2 * Threads, n0, p.N, p.BOffset, p.Ldb, blockN) : b1;
        var b3 = wide ? Chunk(bKc, tid + 3 * Threads, n0, p.N, p.BOffset, p.Ldb, blockN) : b1;
        long aStep = SliceStepOf(aKc, f32, p.Lda), bStep = SliceStepOf(bKc, f32, p.Ldb);
        // Whole tile inside M and N: only K can cut a chunk short (and only in a last, partial slice).
        bool interior = m0 + BlockM <= p.M && n0 + blockN <= p.N;

        int count = SlicesOf(p, split, out int first);
        var next = SliceCursor.At(p, first, outBatch, aStep, bStep);

        int loadStage = 0;
        for (int s = 0; s < stages - 1; s++)
        {
            if (s < count)
            {
                LoadSlice(a, b, p, loadStage * stageBytes, aKc, bKc, aVec, bVec, wide, interior, a0, a1, b0, b1, b2, b3, next.AShift, next.BShift, next.Kt * BlockK);
                next.Advance(p, aStep, bStep);
            }
            CudaAsm.Emit("cp.async.commit_group;");
            loadStage++;
        }

        int computeStage = 0;
        for (int i = 0; i < count; i++)
        {
            // Slice i has landed for this thread's copies (at most stages-2 newer groups pending); the barrier makes
            // every thread's copies visible and guarantees everyone finished slice i-1, whose stage the next copy reuses.
            if (stages == 2) CudaAsm.Emit("cp.async.wait_group 0;");
            else if (stages == 3) CudaAsm.Emit("cp.async.wait_group 1;");
            else CudaAsm.Emit("cp.async.wait_group 2;");
            Group.Barrier();
            int st = computeStage * stageBytes;
            // k16 step 0, before the next slice's copies (see the 64-deep kernel)
            WarpStep(0, st, aKc, bKc, wide, passes, bKsStep);
            if (i + stages - 1 < count)
            {
                LoadSlice(a, b, p, loadStage * stageBytes, aKc, bKc, aVec, bVec, wide, interior, a0, a1, b0, b1, b2, b3, next.AShift, next.BShift, next.Kt * BlockK);
                next.Advance(p, aStep, bStep);
            }
            CudaAsm.Emit("cp.async.commit_group;");
            loadStage = loadStage == stages - 1 ? 0 : loadStage + 1;
            WarpStep(1, st, aKc, bKc, wide, passes, bKsStep);
            computeStage = computeStage == stages - 1 ? 0 : computeStage + 1;
        }

        long cBase = p.COffset + outBatch * p.CBatch + split * p.SplitStride;
        int row = m0 + wm * WarpM + (lane >> 2);
        int col = n0 + wn * (blockN / 4) + 2 * (lane & 3);
        if (wide) StoreWide(cF, cH, bias, p, cBase, row, col);
        else StoreNarrow<DirectStores>(cF, cH, bias, p, cBase, m0, n0, row, col);
    }

    private const string LoadAKc64_0 = "{ .reg .u32 t; add.u32 t, tcla0, %0;\n\t" + LdsmA + "{tca0,tca1,tca2,tca3}, [t];\n\t" + LdsmA + "{tca4,tca5,tca6,tca7}, [t+2048];\n\t" + LdsmA + "{tca8,tca9,tca10,tca11}, [t+4096];\n\t" + LdsmA + "{tca12,tca13,tca14,tca15}, [t+6144]; }";
    private const string LoadAKc64_1 = "{ .reg .u32 t; add.u32 t, tcla1, %0;\n\t" + LdsmA + "{tca0,tca1,tca2,tca3}, [t];\n\t" + LdsmA + "{tca4,tca5,tca6,tca7}, [t+2048];\n\t" + LdsmA + "{tca8,tca9,tca10,tca11}, [t+4096];\n\t" + LdsmA + "{tca12,tca13,tca14,tca15}, [t+6144]; }";
    private const string LoadAKc64_2 = "{ .reg .u32 t; add.u32 t, tcla2, %0;\n\t" + LdsmA + "{tca0,tca1,tca2,tca3}, [t];\n\t" + LdsmA + "{tca4,tca5,tca6,tca7}, [t+2048];\n\t" + LdsmA + "{tca8,tca9,tca10,tca11}, [t+4096];\n\t" + LdsmA + "{tca12,tca13,tca14,tca15}, [t+6144]; }";
    private const string LoadAKc64_3 = "{ .reg .u32 t; add.u32 t, tcla3, %0;\n\t" + LdsmA + "{tca0,tca1,tca2,tca3}, [t];\n\t" + LdsmA + "{tca4,tca5,tca6,tca7}, [t+2048];\n\t" + LdsmA + "{tca8,tca9,tca10,tca11}, [t+4096];\n\t" + LdsmA + "{tca12,tca13,tca14,tca15}, [t+6144]; }";
    private const string LoadBKc64_0 = "{ .reg .u32 t; add.u32 t, tclb0, %0;\n\t" + LdsmA + "{tcb0,tcb1,tcb2,tcb3}, [t];\n\t" + LdsmA + "{tcb4,tcb5,tcb6,tcb7}, [t+2048]; }";
    private const string LoadBKc64_1 = "{ .reg .u32 t; add.u32 t, tclb1, %0;\n\t" + LdsmA + "{tcb0,tcb1,tcb2,tcb3}, [t];\n\t" + LdsmA + "{tcb4,tcb5,tcb6,tcb7}, [t+2048]; }";
    private const string LoadBKc64_2 = "{ .reg .u32 t; add.u32 t, tclb2, %0;\n\t" + LdsmA + "{tcb0,tcb1,tcb2,tcb3}, [t];\n\t" + LdsmA + "{tcb4,tcb5,tcb6,tcb7}, [t+2048]; }";
    private const string LoadBKc64_3 = "{ .reg .u32 t; add.u32 t, tclb3, %0;\n\t" + LdsmA + "{tcb0,tcb1,tcb2,tcb3}, [t];\n\t" + LdsmA + "{tcb4,tcb5,tcb6,tcb7}, [t+2048]; }";

    /// <summary>
    /// The 64-deep narrow tile: the kernel above with 128×128 tiles, 64-deep K slices (4 k16 steps per barrier instead
    /// of 2), 3 stages of 32 KB in dynamic shared memory. K-contiguous slices have 128-byte rows (8 chunks, swizzled
    /// with the row's low 3 bits), so fragments sit 2048 bytes apart and each k16 step has its own lane address
    /// (tcla0..3 / tclb0..3); MN-contiguous slices keep one address per fragment and move 4096 bytes per k16 step.
    /// Each thread copies 4 chunks of each operand, derived from one (<see cref="ChunkStep"/>).
    /// </summary>
    private static void TensorCoreKernelK64<TATransposed, TBTransposed, TAVector, TBVector>(
        ArrayView<ushort> a, ArrayView<ushort> b, ArrayView<float> cF, ArrayView<ushort> cH, FloatView bias, TcParams p)
        where TATransposed : struct, IFlag
        where TBTransposed : struct, IFlag
        where TAVector : struct, IFlag
        where TBVector : struct, IFlag
    {
        const int sliceK = 64, blockN = 128, aSlice = Ring64ASliceBytes;
        int tid = Group.IdxX;
        int block = Grid.IdxX;
        bool aKc = !default(TATransposed).On, bKc = default(TBTransposed).On;
        bool aVec = default(TAVector).On, bVec = default(TBVector).On;

        TileOf(block, p, out int m0, out int n0, out int split, out int outBatch);
        int lane = tid & 31, warp = tid >> 5;
        int wm = warp >> 2, wn = warp & 3;

        // K-contiguous: one address per k16 step (fragments 16 rows = 2048 bytes apart); MN-contiguous: one per fragment.
        int la0 = aKc ? LdmatrixOffsetA(true, lane, wm, 0, 0, sliceK) : LdmatrixOffsetA(false, lane, wm, 0, 0, sliceK);
        int la1 = aKc ? LdmatrixOffsetA(true, lane, wm, 1, 0, sliceK) : LdmatrixOffsetA(false, lane, wm, 0, 1, sliceK);
        int la2 = aKc ? LdmatrixOffsetA(true, lane, wm, 2, 0, sliceK) : LdmatrixOffsetA(false, lane, wm, 0, 2, sliceK);
        int la3 = aKc ? LdmatrixOffsetA(true, lane, wm, 3, 0, sliceK) : LdmatrixOffsetA(false, lane, wm, 0, 3, sliceK);
        int lb0 = aSlice + (bKc ? LdmatrixOffsetB(true, lane, wn, 0, 0, blockN, sliceK) : LdmatrixOffsetB(false, lane, wn, 0, 0, blockN, sliceK));
        int lb1 = aSlice + (bKc ? LdmatrixOffsetB(true, lane, wn, 1, 0, blockN, sliceK) : LdmatrixOffsetB(false, lane, wn, 0, 1, blockN, sliceK));
        int lb2 = aSlice + (bKc ? LdmatrixOffsetB(true, lane, wn, 2, 0, blockN, sliceK) : 0);
        int lb3 = aSlice + (bKc ? LdmatrixOffsetB(true, lane, wn, 3, 0, blockN, sliceK) : 0);
        var dynamicShared = SharedMemory.GetDynamic<byte>();
        if (p.M < 0) dynamicShared[0] = 0; // keeps ILGPU's declaration of the dynamic view (never runs: M > 0)
        CudaAsm.Emit(DeclareDynamic, la0, la1, la2, la3, lb0, lb1, lb2, lb3);
        CudaAsm.Emit(ZeroNarrow);

        int count = SlicesOf(p, split, out int first);
        var copies = Slice64Copies.For(p, tid, m0, n0, first, outBatch, aKc, bKc, wgmmaLayout: false);

        copies.FillRing(a, b, p, count, aKc, bKc, aVec, bVec);

        int computeStage = 0;
        for (int i = 0; i < count; i++)
        {
            CudaAsm.Emit("cp.async.wait_group 1;");
            Group.Barrier();
            // The first k16 step goes before the next slice's copies: the tensor cores start right after the barrier
            // (the copies write another stage, and they are needed only stages-1 slices later).
            int st = computeStage * Ring64StageBytes;
            if (aKc) CudaAsm.Emit(LoadAKc64_0, st); else CudaAsm.Emit(LoadAMnContiguous, st);
            if (bKc) CudaAsm.Emit(LoadBKc64_0, st); else CudaAsm.Emit(LoadBMnContiguousNarrow, st);
            CudaAsm.Emit(MmaNarrow);
            copies.Refill(a, b, p, i + Ring64Stages - 1 < count, aKc, bKc, aVec, bVec);
            if (aKc) CudaAsm.Emit(LoadAKc64_1, st); else CudaAsm.Emit(LoadAMnContiguous, st + 4096);
            if (bKc) CudaAsm.Emit(LoadBKc64_1, st); else CudaAsm.Emit(LoadBMnContiguousNarrow, st + 4096);
            CudaAsm.Emit(MmaNarrow);
            if (aKc) CudaAsm.Emit(LoadAKc64_2, st); else CudaAsm.Emit(LoadAMnContiguous, st + 8192);
            if (bKc) CudaAsm.Emit(LoadBKc64_2, st); else CudaAsm.Emit(LoadBMnContiguousNarrow, st + 8192);
            CudaAsm.Emit(MmaNarrow);
            if (aKc) CudaAsm.Emit(LoadAKc64_3, st); else CudaAsm.Emit(LoadAMnContiguous, st + 12288);
            if (bKc) CudaAsm.Emit(LoadBKc64_3, st); else CudaAsm.Emit(LoadBMnContiguousNarrow, st + 12288);
            CudaAsm.Emit(MmaNarrow);
            computeStage = computeStage == Ring64Stages - 1 ? 0 : computeStage + 1;
        }

        long cBase = p.COffset + outBatch * p.CBatch + split * p.SplitStride;
        int row = m0 + wm * WarpM + (lane >> 2), col = n0 + wn * (blockN / 4) + 2 * (lane & 3);
        if (p.StagedStores != 0)
        {
            // The ring is free once every warp is past its last fragment loads (the copies still pending are empty).
            CudaAsm.Emit("cp.async.wait_group 0;");
            Group.Barrier();
            StoreNarrow<StagedStores>(cF, cH, bias, p, cBase, m0, n0, row, col);
            Group.Barrier();
            StoreStaged(cF, cH, p, cBase, m0, n0, tid);
        }
        else StoreNarrow<DirectStores>(cF, cH, bias, p, cBase, m0, n0, row, col);
    }

    /// <summary>The group's K slices: [<paramref name="first"/>, first + count) of its split's (batch, k tile) sequence; returns count.</summary>
    public static int SlicesOf(TcParams p, int split, out int first)
    {
        int total = p.SumBatches != 0 ? p.Batch * p.KTiles : p.KTiles;
        first = split * p.SlicesPerSplit;
        return Math.Min(p.SlicesPerSplit, total - first);
    }

    /// <summary>
    /// One thread's copies of the 64-deep kernels' slices (mma.sync and wgmma): its first chunk of A and of B (the other
    /// three derived by <see cref="ChunkStep"/>), the rows left below them, the element distances between its chunks and
    /// between slices, and the cursor of the next slice. MN-contiguous chunks land in the mma.sync kernel's layout, or
    /// with <c>wgmmaLayout</c> in <see cref="WgmmaMnOffset"/>'s (chunks 2048 bytes apart instead of 4096).
    /// </summary>
    private struct Slice64Copies
    {
        private ChunkLoad _a0, _b0;
        private int _aRowsLeft, _bRowsLeft, _aSmemStep, _bSmemStep;
        private long _aDelta, _bDelta, _aStep, _bStep;
        private bool _interior;
        private SliceCursor _next;
        private int _stage;

        public static Slice64Copies For(TcParams p, int tid, int m0, int n0, int first, int outBatch, bool aKc, bool bKc, bool wgmmaLayout)
        {
            const int sliceK = 64, blockN = 128;
            var c = new Slice64Copies
            {
                _a0 = Chunk(aKc, tid, m0, p.M, p.AOffset, p.Lda, BlockM, sliceK),
                _b0 = Chunk(bKc, tid, n0, p.N, p.BOffset, p.Ldb, blockN, sliceK),
                _aRowsLeft = p.M - m0 - (tid >> 3), _bRowsLeft = p.N - n0 - (tid >> 3),
                _aSmemStep = aKc || !wgmmaLayout ? 4096 : 2048, _bSmemStep = bKc || !wgmmaLayout ? 4096 : 2048,
                _aDelta = aKc ? 32L * p.Lda : 16L * p.Lda, _bDelta = bKc ? 32L * p.Ldb : 16L * p.Ldb,
                _aStep = SliceStep(aKc, p.Lda, sliceK), _bStep = SliceStep(bKc, p.Ldb, sliceK),
                _interior = m0 + BlockM <= p.M && n0 + blockN <= p.N,
            };
            if (wgmmaLayout && !aKc) c._a0.Smem = WgmmaMnOffset(tid >> 4, tid & 15);
            if (wgmmaLayout && !bKc) c._b0.Smem = WgmmaMnOffset(tid >> 4, tid & 15);
            c._next = SliceCursor.At(p, first, outBatch, c._aStep, c._bStep);
            return c;
        }

        /// <summary>The ring's first two stages: slices 0 and 1 of the group's <paramref name="count"/>, one cp.async group each (empty past count).</summary>
        public void FillRing(ArrayView<ushort> a, ArrayView<ushort> b, TcParams p, int count, bool aKc, bool bKc, bool aVec, bool bVec)
        {
            for (int s = 0; s < Ring64Stages - 1; s++) Refill(a, b, p, s < count, aKc, bKc, aVec, bVec);
        }

        /// <summary>
        /// One cp.async group into the ring's next stage in turn (the stage slice i + 2 goes to while slice i is
        /// multiplied): the next slice's copies when <paramref name="load"/>, else an empty group, so the wait counts
        /// stay the same.
        /// </summary>
        public void Refill(ArrayView<ushort> a, ArrayView<ushort> b, TcParams p, bool load, bool aKc, bool bKc, bool aVec, bool bVec)
        {
            if (load)
            {
                LoadSlice64(a, b, p, _stage * Ring64StageBytes, aKc, bKc, aVec, bVec, _interior, _a0, _b0, _aRowsLeft, _bRowsLeft, _aDelta, _bDelta,
                    _next.AShift, _next.BShift, _next.Kt * 64, _aSmemStep, _bSmemStep);
                _next.Advance(p, _aStep, _bStep);
            }
            CudaAsm.Emit("cp.async.commit_group;");
            _stage = _stage == Ring64Stages - 1 ? 0 : _stage + 1;
        }
    }

    /// <summary>The 64-deep kernels' ring (mma.sync and wgmma): three stages of a 128-row A slice and a 128-row B slice, 64 deep in bf16.</summary>
    private const int Ring64Stages = 3, Ring64ASliceBytes = BlockM * 64 * 2, Ring64StageBytes = 2 * Ring64ASliceBytes;

    /// <summary>The 64-deep kernels' copies of one slice: four chunks of A, four of B, derived from the first of each.</summary>
    private static void LoadSlice64(ArrayView<ushort> a, ArrayView<ushort> b, TcParams p, int stage, bool aKc, bool bKc, bool aVec, bool bVec,
        bool interior, ChunkLoad a0, ChunkLoad b0, int aRowsLeft, int bRowsLeft, long aDelta, long bDelta, long aShift, long bShift, int k0,
        int aSmemStep, int bSmemStep)
    {
        int bStage = stage + Ring64ASliceBytes;
        if (interior && k0 + 64 <= p.K && aVec && bVec)
        {
            long ae = a0.Elem + aShift, be = b0.Elem + bShift;
            CopyWhole(p.APtr, stage + a0.Smem, ae);
            CopyWhole(p.APtr, stage + a0.Smem + aSmemStep, ae + aDelta);
            CopyWhole(p.APtr, stage + a0.Smem + 2 * aSmemStep, ae + 2 * aDelta);
            CopyWhole(p.APtr, stage + a0.Smem + 3 * aSmemStep, ae + 3 * aDelta);
            CopyWhole(p.BPtr, bStage + b0.Smem, be);
            CopyWhole(p.BPtr, bStage + b0.Smem + bSmemStep, be + bDelta);
            CopyWhole(p.BPtr, bStage + b0.Smem + 2 * bSmemStep, be + 2 * bDelta);
            CopyWhole(p.BPtr, bStage + b0.Smem + 3 * bSmemStep, be + 3 * bDelta);
            return;
        }
        for (int i = 0; i < 4; i++)
        {
            var ca = ChunkStep(aKc, a0, i, p.Lda, aRowsLeft, aSmemStep);
            CopyChunk(a, p.APtr, aVec, stage + ca.Smem, ca.Elem + aShift, ChunkValid(aKc, ca, k0, p.K));
            var cb = ChunkStep(bKc, b0, i, p.Ldb, bRowsLeft, bSmemStep);
            CopyChunk(b, p.BPtr, bVec, bStage + cb.Smem, cb.Elem + bShift, ChunkValid(bKc, cb, k0, p.K));
        }
    }

    /// <summary>
    /// The narrow warp tile's epilogue: accumulator pairs (tcc 2j, 2j+1) to rows row + 16·mi (+8), columns col + 8·ni,
    /// one fragment column ni at a time, the bias of the lane's 8 columns read first; stored to C or staged (<typeparamref name="TSink"/>)
    /// in the group's tile at (m0, n0).
    /// </summary>
    private static void StoreNarrow<TSink>(ArrayView<float> cF, ArrayView<ushort> cH, FloatView bias, TcParams p, long cBase, int m0, int n0, int row, int col)
        where TSink : struct, IPairSink
    {
        ulong v;
        // All eight bias values first: one load latency for the lane instead of one per fragment column.
        BiasPair(bias, p, col + 0, out float c0b0, out float c0b1);
        BiasPair(bias, p, col + 8, out float c1b0, out float c1b1);
        BiasPair(bias, p, col + 16, out float c2b0, out float c2b1);
        BiasPair(bias, p, col + 24, out float c3b0, out float c3b1);
        float b0 = c0b0, b1 = c0b1;
        CudaAsm.Emit("mov.b64 %0, {tcc0,tcc1};", out v); default(TSink).Put(cF, cH, p, cBase, m0, n0, row + 0, col + 0, v, b0, b1);
        CudaAsm.Emit("mov.b64 %0, {tcc2,tcc3};", out v); default(TSink).Put(cF, cH, p, cBase, m0, n0, row + 8, col + 0, v, b0, b1);
        CudaAsm.Emit("mov.b64 %0, {tcc16,tcc17};", out v); default(TSink).Put(cF, cH, p, cBase, m0, n0, row + 16, col + 0, v, b0, b1);
        CudaAsm.Emit("mov.b64 %0, {tcc18,tcc19};", out v); default(TSink).Put(cF, cH, p, cBase, m0, n0, row + 24, col + 0, v, b0, b1);
        CudaAsm.Emit("mov.b64 %0, {tcc32,tcc33};", out v); default(TSink).Put(cF, cH, p, cBase, m0, n0, row + 32, col + 0, v, b0, b1);
        CudaAsm.Emit("mov.b64 %0, {tcc34,tcc35};", out v); default(TSink).Put(cF, cH, p, cBase, m0, n0, row + 40, col + 0, v, b0, b1);
        CudaAsm.Emit("mov.b64 %0, {tcc48,tcc49};", out v); default(TSink).Put(cF, cH, p, cBase, m0, n0, row + 48, col + 0, v, b0, b1);
        CudaAsm.Emit("mov.b64 %0, {tcc50,tcc51};", out v); default(TSink).Put(cF, cH, p, cBase, m0, n0, row + 56, col + 0, v, b0, b1);
        b0 = c1b0; b1 = c1b1;
        CudaAsm.Emit("mov.b64 %0, {tcc4,tcc5};", out v); default(TSink).Put(cF, cH, p, cBase, m0, n0, row + 0, col + 8, v, b0, b1);
        CudaAsm.Emit("mov.b64 %0, {tcc6,tcc7};", out v); default(TSink).Put(cF, cH, p, cBase, m0, n0, row + 8, col + 8, v, b0, b1);
        CudaAsm.Emit("mov.b64 %0, {tcc20,tcc21};", out v); default(TSink).Put(cF, cH, p, cBase, m0, n0, row + 16, col + 8, v, b0, b1);
        CudaAsm.Emit("mov.b64 %0, {tcc22,tcc23};", out v); default(TSink).Put(cF, cH, p, cBase, m0, n0, row + 24, col + 8, v, b0, b1);
        CudaAsm.Emit("mov.b64 %0, {tcc36,tcc37};", out v); default(TSink).Put(cF, cH, p, cBase, m0, n0, row + 32, col + 8, v, b0, b1);
        CudaAsm.Emit("mov.b64 %0, {tcc38,tcc39};", out v); default(TSink).Put(cF, cH, p, cBase, m0, n0, row + 40, col + 8, v, b0, b1);
        CudaAsm.Emit("mov.b64 %0, {tcc52,tcc53};", out v); default(TSink).Put(cF, cH, p, cBase, m0, n0, row + 48, col + 8, v, b0, b1);
        CudaAsm.Emit("mov.b64 %0, {tcc54,tcc55};", out v); default(TSink).Put(cF, cH, p, cBase, m0, n0, row + 56, col + 8, v, b0, b1);
        b0 = c2b0; b1 = c2b1;
        CudaAsm.Emit("mov.b64 %0, {tcc8,tcc9};", out v); default(TSink).Put(cF, cH, p, cBase, m0, n0, row + 0, col + 16, v, b0, b1);
        CudaAsm.Emit("mov.b64 %0, {tcc10,tcc11};", out v); default(TSink).Put(cF, cH, p, cBase, m0, n0, row + 8, col + 16, v, b0, b1);
        CudaAsm.Emit("mov.b64 %0, {tcc24,tcc25};", out v); default(TSink).Put(cF, cH, p, cBase, m0, n0, row + 16, col + 16, v, b0, b1);
        CudaAsm.Emit("mov.b64 %0, {tcc26,tcc27};", out v); default(TSink).Put(cF, cH, p, cBase, m0, n0, row + 24, col + 16, v, b0, b1);
        CudaAsm.Emit("mov.b64 %0, {tcc40,tcc41};", out v); default(TSink).Put(cF, cH, p, cBase, m0, n0, row + 32, col + 16, v, b0, b1);
        CudaAsm.Emit("mov.b64 %0, {tcc42,tcc43};", out v); default(TSink).Put(cF, cH, p, cBase, m0, n0, row + 40, col + 16, v, b0, b1);
        CudaAsm.Emit("mov.b64 %0, {tcc56,tcc57};", out v); default(TSink).Put(cF, cH, p, cBase, m0, n0, row + 48, col + 16, v, b0, b1);
        CudaAsm.Emit("mov.b64 %0, {tcc58,tcc59};", out v); default(TSink).Put(cF, cH, p, cBase, m0, n0, row + 56, col + 16, v, b0, b1);
        b0 = c3b0; b1 = c3b1;
        CudaAsm.Emit("mov.b64 %0, {tcc12,tcc13};", out v); default(TSink).Put(cF, cH, p, cBase, m0, n0, row + 0, col + 24, v, b0, b1);
        CudaAsm.Emit("mov.b64 %0, {tcc14,tcc15};", out v); default(TSink).Put(cF, cH, p, cBase, m0, n0, row + 8, col + 24, v, b0, b1);
        CudaAsm.Emit("mov.b64 %0, {tcc28,tcc29};", out v); default(TSink).Put(cF, cH, p, cBase, m0, n0, row + 16, col + 24, v, b0, b1);
        CudaAsm.Emit("mov.b64 %0, {tcc30,tcc31};", out v); default(TSink).Put(cF, cH, p, cBase, m0, n0, row + 24, col + 24, v, b0, b1);
        CudaAsm.Emit("mov.b64 %0, {tcc44,tcc45};", out v); default(TSink).Put(cF, cH, p, cBase, m0, n0, row + 32, col + 24, v, b0, b1);
        CudaAsm.Emit("mov.b64 %0, {tcc46,tcc47};", out v); default(TSink).Put(cF, cH, p, cBase, m0, n0, row + 40, col + 24, v, b0, b1);
        CudaAsm.Emit("mov.b64 %0, {tcc60,tcc61};", out v); default(TSink).Put(cF, cH, p, cBase, m0, n0, row + 48, col + 24, v, b0, b1);
        CudaAsm.Emit("mov.b64 %0, {tcc62,tcc63};", out v); default(TSink).Put(cF, cH, p, cBase, m0, n0, row + 56, col + 24, v, b0, b1);
    }

    /// <summary>The wide warp tile's epilogue (8 fragments along N), column by column as <see cref="StoreNarrow"/>.</summary>
    private static void StoreWide(ArrayView<float> cF, ArrayView<ushort> cH, FloatView bias, TcParams p, long cBase, int row, int col)
    {
        ulong v;
        float b0, b1;
        BiasPair(bias, p, col + 0, out b0, out b1);
        CudaAsm.Emit("mov.b64 %0, {tcc0,tcc1};", out v); StorePair(cF, cH, p, cBase, row + 0, col + 0, v, b0, b1);
        CudaAsm.Emit("mov.b64 %0, {tcc2,tcc3};", out v); StorePair(cF, cH, p, cBase, row + 8, col + 0, v, b0, b1);
        CudaAsm.Emit("mov.b64 %0, {tcc32,tcc33};", out v); StorePair(cF, cH, p, cBase, row + 16, col + 0, v, b0, b1);
        CudaAsm.Emit("mov.b64 %0, {tcc34,tcc35};", out v); StorePair(cF, cH, p, cBase, row + 24, col + 0, v, b0, b1);
        CudaAsm.Emit("mov.b64 %0, {tcc64,tcc65};", out v); StorePair(cF, cH, p, cBase, row + 32, col + 0, v, b0, b1);
        CudaAsm.Emit("mov.b64 %0, {tcc66,tcc67};", out v); StorePair(cF, cH, p, cBase, row + 40, col + 0, v, b0, b1);
        CudaAsm.Emit("mov.b64 %0, {tcc96,tcc97};", out v); StorePair(cF, cH, p, cBase, row + 48, col + 0, v, b0, b1);
        CudaAsm.Emit("mov.b64 %0, {tcc98,tcc99};", out v); StorePair(cF, cH, p, cBase, row + 56, col + 0, v, b0, b1);
        BiasPair(bias, p, col + 8, out b0, out b1);
        CudaAsm.Emit("mov.b64 %0, {tcc4,tcc5};", out v); StorePair(cF, cH, p, cBase, row + 0, col + 8, v, b0, b1);
        CudaAsm.Emit("mov.b64 %0, {tcc6,tcc7};", out v); StorePair(cF, cH, p, cBase, row + 8, col + 8, v, b0, b1);
        CudaAsm.Emit("mov.b64 %0, {tcc36,tcc37};", out v); StorePair(cF, cH, p, cBase, row + 16, col + 8, v, b0, b1);
        CudaAsm.Emit("mov.b64 %0, {tcc38,tcc39};", out v); StorePair(cF, cH, p, cBase, row + 24, col + 8, v, b0, b1);
        CudaAsm.Emit("mov.b64 %0, {tcc68,tcc69};", out v); StorePair(cF, cH, p, cBase, row + 32, col + 8, v, b0, b1);
        CudaAsm.Emit("mov.b64 %0, {tcc70,tcc71};", out v); StorePair(cF, cH, p, cBase, row + 40, col + 8, v, b0, b1);
        CudaAsm.Emit("mov.b64 %0, {tcc100,tcc101};", out v); StorePair(cF, cH, p, cBase, row + 48, col + 8, v, b0, b1);
        CudaAsm.Emit("mov.b64 %0, {tcc102,tcc103};", out v); StorePair(cF, cH, p, cBase, row + 56, col + 8, v, b0, b1);
        BiasPair(bias, p, col + 16, out b0, out b1);
        CudaAsm.Emit("mov.b64 %0, {tcc8,tcc9};", out v); StorePair(cF, cH, p, cBase, row + 0, col + 16, v, b0, b1);
        CudaAsm.Emit("mov.b64 %0, {tcc10,tcc11};", out v); StorePair(cF, cH, p, cBase, row + 8, col + 16, v, b0, b1);
        CudaAsm.Emit("mov.b64 %0, {tcc40,tcc41};", out v); StorePair(cF, cH, p, cBase, row + 16, col + 16, v, b0, b1);
        CudaAsm.Emit("mov.b64 %0, {tcc42,tcc43};", out v); StorePair(cF, cH, p, cBase, row + 24, col + 16, v, b0, b1);
        CudaAsm.Emit("mov.b64 %0, {tcc72,tcc73};", out v); StorePair(cF, cH, p, cBase, row + 32, col + 16, v, b0, b1);
        CudaAsm.Emit("mov.b64 %0, {tcc74,tcc75};", out v); StorePair(cF, cH, p, cBase, row + 40, col + 16, v, b0, b1);
        CudaAsm.Emit("mov.b64 %0, {tcc104,tcc105};", out v); StorePair(cF, cH, p, cBase, row + 48, col + 16, v, b0, b1);
        CudaAsm.Emit("mov.b64 %0, {tcc106,tcc107};", out v); StorePair(cF, cH, p, cBase, row + 56, col + 16, v, b0, b1);
        BiasPair(bias, p, col + 24, out b0, out b1);
        CudaAsm.Emit("mov.b64 %0, {tcc12,tcc13};", out v); StorePair(cF, cH, p, cBase, row + 0, col + 24, v, b0, b1);
        CudaAsm.Emit("mov.b64 %0, {tcc14,tcc15};", out v); StorePair(cF, cH, p, cBase, row + 8, col + 24, v, b0, b1);
        CudaAsm.Emit("mov.b64 %0, {tcc44,tcc45};", out v); StorePair(cF, cH, p, cBase, row + 16, col + 24, v, b0, b1);
        CudaAsm.Emit("mov.b64 %0, {tcc46,tcc47};", out v); StorePair(cF, cH, p, cBase, row + 24, col + 24, v, b0, b1);
        CudaAsm.Emit("mov.b64 %0, {tcc76,tcc77};", out v); StorePair(cF, cH, p, cBase, row + 32, col + 24, v, b0, b1);
        CudaAsm.Emit("mov.b64 %0, {tcc78,tcc79};", out v); StorePair(cF, cH, p, cBase, row + 40, col + 24, v, b0, b1);
        CudaAsm.Emit("mov.b64 %0, {tcc108,tcc109};", out v); StorePair(cF, cH, p, cBase, row + 48, col + 24, v, b0, b1);
        CudaAsm.Emit("mov.b64 %0, {tcc110,tcc111};", out v); StorePair(cF, cH, p, cBase, row + 56, col + 24, v, b0, b1);
        BiasPair(bias, p, col + 32, out b0, out b1);
        CudaAsm.Emit("mov.b64 %0, {tcc16,tcc17};", out v); StorePair(cF, cH, p, cBase, row + 0, col + 32, v, b0, b1);
        CudaAsm.Emit("mov.b64 %0, {tcc18,tcc19};", out v); StorePair(cF, cH, p, cBase, row + 8, col + 32, v, b0, b1);
        CudaAsm.Emit("mov.b64 %0, {tcc48,tcc49};", out v); StorePair(cF, cH, p, cBase, row + 16, col + 32, v, b0, b1);
        CudaAsm.Emit("mov.b64 %0, {tcc50,tcc51};", out v); StorePair(cF, cH, p, cBase, row + 24, col + 32, v, b0, b1);
        CudaAsm.Emit("mov.b64 %0, {tcc80,tcc81};", out v); StorePair(cF, cH, p, cBase, row + 32, col + 32, v, b0, b1);
        CudaAsm.Emit("mov.b64 %0, {tcc82,tcc83};", out v); StorePair(cF, cH, p, cBase, row + 40, col + 32, v, b0, b1);
        CudaAsm.Emit("mov.b64 %0, {tcc112,tcc113};", out v); StorePair(cF, cH, p, cBase, row + 48, col + 32, v, b0, b1);
        CudaAsm.Emit("mov.b64 %0, {tcc114,tcc115};", out v); StorePair(cF, cH, p, cBase, row + 56, col + 32, v, b0, b1);
        BiasPair(bias, p, col + 40, out b0, out b1);
        CudaAsm.Emit("mov.b64 %0, {tcc20,tcc21};", out v); StorePair(cF, cH, p, cBase, row + 0, col + 40, v, b0, b1);
        CudaAsm.Emit("mov.b64 %0, {tcc22,tcc23};", out v); StorePair(cF, cH, p, cBase, row + 8, col + 40, v, b0, b1);
        CudaAsm.Emit("mov.b64 %0, {tcc52,tcc53};", out v); StorePair(cF, cH, p, cBase, row + 16, col + 40, v, b0, b1);
        CudaAsm.Emit("mov.b64 %0, {tcc54,tcc55};", out v); StorePair(cF, cH, p, cBase, row + 24, col + 40, v, b0, b1);
        CudaAsm.Emit("mov.b64 %0, {tcc84,tcc85};", out v); StorePair(cF, cH, p, cBase, row + 32, col + 40, v, b0, b1);
        CudaAsm.Emit("mov.b64 %0, {tcc86,tcc87};", out v); StorePair(cF, cH, p, cBase, row + 40, col + 40, v, b0, b1);
        CudaAsm.Emit("mov.b64 %0, {tcc116,tcc117};", out v); StorePair(cF, cH, p, cBase, row + 48, col + 40, v, b0, b1);
        CudaAsm.Emit("mov.b64 %0, {tcc118,tcc119};", out v); StorePair(cF, cH, p, cBase, row + 56, col + 40, v, b0, b1);
        BiasPair(bias, p, col + 48, out b0, out b1);
        CudaAsm.Emit("mov.b64 %0, {tcc24,tcc25};", out v); StorePair(cF, cH, p, cBase, row + 0, col + 48, v, b0, b1);
        CudaAsm.Emit("mov.b64 %0, {tcc26,tcc27};", out v); StorePair(cF, cH, p, cBase, row + 8, col + 48, v, b0, b1);
        CudaAsm.Emit("mov.b64 %0, {tcc56,tcc57};", out v); StorePair(cF, cH, p, cBase, row + 16, col + 48, v, b0, b1);
        CudaAsm.Emit("mov.b64 %0, {tcc58,tcc59};", out v); StorePair(cF, cH, p, cBase, row + 24, col + 48, v, b0, b1);
        CudaAsm.Emit("mov.b64 %0, {tcc88,tcc89};", out v); StorePair(cF, cH, p, cBase, row + 32, col + 48, v, b0, b1);
        CudaAsm.Emit("mov.b64 %0, {tcc90,tcc91};", out v); StorePair(cF, cH, p, cBase, row + 40, col + 48, v, b0, b1);
        CudaAsm.Emit("mov.b64 %0, {tcc120,tcc121};", out v); StorePair(cF, cH, p, cBase, row + 48, col + 48, v, b0, b1);
        CudaAsm.Emit("mov.b64 %0, {tcc122,tcc123};", out v); StorePair(cF, cH, p, cBase, row + 56, col + 48, v, b0, b1);
        BiasPair(bias, p, col + 56, out b0, out b1);
        CudaAsm.Emit("mov.b64 %0, {tcc28,tcc29};", out v); StorePair(cF, cH, p, cBase, row + 0, col + 56, v, b0, b1);
        CudaAsm.Emit("mov.b64 %0, {tcc30,tcc31};", out v); StorePair(cF, cH, p, cBase, row + 8, col + 56, v, b0, b1);
        CudaAsm.Emit("mov.b64 %0, {tcc60,tcc61};", out v); StorePair(cF, cH, p, cBase, row + 16, col + 56, v, b0, b1);
        CudaAsm.Emit("mov.b64 %0, {tcc62,tcc63};", out v); StorePair(cF, cH, p, cBase, row + 24, col + 56, v, b0, b1);
        CudaAsm.Emit("mov.b64 %0, {tcc92,tcc93};", out v); StorePair(cF, cH, p, cBase, row + 32, col + 56, v, b0, b1);
        CudaAsm.Emit("mov.b64 %0, {tcc94,tcc95};", out v); StorePair(cF, cH, p, cBase, row + 40, col + 56, v, b0, b1);
        CudaAsm.Emit("mov.b64 %0, {tcc124,tcc125};", out v); StorePair(cF, cH, p, cBase, row + 48, col + 56, v, b0, b1);
        CudaAsm.Emit("mov.b64 %0, {tcc126,tcc127};", out v); StorePair(cF, cH, p, cBase, row + 56, col + 56, v, b0, b1);
    }

    /// <summary>
    /// Starts the copies of this thread's chunks (two of A, two or four of B) of the slice whose first k is
    /// <paramref name="k0"/> into the stage at byte offset <paramref name="stage"/>; <paramref name="aShift"/> and
    /// <paramref name="bShift"/> move the chunks' slice-0 elements to this slice (batch and k tile).
    /// </summary>
    private static void LoadSlice(ArrayView<ushort> a, ArrayView<ushort> b, TcParams p, int stage, bool aKc, bool bKc, bool aVec, bool bVec,
        bool wide, bool interior, ChunkLoad a0, ChunkLoad a1, ChunkLoad b0, ChunkLoad b1, ChunkLoad b2, ChunkLoad b3,
        long aShift, long bShift, int k0)
    {
        int bStage = stage + ASliceBytes;
        if (interior && k0 + BlockK <= p.K && aVec && bVec)
        {
            // Every chunk whole: plain 16-byte copies, no validity arithmetic.
            CopyWhole(p.APtr, stage + a0.Smem, a0.Elem + aShift);
            CopyWhole(p.APtr, stage + a1.Smem, a1.Elem + aShift);
            CopyWhole(p.BPtr, bStage + b0.Smem, b0.Elem + bShift);
            CopyWhole(p.BPtr, bStage + b1.Smem, b1.Elem + bShift);
            if (wide)
            {
                CopyWhole(p.BPtr, bStage + b2.Smem, b2.Elem + bShift);
                CopyWhole(p.BPtr, bStage + b3.Smem, b3.Elem + bShift);
            }
            return;
        }
        CopyChunk(a, p.APtr, aVec, stage + a0.Smem, a0.Elem + aShift, ChunkValid(aKc, a0, k0, p.K));
        CopyChunk(a, p.APtr, aVec, stage + a1.Smem, a1.Elem + aShift, ChunkValid(aKc, a1, k0, p.K));
        CopyChunk(b, p.BPtr, bVec, bStage + b0.Smem, b0.Elem + bShift, ChunkValid(bKc, b0, k0, p.K));
        CopyChunk(b, p.BPtr, bVec, bStage + b1.Smem, b1.Elem + bShift, ChunkValid(bKc, b1, k0, p.K));
        if (wide)
        {
            CopyChunk(b, p.BPtr, bVec, bStage + b2.Smem, b2.Elem + bShift, ChunkValid(bKc, b2, k0, p.K));
            CopyChunk(b, p.BPtr, bVec, bStage + b3.Smem, b3.Elem + bShift, ChunkValid(bKc, b3, k0, p.K));
        }
    }

    private static void CopyWhole(ulong pointer, int smemOffset, long elem) =>
        CudaAsm.Emit("{ .reg .u32 t; add.u32 t, tcsb, %0; cp.async.cg.shared.global [t], [%1], 16; }", smemOffset, pointer + (ulong)elem * 2);

    /// <summary>
    /// One 16-byte chunk at ring offset <paramref name="smemOffset"/>, its first <paramref name="valid"/> values from
    /// element <paramref name="elem"/>, the rest zero. cp.async with a source size reads only the valid bytes (a zero
    /// size reads nothing; the address then is the tensor's start, always valid); the scalar form reads each valid value
    /// and writes the chunk with one 16-byte store.
    /// </summary>
    internal static void CopyChunk(ArrayView<ushort> x, ulong pointer, bool vector, int smemOffset, long elem, int valid)
    {
        if (vector)
        {
            ulong source = valid > 0 ? pointer + (ulong)elem * 2 : pointer;
            CudaAsm.Emit("{ .reg .u32 t; add.u32 t, tcsb, %0; cp.async.cg.shared.global [t], [%1], 16, %2; }", smemOffset, source, (uint)(valid * 2));
        }
        else
        {
            uint w0 = PackPair(x, elem, valid, 0), w1 = PackPair(x, elem, valid, 2);
            uint w2 = PackPair(x, elem, valid, 4), w3 = PackPair(x, elem, valid, 6);
            CudaAsm.Emit("{ .reg .u32 t; add.u32 t, tcsb, %0; st.shared.v4.b32 [t], {%1,%2,%3,%4}; }", smemOffset, w0, w1, w2, w3);
        }
    }

    /// <summary>Values j and j+1 of a chunk as one bf16x2 word (low half first), zero past <paramref name="valid"/>; never reads out of range.</summary>
    public static uint PackPair(ArrayView<ushort> x, long elem, int valid, int j)
    {
        uint lo = x[j < valid ? elem + j : 0];
        uint hi = x[j + 1 < valid ? elem + j + 1 : 0];
        return (j < valid ? lo : 0u) | ((j + 1 < valid ? hi : 0u) << 16);
    }

    // ---------------------------------------------------------------------------------------------------------------
    // Split-K reduction.
    // ---------------------------------------------------------------------------------------------------------------

    private static void ReduceSplits(ComputeDevice device, Tensor partials, TcParams p, MatrixOperand c, ArrayView<float> cF, ArrayView<ushort> cH, FloatView bias)
    {
        var rp = new ReduceParams
        {
            Splits = p.Splits, M = p.M, N = p.N, OutBatches = p.OutBatches, SplitStride = p.SplitStride,
            COffset = c.Offset, CBatch = c.BatchStride, Ldc = c.Ld,
            CBf16 = p.CBf16, Accumulate = p.Accumulate, Alpha = p.Alpha, HasBias = p.HasBias,
        };
        if (p.N % 4 == 0 && F32Quads.Fits(partials))
        {
            var quads = device.Kernel("tc_gemm.split_k_sum_x4",
                acc => acc.LoadStreamKernel<F32Quads, ArrayView<float>, ArrayView<ushort>, FloatView, ReduceParams>(ReduceQuadKernel));
            quads(Launch.Elementwise(device, p.SplitStride / 4), F32Quads.Of(partials), cF, cH, bias, rp);
            return;
        }
        var kernel = device.Kernel("tc_gemm.split_k_sum",
            acc => acc.LoadStreamKernel<ArrayView<float>, ArrayView<float>, ArrayView<ushort>, FloatView, ReduceParams>(ReduceKernel));
        kernel(Launch.Elementwise(device, p.SplitStride), partials.F32, cF, cH, bias, rp);
    }

    /// <summary>Arguments of the split-K sum (public for ILGPU's CPU backend).</summary>
    public struct ReduceParams
    {
        public long SplitStride, COffset, CBatch;
        public int Splits, M, N, OutBatches, Ldc, CBf16, Accumulate, HasBias;
        public float Alpha;
    }

    /// <summary>
    /// C = alpha·Σ_s partial[s] (+ C) (+ the column's bias), the splits summed in order (deterministic), one element per
    /// thread, grid-stride: the only place a split-K GEMM adds the bias.
    /// </summary>
    private static void ReduceKernel(ArrayView<float> partials, ArrayView<float> cF, ArrayView<ushort> cH, FloatView bias, ReduceParams p)
    {
        // Splits·SplitStride < 2^31 (ChooseSplits): 32-bit index math.
        int stride = Grid.DimX * Group.DimX;
        int mn = p.M * p.N, total = (int)p.SplitStride, step = (int)p.SplitStride;
        for (int e = Grid.GlobalIndex.X; e < total; e += stride)
        {
            float sum = 0f;
            for (int s = 0; s < p.Splits; s++) sum += partials[s * step + e];
            int ob = e / mn;
            int rest = e - ob * mn;
            int row = rest / p.N;
            int col = rest - row * p.N;
            long i = p.COffset + ob * p.CBatch + (long)row * p.Ldc + col;
            Finish(cF, cH, i, sum, p.Alpha, p.Accumulate, p.HasBias, p.HasBias != 0 ? bias.Load(col) : 0f, p.CBf16);
        }
    }

    /// <summary>
    /// <see cref="ReduceKernel"/> four adjacent outputs per thread (N a multiple of 4, so they share a row): 16-byte
    /// partial reads, four splits' loads issued before their adds. Each output's splits are added in the same order, so
    /// the sums are the scalar kernel's bit for bit. One 4-byte load at a time held the layer dW GEMMs' sums (12 splits
    /// of 768×256) to ~10 µs on the H100, a third of its bandwidth.
    /// </summary>
    private static void ReduceQuadKernel(F32Quads partials, ArrayView<float> cF, ArrayView<ushort> cH, FloatView bias, ReduceParams p)
    {
        int stride = Grid.DimX * Group.DimX;
        int mn = p.M * p.N, total = (int)(p.SplitStride / 4), step = (int)(p.SplitStride / 4);
        for (int e = Grid.GlobalIndex.X; e < total; e += stride)
        {
            var sum = new MatMul.Quad(0f, 0f, 0f, 0f);
            int s = 0;
            for (; s + 4 <= p.Splits; s += 4)
            {
                var v0 = partials.Load(s * step + e);
                var v1 = partials.Load((s + 1) * step + e);
                var v2 = partials.Load((s + 2) * step + e);
                var v3 = partials.Load((s + 3) * step + e);
                sum = sum + v0 + v1 + v2 + v3;
            }
            for (; s < p.Splits; s++) sum += partials.Load(s * step + e);
            int first = 4 * e;
            int ob = first / mn;
            int rest = first - ob * mn;
            int row = rest / p.N;
            int col = rest - row * p.N;
            long i = p.COffset + ob * p.CBatch + (long)row * p.Ldc + col;
            bool biased = p.HasBias != 0;
            Finish(cF, cH, i, sum.X, p.Alpha, p.Accumulate, p.HasBias, biased ? bias.Load(col) : 0f, p.CBf16);
            Finish(cF, cH, i + 1, sum.Y, p.Alpha, p.Accumulate, p.HasBias, biased ? bias.Load(col + 1) : 0f, p.CBf16);
            Finish(cF, cH, i + 2, sum.Z, p.Alpha, p.Accumulate, p.HasBias, biased ? bias.Load(col + 2) : 0f, p.CBf16);
            Finish(cF, cH, i + 3, sum.W, p.Alpha, p.Accumulate, p.HasBias, biased ? bias.Load(col + 3) : 0f, p.CBf16);
        }
    }

    // ---------------------------------------------------------------------------------------------------------------
    // The emulation (any device): one thread plays a whole 256-thread group.
    // ---------------------------------------------------------------------------------------------------------------

    private const int SmemWordsMax = 4 * (ASliceBytes + 256 * BlockK * 2) / 2; // the deepest ring (96 KB) as bf16 words
    private const int RegsPerLane = 32;                                         // tca0..15, tcb0..15
    private const int AccPerLane = 128;                                         // tcc0..127

    private static void LaunchEmulated(ComputeDevice device, ArrayView<ushort> a, ArrayView<ushort> b, ArrayView<float> cF, ArrayView<ushort> cH,
        FloatView bias, TcParams p, int layout, long blocks)
    {
        // A few threads, each with its own emulated shared memory (96 KB) and register file (160 KB).
        var config = WarpMma.EmulatedLaunch(device, blocks, out int workers);
        using var smem = Tensor.Empty(device, new Shape(workers, SmemWordsMax), DType.BF16, MemoryCategory.Workspace, "tc_gemm.emulated_smem");
        using var regs = Tensor.Empty(device, new Shape(workers, Threads * RegsPerLane), DType.I32, MemoryCategory.Workspace, "tc_gemm.emulated_regs");
        using var acc = Tensor.Empty(device, new Shape(workers, Threads * AccPerLane), DType.F32, MemoryCategory.Workspace, "tc_gemm.emulated_acc");
        var kernel = device.Kernel("tc_gemm.emulated",
            ac => ac.LoadStreamKernel<ArrayView<ushort>, ArrayView<ushort>, ArrayView<float>, ArrayView<ushort>, FloatView, TcParams, int, long,
                ArrayView<ushort>, ArrayView<uint>, ArrayView<float>>(EmulatedKernel));
        kernel(config, a, b, cF, cH, bias, p, layout, blocks, smem.BF16, regs.I32.Cast<uint>(), acc.F32);
        device.Synchronize(); // the scratch tensors are released when this returns
    }

    private static void EmulatedKernel(ArrayView<ushort> a, ArrayView<ushort> b, ArrayView<float> cF, ArrayView<ushort> cH, FloatView bias,
        TcParams p, int layout, long blocks, ArrayView<ushort> smemAll, ArrayView<uint> regsAll, ArrayView<float> accAll)
    {
        long worker = Grid.GlobalIndex.X;
        long stride = (long)Grid.DimX * Group.DimX;
        var smem = smemAll.SubView(worker * SmemWordsMax, SmemWordsMax);
        var regs = regsAll.SubView(worker * Threads * RegsPerLane, Threads * RegsPerLane);
        var acc = accAll.SubView(worker * Threads * AccPerLane, Threads * AccPerLane);
        var rowAddress = LocalMemory.Allocate<int>(32); // the 32 ldmatrix row addresses of one warp
        for (long block = worker; block < blocks; block += stride)
            EmulateGroup(a, b, cF, cH, bias, p, layout, (int)block, smem, regs, acc, rowAddress);
    }

    private static void EmulateGroup(ArrayView<ushort> a, ArrayView<ushort> b, ArrayView<float> cF, ArrayView<ushort> cH, FloatView bias,
        TcParams p, int layout, int block, ArrayView<ushort> smem, ArrayView<uint> regs, ArrayView<float> acc, ArrayView<int> rowAddress)
    {
        bool aKc = (layout & ATransposedBit) == 0, bKc = (layout & BTransposedBit) != 0;
        bool f32 = p.Passes != 0;
        int blockN = p.BlockN, stages = p.Stages, sliceK = p.SliceK, stageBytes = StageBytesOf(blockN, sliceK), aSlice = BlockM * sliceK * 2;
        int pairs = blockN / 64, fragmentsN = blockN / 32;
        TileOf(block, p, out int m0, out int n0, out int split, out int outBatch);
        for (int i = 0; i < Threads * AccPerLane; i++) acc[i] = 0f;

        int count = SlicesOf(p, split, out int first);
        var next = SliceCursor.At(p, first, outBatch, 0, 0);

        // Same ring schedule as the kernel; a copy completes at once.
        int loadStage = 0;
        for (int s = 0; s < stages - 1; s++)
        {
            if (s < count)
            {
                EmulateLoadSlice(a, b, p, smem, loadStage * stageBytes, aKc, bKc, m0, n0, next.Batch, next.Kt);
                next.Advance(p, 0, 0);
            }
            loadStage++;
        }
        int computeStage = 0;
        for (int i = 0; i < count; i++)
        {
            if (i + stages - 1 < count)
            {
                EmulateLoadSlice(a, b, p, smem, loadStage * stageBytes, aKc, bKc, m0, n0, next.Batch, next.Kt);
                next.Advance(p, 0, 0);
            }
            loadStage = loadStage == stages - 1 ? 0 : loadStage + 1;
            int aStage = computeStage * stageBytes, bStage = aStage + aSlice;
            for (int warp = 0; warp < Threads / 32; warp++)
            {
                int wm = warp >> 2, wn = warp & 3;
                for (int ks = 0; ks < sliceK / 16; ks++)
                {
                    if (f32 && !aKc) EmulateLdsF32(smem, regs, warp, aStage, true, wm, ks, blockN);
                    else
                        for (int mi = 0; mi < 4; mi++) EmulateLdmatrix(smem, regs, rowAddress, warp, mi * 4, !aKc, aStage, true, aKc, wm, ks, mi, blockN, sliceK);
                    if (f32 && !bKc) EmulateLdsF32(smem, regs, warp, bStage, false, wn, ks, blockN);
                    else
                        for (int pair = 0; pair < pairs; pair++) EmulateLdmatrix(smem, regs, rowAddress, warp, 16 + pair * 4, !bKc, bStage, false, bKc, wn, ks, pair, blockN, sliceK);
                    for (int mi = 0; mi < 4; mi++)
                        for (int ni = 0; ni < fragmentsN; ni++) EmulateMma(regs, acc, warp, mi, ni, fragmentsN, p.Passes);
                }
            }
            computeStage = computeStage == stages - 1 ? 0 : computeStage + 1;
        }

        long cBase = p.COffset + outBatch * p.CBatch + split * p.SplitStride;
        for (int t = 0; t < Threads; t++)
        {
            int lane = t & 31, warp = t >> 5;
            int row = m0 + (warp >> 2) * WarpM + (lane >> 2);
            int col = n0 + (warp & 3) * (blockN / 4) + 2 * (lane & 3);
            // Fragment column by fragment column, as StoreNarrow / StoreWide: the column's bias, then its rows.
            for (int ni = 0; ni < fragmentsN; ni++)
            {
                BiasPair(bias, p, col + ni * 8, out float b0, out float b1);
                for (int mi = 0; mi < 4; mi++)
                {
                    int q = t * AccPerLane + (mi * fragmentsN + ni) * 4;
                    if (p.StagedStores != 0)
                    {
                        EmulateStagePair(smem, p, row + mi * 16 - m0, col + ni * 8 - n0, acc[q], acc[q + 1], b0, b1);
                        EmulateStagePair(smem, p, row + mi * 16 + 8 - m0, col + ni * 8 - n0, acc[q + 2], acc[q + 3], b0, b1);
                        continue;
                    }
                    StorePair(cF, cH, p, cBase, row + mi * 16, col + ni * 8, Pack(acc[q], acc[q + 1]), b0, b1);
                    StorePair(cF, cH, p, cBase, row + mi * 16 + 8, col + ni * 8, Pack(acc[q + 2], acc[q + 3]), b0, b1);
                }
            }
        }
        if (p.StagedStores == 0) return;

        // StoreStaged: every thread's 16-byte chunks, read back as four words each.
        bool bf16 = p.CBf16 != 0;
        for (int t = 0; t < Threads; t++)
            for (int j = 0; j < StagedChunksPerThread(bf16); j++)
            {
                StagedChunk(t, j, bf16, out int r, out int c);
                int row = m0 + r, col = n0 + c;
                if (row >= p.M || col >= p.N) continue;
                int w = StagedOffset(r, c, bf16) / 2;
                StoreChunkValues(cF, cH, bf16, p.Accumulate != 0, cBase + (long)row * p.Ldc + col, Math.Min(bf16 ? 8 : 4, p.N - col),
                    Word(smem, w), Word(smem, w + 2), Word(smem, w + 4), Word(smem, w + 6));
            }
    }

    private static uint Word(ArrayView<ushort> smem, int i) => smem[i] | ((uint)smem[i + 1] << 16);

    /// <summary>The <see cref="StagedStores"/> sink on the emulated shared memory (16-bit words).</summary>
    private static void EmulateStagePair(ArrayView<ushort> smem, TcParams p, int r, int c, float lo, float hi, float b0, float b1)
    {
        float v0 = StagedValue(p, lo, b0), v1 = StagedValue(p, hi, b1);
        int w = StagedOffset(r, c, p.CBf16 != 0) / 2;
        if (p.CBf16 != 0)
        {
            smem[w] = BFloat16.FromFloat(v0);
            smem[w + 1] = BFloat16.FromFloat(v1);
            return;
        }
        uint x0 = Interop.FloatAsInt(v0), x1 = Interop.FloatAsInt(v1);
        smem[w] = (ushort)x0; smem[w + 1] = (ushort)(x0 >> 16);
        smem[w + 2] = (ushort)x1; smem[w + 3] = (ushort)(x1 >> 16);
    }

    private static ulong Pack(float lo, float hi) => Interop.FloatAsInt(lo) | ((ulong)Interop.FloatAsInt(hi) << 32);

    /// <summary>Every thread's chunks of one slice, as the kernel's LoadSlice, copied at once with zero fill.</summary>
    private static void EmulateLoadSlice(ArrayView<ushort> a, ArrayView<ushort> b, TcParams p, ArrayView<ushort> smem, int stage,
        bool aKc, bool bKc, int m0, int n0, int batchIndex, int kt)
    {
        int sliceK = p.SliceK, k0 = kt * sliceK;
        bool f32 = p.Passes != 0;
        long aShift = batchIndex * p.ABatch + kt * SliceStepOf(aKc, f32, p.Lda, sliceK), bShift = batchIndex * p.BBatch + kt * SliceStepOf(bKc, f32, p.Ldb, sliceK);
        for (int id = 0; id < BlockM * sliceK / 8; id++)
        {
            var ca = SliceChunk(aKc, f32, id, m0, p.M, p.AOffset, p.Lda, BlockM, sliceK);
            WarpMma.EmulateCopy(a, smem, stage + ca.Smem, ca.Elem + aShift, ChunkValid(aKc, ca, k0, p.K));
        }
        for (int id = 0; id < p.BlockN * sliceK / 8; id++)
        {
            var cb = SliceChunk(bKc, f32, id, n0, p.N, p.BOffset, p.Ldb, p.BlockN, sliceK);
            WarpMma.EmulateCopy(b, smem, stage + BlockM * sliceK * 2 + cb.Smem, cb.Elem + bShift, ChunkValid(bKc, cb, k0, p.K));
        }
    }

    /// <summary>
    /// ldmatrix.x4(.trans) for one warp into registers slot..slot+3 of each lane: every lane's row address from the
    /// kernel's own lane-address helpers (<see cref="LdmatrixOffsetA"/>/<see cref="LdmatrixOffsetB"/>), then
    /// <see cref="WarpMma.EmulateLdmatrix"/>.
    /// </summary>
    private static void EmulateLdmatrix(ArrayView<ushort> smem, ArrayView<uint> regs, ArrayView<int> rowAddress, int warp, int slot, bool trans, int stage,
        bool isA, bool kContiguous, int warpPos, int ks, int sub, int blockN, int sliceK)
    {
        for (int l = 0; l < 32; l++) rowAddress[l] = stage + LaneOffset(isA, kContiguous, l, warpPos, ks, sub, blockN, sliceK);
        WarpMma.EmulateLdmatrix(smem, rowAddress, trans, regs, (long)warp * 32 * RegsPerLane + slot, RegsPerLane);
    }

    /// <summary>
    /// The kernel's word loads from an MN-contiguous fp32 slice for one warp at k8 step <paramref name="ks"/>: A's 16
    /// registers (tca, <see cref="LdsOffsetAF32"/>) or the narrow tile's 8 B registers (tcb, <see cref="LdsOffsetBF32"/>).
    /// </summary>
    private static void EmulateLdsF32(ArrayView<ushort> smem, ArrayView<uint> regs, int warp, int stage, bool isA, int warpPos, int ks, int blockN)
    {
        for (int lane = 0; lane < 32; lane++)
        {
            long lb = ((long)warp * 32 + lane) * RegsPerLane;
            for (int f = 0; f < 4; f++)
            {
                for (int r = 0; r < (isA ? 4 : 2); r++)
                {
                    int w = (stage + (isA ? LdsOffsetAF32(lane, warpPos, ks, f, r) : LdsOffsetBF32(lane, warpPos, ks, f, r, blockN))) >> 1;
                    regs[lb + (isA ? f * 4 + r : 16 + f * 2 + r)] = smem[w] | ((uint)smem[w + 1] << 16);
                }
            }
        }
    }

    private static int LaneOffset(bool isA, bool kContiguous, int lane, int warpPos, int ks, int sub, int blockN, int sliceK) =>
        isA ? LdmatrixOffsetA(kContiguous, lane, warpPos, ks, sub, sliceK) : LdmatrixOffsetB(kContiguous, lane, warpPos, ks, sub, blockN, sliceK);

    /// <summary>mma for one warp: A fragment mi (tca), B fragment ni (tcb), accumulators (mi, ni) (tcc).</summary>
    private static void EmulateMma(ArrayView<uint> regs, ArrayView<float> acc, int warp, int mi, int ni, int fragmentsN, int passes)
    {
        long lane0 = warp * 32;
        long aBase = lane0 * RegsPerLane + mi * 4, bBase = lane0 * RegsPerLane + 16 + ni * 2, cBase = lane0 * AccPerLane + (mi * fragmentsN + ni) * 4;
        if (passes == 0) WarpMma.EmulateMma(regs, RegsPerLane, aBase, bBase, acc, AccPerLane, cBase);
        else WarpMma.EmulateMmaTf32(regs, RegsPerLane, aBase, bBase, acc, AccPerLane, cBase, passes);
    }

    /// <summary>Float64 CPU reference.</summary>
    public static class Reference
    {
        /// <summary>
        /// The GEMM on bf16 words widened exactly to float64, with <see cref="MatMul.Reference.Gemm"/>'s addressing; the
        /// result (after alpha, the accumulate and the bias) is what a perfectly accumulated kernel would produce before any bf16
        /// rounding of C.
        /// </summary>
        public static void Gemm(ushort[] a, long aOffset, int lda, long aBatch, bool transA,
            ushort[] b, long bOffset, int ldb, long bBatch, bool transB,
            double[] c, long cOffset, int ldc, long cBatch, int m, int n, int k, int batch, double alpha = 1, bool accumulate = false,
            double[]? bias = null)
        {
            MatMul.Reference.Gemm(Widen(a), aOffset, lda, aBatch, transA, Widen(b), bOffset, ldb, bBatch, transB,
                c, cOffset, ldc, cBatch, m, n, k, batch, alpha, accumulate, bias);
        }

        public static double[] Widen(ushort[] words) => Array.ConvertAll(words, w => (double)BFloat16.ToFloat(w));
    }
}
