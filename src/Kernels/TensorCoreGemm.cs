using ILGPU;
using ILGPU.Runtime;
using ILGPU.Runtime.Cuda;
using Memopt.Tensors;

namespace Memopt.Kernels;

/// <summary>
/// Batched bf16 GEMM on tensor cores, fp32 accumulation: C[b] = alpha·op(A[b])·op(B[b]) (+ C[b] when accumulating),
/// with the addressing and semantics of <see cref="MatMul.Gemm"/> (offsets, leading dimensions, batch strides, a batch
/// stride of 0 broadcasting, a C batch stride of 0 with batch &gt; 1 summing the batch products). A and B are bf16;
/// C is fp32 or bf16 (a bf16 C is rounded once, after alpha and after adding the old C).
///
/// Memory flow (CUDA): one 256-thread group owns one 128×128 output tile (8 warps, 2 along M × 4 along N, each warp
/// a 64×32 tile = 4×4 m16n8 accumulator tiles, 64 fp32 registers per thread). It walks K in slices of 32 through a
/// 3-stage shared-memory ring (48 KB, declared in PTX): each thread copies two 16-byte chunks of A's and of B's slice
/// with cp.async (or, for operands whose addresses are not 16-byte aligned, with plain loads and one 16-byte shared
/// store), chunks past M, N or K zero-filled, so the copy of slice q+2 overlaps the math on slice q; one barrier per
/// slice. Each slice is stored in the operand's own orientation ("K-contiguous" [row][k], 64-byte rows, or
/// "MN-contiguous" [k][row], 256-byte rows) with an XOR swizzle of the 16-byte chunks that keeps every ldmatrix
/// phase free of bank conflicts; ldmatrix (.trans for MN-contiguous slices) turns them into mma fragments, so every
/// transpose combination runs on the same path. Per k16 step a warp issues 6 ldmatrix.x4 and 16
/// mma.sync.m16n8k16.row.col.f32.bf16.bf16.f32. The fragments and accumulators live in PTX registers named in the
/// inline assembly (tca*, tcb*, tcc*): ILGPU routes CudaAsm outputs through local memory, named registers never
/// leave the register file. Epilogue: alpha, accumulate, fp32 or bf16 store straight from the registers.
/// When the output has too few tiles to fill the GPU (weight gradients: M, N ≤ 1024, K = B·T), K is split across
/// groups that write fp32 partial tiles to a workspace, summed in a fixed order by a second kernel (deterministic).
///
/// The CPU accelerator cannot run PTX: <see cref="GemmEmulated"/> runs the same tile schedule with one thread per
/// group, emulating cp.async, ldmatrix and mma lane by lane from the PTX ISA's fragment layouts, through the same
/// index helpers as the CUDA kernel (swizzle, chunk assignment, ldmatrix lane addresses, accumulator coordinates);
/// the tests check it against float64. <see cref="TryGemm"/> itself returns false off CUDA.
/// </summary>
public static class TensorCoreGemm
{
    public const int BlockM = 128, BlockN = 128, BlockK = 32, Stages = 3, Threads = 256;
    public const int WarpM = 64, WarpN = 32;
    /// <summary>Bytes of one operand's slice in shared memory (128 rows × 32 k × 2 bytes) and of one stage (A then B).</summary>
    public const int OperandBytes = 8192, StageBytes = 2 * OperandBytes;

    // Kernel variants (ILGPU specializes the kernel on this value, so the branches fold away).
    public const int ATransposedBit = 1, BTransposedBit = 2, AVectorBit = 4, BVectorBit = 8;

    /// <summary>Why the tensor-core path cannot take this GEMM (the caller then uses the SIMT GEMM), or null if it can.</summary>
    public static string? WhyNot(MatrixOperand a, MatrixOperand b, MatrixOperand c)
    {
        if (WhyNotDTypes(a, b, c) is string dtypes) return dtypes;
        var device = a.Tensor.Device;
        if (!device.IsCuda) return "not a CUDA device (inline PTX runs only there)";
        if (device.Accelerator is not CudaAccelerator { Architecture.Major: >= 8 }) return "the GPU has no bf16 tensor cores (compute capability < 8.0)";
        return null;
    }

    public static bool Supports(MatrixOperand a, MatrixOperand b, MatrixOperand c) => WhyNot(a, b, c) is null;

    /// <summary>
    /// C[b] = alpha·op(A[b])·op(B[b]) (+ C[b]) on tensor cores; false (nothing launched) when <see cref="WhyNot"/>
    /// gives a reason. Every transpose combination and any alignment is taken: operands whose offset, leading dimension
    /// or batch stride is not a multiple of 8 elements load with plain loads instead of cp.async (<see cref="LoadPath"/>).
    /// </summary>
    public static bool TryGemm(MatrixOperand a, MatrixOperand b, MatrixOperand c, int m, int n, int k, int batch = 1,
        float alpha = 1f, bool accumulate = false)
    {
        if (WhyNot(a, b, c) is not null) return false;
        Run(a, b, c, m, n, k, batch, alpha, accumulate, emulate: false, splits: 0);
        return true;
    }

    /// <summary>
    /// The emulated twin on any device (the CPU accelerator in tests): the same tiles, swizzle, lane addressing and
    /// fragment layouts as the CUDA kernel, with cp.async/ldmatrix/mma emulated lane by lane. <paramref name="splits"/>
    /// &gt; 0 forces that many K splits (0 chooses as on CUDA).
    /// </summary>
    public static void GemmEmulated(MatrixOperand a, MatrixOperand b, MatrixOperand c, int m, int n, int k, int batch = 1,
        float alpha = 1f, bool accumulate = false, int splits = 0)
    {
        if (WhyNotDTypes(a, b, c) is string reason) throw new ShapeException("tc_gemm", reason);
        Run(a, b, c, m, n, k, batch, alpha, accumulate, emulate: true, splits);
    }

    /// <summary>How an operand's slices reach shared memory: "cp.async" when every chunk address is 16-byte aligned, else "scalar" with the reason.</summary>
    public static string LoadPath(MatrixOperand x, int batch)
    {
        string? why = MisalignedBecause(x, batch);
        return why is null ? "cp.async 16 B" : $"scalar loads ({why})";
    }

    /// <summary>
    /// The PTX ILGPU generates for the kernel (all variants in one, the layout read at run time), for inspection with
    /// ptxas -v or cuobjdump; the device's own backend on CUDA, an sm_90 one elsewhere.
    /// </summary>
    public static string CompilePtx(ComputeDevice device)
    {
        var method = typeof(TensorCoreGemm).GetMethod(nameof(TensorCoreKernel), System.Reflection.BindingFlags.NonPublic | System.Reflection.BindingFlags.Static)!;
        var entry = ILGPU.Backends.EntryPoints.EntryPointDescription.FromExplicitlyGroupedKernel(method);
        if (device.Accelerator is CudaAccelerator cuda)
            return ((ILGPU.Backends.PTX.PTXCompiledKernel)cuda.Backend.Compile(entry, default)).PTXAssembly;
        using var backend = new ILGPU.Backends.PTX.PTXBackend(device.Context, CudaArchitecture.SM_90, CudaInstructionSet.ISA_88, null!);
        return ((ILGPU.Backends.PTX.PTXCompiledKernel)backend.Compile(entry, default)).PTXAssembly;
    }

    private static string? WhyNotDTypes(MatrixOperand a, MatrixOperand b, MatrixOperand c)
    {
        if (a.Tensor.DType != DType.BF16) return $"A is {a.Tensor.DType.Name()}, not bf16";
        if (b.Tensor.DType != DType.BF16) return $"B is {b.Tensor.DType.Name()}, not bf16";
        if (c.Tensor.DType is not (DType.F32 or DType.BF16)) return $"C is {c.Tensor.DType.Name()}, not f32 or bf16";
        return null;
    }

    /// <summary>Null when every 8-element chunk of the operand starts on a 16-byte boundary, else the first reason it does not.</summary>
    private static string? MisalignedBecause(MatrixOperand x, int batch)
    {
        var view = (IContiguousArrayView)x.Tensor.Raw;
        long start = view.Buffer.NativePtr.ToInt64() + view.IndexInBytes + x.Offset * 2;
        if (start % 16 != 0) return $"start address {start % 16} bytes past a 16-byte boundary (offset {x.Offset})";
        if (x.Ld % 8 != 0) return $"leading dimension {x.Ld} not a multiple of 8";
        if (batch > 1 && x.BatchStride % 8 != 0) return $"batch stride {x.BatchStride} not a multiple of 8";
        return null;
    }

    private static void Run(MatrixOperand a, MatrixOperand b, MatrixOperand c, int m, int n, int k, int batch,
        float alpha, bool accumulate, bool emulate, int splits)
    {
        CheckGemm(a, b, c, m, n, k, batch);
        var device = a.Tensor.Device;
        bool sumBatches = c.BatchStride == 0 && batch > 1;
        int outBatches = sumBatches ? 1 : batch;
        int tilesM = (m + BlockM - 1) / BlockM, tilesN = (n + BlockN - 1) / BlockN, kTiles = (k + BlockK - 1) / BlockK;
        int totalSlices = sumBatches ? batch * kTiles : kTiles;
        long tiles = (long)tilesM * tilesN * outBatches;
        if (splits <= 0) splits = ChooseSplits(tiles, totalSlices, device);
        int slicesPerSplit = (totalSlices + splits - 1) / splits;
        splits = (totalSlices + slicesPerSplit - 1) / slicesPerSplit; // no empty split
        long blocks = tiles * splits;
        if (blocks > int.MaxValue) throw new ShapeException("tc_gemm", $"{blocks} output tiles is more than one launch can take (M={m}, N={n}, batch={batch})");

        int layout = (a.Transposed ? ATransposedBit : 0) | (b.Transposed ? BTransposedBit : 0)
                   | (MisalignedBecause(a, batch) is null ? AVectorBit : 0) | (MisalignedBecause(b, batch) is null ? BVectorBit : 0);
        var p = new TcParams
        {
            APtr = DevicePointer(a.Tensor), BPtr = DevicePointer(b.Tensor),
            AOffset = a.Offset, ABatch = a.BatchStride, Lda = a.Ld,
            BOffset = b.Offset, BBatch = b.BatchStride, Ldb = b.Ld,
            COffset = c.Offset, CBatch = c.BatchStride, Ldc = c.Ld,
            M = m, N = n, K = k, Batch = batch, OutBatches = outBatches, SumBatches = sumBatches ? 1 : 0,
            TilesM = tilesM, TilesN = tilesN, KTiles = kTiles, Splits = splits, SlicesPerSplit = slicesPerSplit,
            CBf16 = c.Tensor.DType == DType.BF16 ? 1 : 0, Accumulate = accumulate ? 1 : 0, Alpha = alpha,
        };

        Tensor? partials = null;
        // The kernel takes C as both an fp32 and a bf16 view; the unused one is a small stand-in.
        using var dummy = Tensor.Empty(device, new Shape(2), DType.F32, MemoryCategory.Workspace, "tc_gemm.unused_view");
        try
        {
            ArrayView<float> cF = c.Tensor.DType == DType.F32 ? c.Tensor.F32 : dummy.F32;
            ArrayView<ushort> cH = c.Tensor.DType == DType.BF16 ? c.Tensor.BF16 : dummy.Raw.Cast<ushort>();
            if (splits > 1)
            {
                // fp32 partial tiles [split][outBatch][M][N]; the reduction applies alpha, accumulate and the dtype.
                partials = Tensor.Empty(device, new Shape(splits, outBatches, m, n), DType.F32, MemoryCategory.Workspace, "tc_gemm.split_k");
                cF = partials.F32;
                p.Partial = 1;
                p.COffset = 0; p.CBatch = (long)m * n; p.Ldc = n; p.SplitStride = (long)outBatches * m * n;
            }

            if (emulate) LaunchEmulated(device, a.Tensor.BF16, b.Tensor.BF16, cF, cH, p, layout, blocks);
            else
            {
                var kernel = device.Kernel("tc_gemm.bf16_mma",
                    acc => acc.LoadStreamKernel<ArrayView<ushort>, ArrayView<ushort>, ArrayView<float>, ArrayView<ushort>, TcParams, SpecializedValue<int>>(TensorCoreKernel));
                kernel(new KernelConfig((int)blocks, Threads), a.Tensor.BF16, b.Tensor.BF16, cF, cH, p, SpecializedValue.New(layout));
            }

            if (partials is not null)
                ReduceSplits(device, partials, p, c,
                    c.Tensor.DType == DType.F32 ? c.Tensor.F32 : dummy.F32, c.Tensor.DType == DType.BF16 ? c.Tensor.BF16 : dummy.Raw.Cast<ushort>());
        }
        finally
        {
            partials?.Dispose();
        }
    }

    /// <summary>
    /// Enough K splits that the launch has about two groups per multiprocessor (two 256-thread groups fit one SM with
    /// this kernel's 48 KB of shared memory), each split keeping at least 4 K slices so the pipeline stays full.
    /// </summary>
    private static int ChooseSplits(long tiles, int totalSlices, ComputeDevice device)
    {
        long target = 2L * Math.Max(1, device.Multiprocessors);
        if (tiles >= target) return 1;
        long wanted = (target + tiles - 1) / tiles;
        return (int)Math.Clamp(Math.Min(wanted, totalSlices / 4), 1, 64);
    }

    private static ulong DevicePointer(Tensor t)
    {
        var view = (IContiguousArrayView)t.Raw;
        return (ulong)(view.Buffer.NativePtr.ToInt64() + view.IndexInBytes);
    }

    private static void CheckGemm(MatrixOperand a, MatrixOperand b, MatrixOperand c, int m, int n, int k, int batch)
    {
        string dims = $"M={m}, N={n}, K={k}, batch={batch}";
        if (m <= 0 || n <= 0 || k <= 0 || batch <= 0)
            throw new ShapeException("tc_gemm", $"every dimension must be > 0, got {dims} (A {a.Tensor.Shape}, B {b.Tensor.Shape}, C {c.Tensor.Shape})");
        CheckOperand("A", a, m, k, batch, dims);
        CheckOperand("B", b, k, n, batch, dims);
        if (c.Transposed) throw new ShapeException("tc_gemm", $"output C {c} cannot be transposed; swap and transpose A and B instead (Cᵀ = op(B)ᵀ·op(A)ᵀ)");
        CheckOperand("C", c, m, n, batch, dims);
        Check.SameDevice("tc_gemm", a.Tensor, b.Tensor);
        Check.SameDevice("tc_gemm", a.Tensor, c.Tensor);
    }

    private static void CheckOperand(string role, MatrixOperand x, int rows, int cols, int batch, string dims)
    {
        x.Tensor.ThrowIfDisposed();
        int storedRows = x.Transposed ? cols : rows, storedCols = x.Transposed ? rows : cols;
        if (x.Offset < 0 || x.BatchStride < 0 || x.Ld < storedCols)
            throw new ShapeException("tc_gemm", $"{role} {x}: needs offset ≥ 0, batch stride ≥ 0 and ld ≥ {storedCols} stored columns ({dims})");
        long last = x.Offset + (batch - 1) * x.BatchStride + (storedRows - 1) * (long)x.Ld + storedCols - 1;
        if (last >= x.Tensor.Numel)
            throw new ShapeException("tc_gemm", $"{role} {x} as {storedRows}×{storedCols} stored matrices addresses element {last}, past the tensor's {x.Tensor.Numel} ({dims})");
    }

    /// <summary>
    /// Kernel arguments (public because ILGPU's CPU backend must see the type). op(A)[m,k] of batch b is
    /// a[AOffset + b·ABatch + m·Lda + k] (or + k·Lda + m when A is transposed), likewise B; C[m,n] of output batch ob
    /// and K split s is c[COffset + ob·CBatch + s·SplitStride + m·Ldc + n]. APtr/BPtr are the device addresses of the
    /// tensors' element 0 (for cp.async). A group's K slices are q ∈ [s·SlicesPerSplit, …) of the Batch·KTiles
    /// (summing) or KTiles slices.
    /// </summary>
    public struct TcParams
    {
        public ulong APtr, BPtr;
        public long AOffset, ABatch, BOffset, BBatch, COffset, CBatch, SplitStride;
        public int Lda, Ldb, Ldc;
        public int M, N, K, Batch, OutBatches, SumBatches, TilesM, TilesN, KTiles, Splits, SlicesPerSplit;
        public int CBf16, Accumulate, Partial;
        public float Alpha;
    }

    // ---------------------------------------------------------------------------------------------------------------
    // Index helpers shared by the CUDA kernel and the emulation (public so tests can check their identities).
    // ---------------------------------------------------------------------------------------------------------------

    /// <summary>
    /// Byte offset of 16-byte chunk <paramref name="chunk"/> (k/8) of row <paramref name="row"/> in a K-contiguous
    /// slice ([128 rows][32 k], 64-byte rows). The chunk index is XORed with bits 1–2 of the row: the 8 rows an
    /// ldmatrix phase reads (same logical chunk, rows 8i..8i+7) then hit 8 distinct 16-byte bank groups.
    /// </summary>
    public static int KContiguousOffset(int row, int chunk) => row * 64 + ((chunk ^ ((row >> 1) & 3)) << 4);

    /// <summary>
    /// Byte offset of chunk <paramref name="chunk"/> (row/8) of k-row <paramref name="krow"/> in an MN-contiguous
    /// slice ([32 k][128 rows], 256-byte rows); the chunk is XORed with k mod 8 for the same reason.
    /// </summary>
    public static int MnContiguousOffset(int krow, int chunk) => krow * 256 + ((chunk ^ (krow & 7)) << 4);

    /// <summary>
    /// The 16-byte chunk a thread copies for one operand slice: chunk id = thread + 256·i, i ∈ {0, 1} (512 chunks per
    /// slice). Smem is its byte offset in the slice; Elem the tensor element of its first value for slice 0 of batch 0;
    /// Fixed the values valid whatever the K slice (8 or 0 for a K-contiguous chunk's row; the count left in the row
    /// range for an MN-contiguous chunk); KIndex its k inside the slice (first k of the chunk, or its k-row).
    /// </summary>
    public struct ChunkLoad
    {
        public int Smem, Fixed, KIndex;
        public long Elem;
    }

    /// <param name="kContiguous">The stored operand has k as its contiguous index (A not transposed, B transposed).</param>
    /// <param name="x0">First row (M for A, N for B) of the group's tile.</param>
    /// <param name="rows">M for A, N for B.</param>
    public static ChunkLoad Chunk(bool kContiguous, int id, int x0, int rows, long offset, int ld)
    {
        var c = new ChunkLoad();
        if (kContiguous)
        {
            int row = id >> 2, chunk = id & 3;
            c.Smem = KContiguousOffset(row, chunk);
            c.Elem = offset + (long)(x0 + row) * ld + chunk * 8;
            c.Fixed = x0 + row < rows ? 8 : 0;
            c.KIndex = chunk * 8;
        }
        else
        {
            int krow = id >> 4, chunk = id & 15;
            c.Smem = MnContiguousOffset(krow, chunk);
            c.Elem = offset + (long)krow * ld + x0 + chunk * 8;
            c.Fixed = Math.Min(Math.Max(rows - (x0 + chunk * 8), 0), 8);
            c.KIndex = krow;
        }
        return c;
    }

    /// <summary>Values of the chunk that exist for the slice starting at k0 (the rest is zero-filled).</summary>
    public static int ChunkValid(bool kContiguous, ChunkLoad c, int k0, int k) =>
        kContiguous ? Math.Max(Math.Min(c.Fixed, k - k0 - c.KIndex), 0) : (k0 + c.KIndex < k ? c.Fixed : 0);

    /// <summary>Elements between the same chunk of consecutive K slices.</summary>
    public static long SliceStep(bool kContiguous, int ld) => kContiguous ? BlockK : (long)BlockK * ld;

    /// <summary>
    /// Byte offset, inside A's slice, of the row this lane hands to ldmatrix.x4 for A fragment <paramref name="mi"/>
    /// (rows wm·64 + mi·16 …+15) at k16 step <paramref name="ks"/>. Matrices 0–3 of the x4 are (rows 0–7, k 0–7),
    /// (rows 8–15, k 0–7), (rows 0–7, k 8–15), (rows 8–15, k 8–15): registers a0..a3 of mma.m16n8k16's A fragment.
    /// K-contiguous: plain ldmatrix, lane l gives row l mod 16, k chunk l/16. MN-contiguous: ldmatrix.trans, lane l
    /// gives k-row (l mod 8) + 8·(l/16) of m chunk (l/8) mod 2. Identities the kernel relies on (tested): K-contiguous
    /// offsets grow by 1024 per mi; MN-contiguous ones by 4096 per ks.
    /// </summary>
    public static int LdmatrixOffsetA(bool kContiguous, int lane, int wm, int ks, int mi)
    {
        if (kContiguous) return KContiguousOffset(wm * WarpM + mi * 16 + (lane & 15), ks * 2 + (lane >> 4));
        return MnContiguousOffset(ks * 16 + (lane & 7) + (lane >> 4) * 8, wm * (WarpM / 8) + mi * 2 + ((lane >> 3) & 1));
    }

    /// <summary>
    /// Byte offset, inside B's slice, of the row this lane hands to ldmatrix.x4 number <paramref name="pair"/> (B
    /// fragments ni = 2·pair and 2·pair + 1, columns wn·32 + pair·16 …+15) at k16 step <paramref name="ks"/>. Matrices
    /// 0–3 are (n 0–7, k 0–7), (n 0–7, k 8–15), (n 8–15, k 0–7), (n 8–15, k 8–15): b0, b1 of fragment 2·pair, then
    /// of 2·pair + 1. K-contiguous ([n][k], B transposed): plain ldmatrix. MN-contiguous ([k][n]): ldmatrix.trans.
    /// K-contiguous offsets grow by 1024 per pair; MN-contiguous ones by 4096 per ks.
    /// </summary>
    public static int LdmatrixOffsetB(bool kContiguous, int lane, int wn, int ks, int pair)
    {
        if (kContiguous) return KContiguousOffset(wn * WarpN + pair * 16 + (lane & 7) + (lane >> 4) * 8, ks * 2 + ((lane >> 3) & 1));
        return MnContiguousOffset(ks * 16 + (lane & 7) + ((lane >> 3) & 1) * 8, wn * (WarpN / 8) + pair * 2 + (lane >> 4));
    }

    /// <summary>The group's output tile, K split and output batch from its index (N tiles fastest, then M, split, batch).</summary>
    public static void TileOf(int block, TcParams p, out int m0, out int n0, out int split, out int outBatch)
    {
        int tn = block % p.TilesN;
        int rest = block / p.TilesN;
        int tm = rest % p.TilesM;
        rest /= p.TilesM;
        split = rest % p.Splits;
        outBatch = rest / p.Splits;
        m0 = tm * BlockM;
        n0 = tn * BlockN;
    }

    /// <summary>Stores accumulators (row, col) and (row, col + 1), packed low/high in <paramref name="pair"/>, through the epilogue.</summary>
    private static void StorePair(ArrayView<float> cF, ArrayView<ushort> cH, TcParams p, long cBase, int row, int col, ulong pair)
    {
        if (row >= p.M) return;
        long i = cBase + (long)row * p.Ldc + col;
        if (col < p.N) StoreOne(cF, cH, p, i, Interop.IntAsFloat((uint)pair));
        if (col + 1 < p.N) StoreOne(cF, cH, p, i + 1, Interop.IntAsFloat((uint)(pair >> 32)));
    }

    private static void StoreOne(ArrayView<float> cF, ArrayView<ushort> cH, TcParams p, long i, float v)
    {
        if (p.Partial != 0)
        {
            cF[i] = v;
            return;
        }
        v *= p.Alpha;
        if (p.CBf16 != 0)
        {
            if (p.Accumulate != 0) v += BFloat16.ToFloat(cH[i]);
            cH[i] = BFloat16.FromFloat(v);
        }
        else
        {
            if (p.Accumulate != 0) v += cF[i];
            cF[i] = v;
        }
    }

    // ---------------------------------------------------------------------------------------------------------------
    // The CUDA kernel.
    // ---------------------------------------------------------------------------------------------------------------

    /// <summary>
    /// The shared-memory ring and the named registers, declared once at the top of the kernel: tcc0..63 the warp
    /// tile's accumulators ((mi·4 + ni)·4 + r), tca0..15 its A fragments (mi·4 + r), tcb0..7 its B fragments (ni·2 + r).
    /// </summary>
    private const string Declarations =
        ".shared .align 128 .b8 memopt_tc_smem[49152];\n\t" +
        ".reg .f32 tcc<64>;\n\t" +
        ".reg .b32 tca<16>;\n\t" +
        ".reg .b32 tcb<8>;\n\t" +
        "mov.u32 %0, memopt_tc_smem;";

    private const string ZeroAccumulators =
        "mov.f32 tcc0, 0f00000000; mov.f32 tcc1, 0f00000000; mov.f32 tcc2, 0f00000000; mov.f32 tcc3, 0f00000000; mov.f32 tcc4, 0f00000000; mov.f32 tcc5, 0f00000000; mov.f32 tcc6, 0f00000000; mov.f32 tcc7, 0f00000000;\n\t" +
        "mov.f32 tcc8, 0f00000000; mov.f32 tcc9, 0f00000000; mov.f32 tcc10, 0f00000000; mov.f32 tcc11, 0f00000000; mov.f32 tcc12, 0f00000000; mov.f32 tcc13, 0f00000000; mov.f32 tcc14, 0f00000000; mov.f32 tcc15, 0f00000000;\n\t" +
        "mov.f32 tcc16, 0f00000000; mov.f32 tcc17, 0f00000000; mov.f32 tcc18, 0f00000000; mov.f32 tcc19, 0f00000000; mov.f32 tcc20, 0f00000000; mov.f32 tcc21, 0f00000000; mov.f32 tcc22, 0f00000000; mov.f32 tcc23, 0f00000000;\n\t" +
        "mov.f32 tcc24, 0f00000000; mov.f32 tcc25, 0f00000000; mov.f32 tcc26, 0f00000000; mov.f32 tcc27, 0f00000000; mov.f32 tcc28, 0f00000000; mov.f32 tcc29, 0f00000000; mov.f32 tcc30, 0f00000000; mov.f32 tcc31, 0f00000000;\n\t" +
        "mov.f32 tcc32, 0f00000000; mov.f32 tcc33, 0f00000000; mov.f32 tcc34, 0f00000000; mov.f32 tcc35, 0f00000000; mov.f32 tcc36, 0f00000000; mov.f32 tcc37, 0f00000000; mov.f32 tcc38, 0f00000000; mov.f32 tcc39, 0f00000000;\n\t" +
        "mov.f32 tcc40, 0f00000000; mov.f32 tcc41, 0f00000000; mov.f32 tcc42, 0f00000000; mov.f32 tcc43, 0f00000000; mov.f32 tcc44, 0f00000000; mov.f32 tcc45, 0f00000000; mov.f32 tcc46, 0f00000000; mov.f32 tcc47, 0f00000000;\n\t" +
        "mov.f32 tcc48, 0f00000000; mov.f32 tcc49, 0f00000000; mov.f32 tcc50, 0f00000000; mov.f32 tcc51, 0f00000000; mov.f32 tcc52, 0f00000000; mov.f32 tcc53, 0f00000000; mov.f32 tcc54, 0f00000000; mov.f32 tcc55, 0f00000000;\n\t" +
        "mov.f32 tcc56, 0f00000000; mov.f32 tcc57, 0f00000000; mov.f32 tcc58, 0f00000000; mov.f32 tcc59, 0f00000000; mov.f32 tcc60, 0f00000000; mov.f32 tcc61, 0f00000000; mov.f32 tcc62, 0f00000000; mov.f32 tcc63, 0f00000000;";

    /// <summary>A fragments 0..3 from a K-contiguous slice: one lane address, the 4 fragments 16 rows (1024 bytes) apart.</summary>
    private const string LoadAKContiguous =
        "ldmatrix.sync.aligned.m8n8.x4.shared.b16 {tca0,tca1,tca2,tca3}, [%0];\n\t" +
        "ldmatrix.sync.aligned.m8n8.x4.shared.b16 {tca4,tca5,tca6,tca7}, [%0+1024];\n\t" +
        "ldmatrix.sync.aligned.m8n8.x4.shared.b16 {tca8,tca9,tca10,tca11}, [%0+2048];\n\t" +
        "ldmatrix.sync.aligned.m8n8.x4.shared.b16 {tca12,tca13,tca14,tca15}, [%0+3072];";

    /// <summary>A fragments 0..3 from an MN-contiguous slice: transposing loads, one lane address per fragment (the swizzle differs per mi).</summary>
    private const string LoadAMnContiguous =
        "ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {tca0,tca1,tca2,tca3}, [%0];\n\t" +
        "ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {tca4,tca5,tca6,tca7}, [%1];\n\t" +
        "ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {tca8,tca9,tca10,tca11}, [%2];\n\t" +
        "ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {tca12,tca13,tca14,tca15}, [%3];";

    private const string LoadBKContiguous =
        "ldmatrix.sync.aligned.m8n8.x4.shared.b16 {tcb0,tcb1,tcb2,tcb3}, [%0];\n\t" +
        "ldmatrix.sync.aligned.m8n8.x4.shared.b16 {tcb4,tcb5,tcb6,tcb7}, [%0+1024];";

    private const string LoadBMnContiguous =
        "ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {tcb0,tcb1,tcb2,tcb3}, [%0];\n\t" +
        "ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {tcb4,tcb5,tcb6,tcb7}, [%1];";

    private const string Mma = "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 ";

    /// <summary>The warp tile's 16 products for one k16 step: accumulator tile (mi, ni) += A fragment mi · B fragment ni.</summary>
    private const string MmaWarpTile =
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

    private static void TensorCoreKernel(ArrayView<ushort> a, ArrayView<ushort> b, ArrayView<float> cF, ArrayView<ushort> cH,
        TcParams p, SpecializedValue<int> variant)
    {
        int tid = Group.IdxX;
        int block = Grid.IdxX;
        int layout = variant.Value;
        bool aKc = (layout & ATransposedBit) == 0, bKc = (layout & BTransposedBit) != 0;
        bool aVec = (layout & AVectorBit) != 0, bVec = (layout & BVectorBit) != 0;

        CudaAsm.Emit(Declarations, out uint smem);
        CudaAsm.Emit(ZeroAccumulators);

        TileOf(block, p, out int m0, out int n0, out int split, out int outBatch);
        int lane = tid & 31, warp = tid >> 5;
        int wm = warp >> 2, wn = warp & 3;

        var a0 = Chunk(aKc, tid, m0, p.M, p.AOffset, p.Lda);
        var a1 = Chunk(aKc, tid + Threads, m0, p.M, p.AOffset, p.Lda);
        var b0 = Chunk(bKc, tid, n0, p.N, p.BOffset, p.Ldb);
        var b1 = Chunk(bKc, tid + Threads, n0, p.N, p.BOffset, p.Ldb);
        long aStep = SliceStep(aKc, p.Lda), bStep = SliceStep(bKc, p.Ldb);

        // Lane addresses for ldmatrix, relative to the stage (see LdmatrixOffsetA/B for the constant strides used).
        int la0 = LdmatrixOffsetA(aKc, lane, wm, 0, 0);
        int la1 = aKc ? LdmatrixOffsetA(aKc, lane, wm, 1, 0) : LdmatrixOffsetA(aKc, lane, wm, 0, 1);
        int la2 = LdmatrixOffsetA(aKc, lane, wm, 0, 2), la3 = LdmatrixOffsetA(aKc, lane, wm, 0, 3);
        int lb0 = LdmatrixOffsetB(bKc, lane, wn, 0, 0);
        int lb1 = bKc ? LdmatrixOffsetB(bKc, lane, wn, 1, 0) : LdmatrixOffsetB(bKc, lane, wn, 0, 1);

        int total = p.SumBatches != 0 ? p.Batch * p.KTiles : p.KTiles;
        int first = split * p.SlicesPerSplit;
        int count = Math.Min(p.SlicesPerSplit, total - first);
        // The next slice to load as (batch, k tile), advanced incrementally.
        int loadBatch = p.SumBatches != 0 ? first / p.KTiles : outBatch;
        int loadKt = first - (p.SumBatches != 0 ? loadBatch * p.KTiles : 0);

        int loadStage = 0;
        for (int s = 0; s < Stages - 1; s++)
        {
            if (s < count)
            {
                LoadSlice(a, b, p, smem + (uint)(loadStage * StageBytes), aKc, bKc, aVec, bVec, a0, a1, b0, b1, aStep, bStep, loadBatch, loadKt);
                loadKt++;
                if (loadKt == p.KTiles) { loadKt = 0; loadBatch++; }
            }
            CudaAsm.Emit("cp.async.commit_group;");
            loadStage++;
        }

        int computeStage = 0;
        for (int i = 0; i < count; i++)
        {
            // Slice i has landed for this thread's copies; the barrier makes every thread's copies visible and
            // guarantees everyone finished slice i-1, whose stage the next copy overwrites.
            CudaAsm.Emit("cp.async.wait_group 1;");
            Group.Barrier();
            if (i + Stages - 1 < count)
            {
                LoadSlice(a, b, p, smem + (uint)(loadStage * StageBytes), aKc, bKc, aVec, bVec, a0, a1, b0, b1, aStep, bStep, loadBatch, loadKt);
                loadKt++;
                if (loadKt == p.KTiles) { loadKt = 0; loadBatch++; }
            }
            CudaAsm.Emit("cp.async.commit_group;");
            loadStage = loadStage == Stages - 1 ? 0 : loadStage + 1;

            uint aStage = smem + (uint)(computeStage * StageBytes);
            uint bStage = aStage + OperandBytes;
            // k16 step 0
            if (aKc) CudaAsm.Emit(LoadAKContiguous, aStage + (uint)la0);
            else CudaAsm.Emit(LoadAMnContiguous, aStage + (uint)la0, aStage + (uint)la1, aStage + (uint)la2, aStage + (uint)la3);
            if (bKc) CudaAsm.Emit(LoadBKContiguous, bStage + (uint)lb0);
            else CudaAsm.Emit(LoadBMnContiguous, bStage + (uint)lb0, bStage + (uint)lb1);
            CudaAsm.Emit(MmaWarpTile);
            // k16 step 1: K-contiguous lanes use their ks = 1 address; MN-contiguous ones move 16 k-rows (4096 bytes).
            if (aKc) CudaAsm.Emit(LoadAKContiguous, aStage + (uint)la1);
            else CudaAsm.Emit(LoadAMnContiguous, aStage + (uint)(la0 + 4096), aStage + (uint)(la1 + 4096), aStage + (uint)(la2 + 4096), aStage + (uint)(la3 + 4096));
            if (bKc) CudaAsm.Emit(LoadBKContiguous, bStage + (uint)lb1);
            else CudaAsm.Emit(LoadBMnContiguous, bStage + (uint)(lb0 + 4096), bStage + (uint)(lb1 + 4096));
            CudaAsm.Emit(MmaWarpTile);
            computeStage = computeStage == Stages - 1 ? 0 : computeStage + 1;
        }

        long cBase = p.COffset + outBatch * p.CBatch + split * p.SplitStride;
        int row = m0 + wm * WarpM + (lane >> 2);
        int col = n0 + wn * WarpN + 2 * (lane & 3);
        ulong v;
        CudaAsm.Emit("mov.b64 %0, {tcc0,tcc1};", out v); StorePair(cF, cH, p, cBase, row + 0, col + 0, v);
        CudaAsm.Emit("mov.b64 %0, {tcc2,tcc3};", out v); StorePair(cF, cH, p, cBase, row + 8, col + 0, v);
        CudaAsm.Emit("mov.b64 %0, {tcc4,tcc5};", out v); StorePair(cF, cH, p, cBase, row + 0, col + 8, v);
        CudaAsm.Emit("mov.b64 %0, {tcc6,tcc7};", out v); StorePair(cF, cH, p, cBase, row + 8, col + 8, v);
        CudaAsm.Emit("mov.b64 %0, {tcc8,tcc9};", out v); StorePair(cF, cH, p, cBase, row + 0, col + 16, v);
        CudaAsm.Emit("mov.b64 %0, {tcc10,tcc11};", out v); StorePair(cF, cH, p, cBase, row + 8, col + 16, v);
        CudaAsm.Emit("mov.b64 %0, {tcc12,tcc13};", out v); StorePair(cF, cH, p, cBase, row + 0, col + 24, v);
        CudaAsm.Emit("mov.b64 %0, {tcc14,tcc15};", out v); StorePair(cF, cH, p, cBase, row + 8, col + 24, v);
        CudaAsm.Emit("mov.b64 %0, {tcc16,tcc17};", out v); StorePair(cF, cH, p, cBase, row + 16, col + 0, v);
        CudaAsm.Emit("mov.b64 %0, {tcc18,tcc19};", out v); StorePair(cF, cH, p, cBase, row + 24, col + 0, v);
        CudaAsm.Emit("mov.b64 %0, {tcc20,tcc21};", out v); StorePair(cF, cH, p, cBase, row + 16, col + 8, v);
        CudaAsm.Emit("mov.b64 %0, {tcc22,tcc23};", out v); StorePair(cF, cH, p, cBase, row + 24, col + 8, v);
        CudaAsm.Emit("mov.b64 %0, {tcc24,tcc25};", out v); StorePair(cF, cH, p, cBase, row + 16, col + 16, v);
        CudaAsm.Emit("mov.b64 %0, {tcc26,tcc27};", out v); StorePair(cF, cH, p, cBase, row + 24, col + 16, v);
        CudaAsm.Emit("mov.b64 %0, {tcc28,tcc29};", out v); StorePair(cF, cH, p, cBase, row + 16, col + 24, v);
        CudaAsm.Emit("mov.b64 %0, {tcc30,tcc31};", out v); StorePair(cF, cH, p, cBase, row + 24, col + 24, v);
        CudaAsm.Emit("mov.b64 %0, {tcc32,tcc33};", out v); StorePair(cF, cH, p, cBase, row + 32, col + 0, v);
        CudaAsm.Emit("mov.b64 %0, {tcc34,tcc35};", out v); StorePair(cF, cH, p, cBase, row + 40, col + 0, v);
        CudaAsm.Emit("mov.b64 %0, {tcc36,tcc37};", out v); StorePair(cF, cH, p, cBase, row + 32, col + 8, v);
        CudaAsm.Emit("mov.b64 %0, {tcc38,tcc39};", out v); StorePair(cF, cH, p, cBase, row + 40, col + 8, v);
        CudaAsm.Emit("mov.b64 %0, {tcc40,tcc41};", out v); StorePair(cF, cH, p, cBase, row + 32, col + 16, v);
        CudaAsm.Emit("mov.b64 %0, {tcc42,tcc43};", out v); StorePair(cF, cH, p, cBase, row + 40, col + 16, v);
        CudaAsm.Emit("mov.b64 %0, {tcc44,tcc45};", out v); StorePair(cF, cH, p, cBase, row + 32, col + 24, v);
        CudaAsm.Emit("mov.b64 %0, {tcc46,tcc47};", out v); StorePair(cF, cH, p, cBase, row + 40, col + 24, v);
        CudaAsm.Emit("mov.b64 %0, {tcc48,tcc49};", out v); StorePair(cF, cH, p, cBase, row + 48, col + 0, v);
        CudaAsm.Emit("mov.b64 %0, {tcc50,tcc51};", out v); StorePair(cF, cH, p, cBase, row + 56, col + 0, v);
        CudaAsm.Emit("mov.b64 %0, {tcc52,tcc53};", out v); StorePair(cF, cH, p, cBase, row + 48, col + 8, v);
        CudaAsm.Emit("mov.b64 %0, {tcc54,tcc55};", out v); StorePair(cF, cH, p, cBase, row + 56, col + 8, v);
        CudaAsm.Emit("mov.b64 %0, {tcc56,tcc57};", out v); StorePair(cF, cH, p, cBase, row + 48, col + 16, v);
        CudaAsm.Emit("mov.b64 %0, {tcc58,tcc59};", out v); StorePair(cF, cH, p, cBase, row + 56, col + 16, v);
        CudaAsm.Emit("mov.b64 %0, {tcc60,tcc61};", out v); StorePair(cF, cH, p, cBase, row + 48, col + 24, v);
        CudaAsm.Emit("mov.b64 %0, {tcc62,tcc63};", out v); StorePair(cF, cH, p, cBase, row + 56, col + 24, v);
    }

    /// <summary>Starts the copies of this thread's four chunks (two of A, two of B) of slice (batch, kt) into the stage at <paramref name="stage"/>.</summary>
    private static void LoadSlice(ArrayView<ushort> a, ArrayView<ushort> b, TcParams p, uint stage, bool aKc, bool bKc, bool aVec, bool bVec,
        ChunkLoad a0, ChunkLoad a1, ChunkLoad b0, ChunkLoad b1, long aStep, long bStep, int batchIndex, int kt)
    {
        int k0 = kt * BlockK;
        long aShift = batchIndex * p.ABatch + kt * aStep, bShift = batchIndex * p.BBatch + kt * bStep;
        CopyChunk(a, p.APtr, aVec, stage + (uint)a0.Smem, a0.Elem + aShift, ChunkValid(aKc, a0, k0, p.K));
        CopyChunk(a, p.APtr, aVec, stage + (uint)a1.Smem, a1.Elem + aShift, ChunkValid(aKc, a1, k0, p.K));
        CopyChunk(b, p.BPtr, bVec, stage + OperandBytes + (uint)b0.Smem, b0.Elem + bShift, ChunkValid(bKc, b0, k0, p.K));
        CopyChunk(b, p.BPtr, bVec, stage + OperandBytes + (uint)b1.Smem, b1.Elem + bShift, ChunkValid(bKc, b1, k0, p.K));
    }

    /// <summary>
    /// One 16-byte chunk, its first <paramref name="valid"/> values from element <paramref name="elem"/>, the rest zero.
    /// cp.async with a source size reads only the valid bytes (a zero size reads nothing; the address then is the
    /// tensor's start, always valid); the scalar form reads each valid value and writes the chunk with one store.
    /// </summary>
    private static void CopyChunk(ArrayView<ushort> x, ulong pointer, bool vector, uint smemAddress, long elem, int valid)
    {
        if (vector)
        {
            ulong source = valid > 0 ? pointer + (ulong)elem * 2 : pointer;
            CudaAsm.Emit("cp.async.cg.shared.global [%0], [%1], 16, %2;", smemAddress, source, (uint)(valid * 2));
        }
        else
        {
            uint w0 = PackPair(x, elem, valid, 0), w1 = PackPair(x, elem, valid, 2);
            uint w2 = PackPair(x, elem, valid, 4), w3 = PackPair(x, elem, valid, 6);
            CudaAsm.Emit("st.shared.v4.b32 [%0], {%1,%2,%3,%4};", smemAddress, w0, w1, w2, w3);
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

    private static void ReduceSplits(ComputeDevice device, Tensor partials, TcParams p, MatrixOperand c, ArrayView<float> cF, ArrayView<ushort> cH)
    {
        var rp = new ReduceParams
        {
            Splits = p.Splits, M = p.M, N = p.N, OutBatches = p.OutBatches, SplitStride = p.SplitStride,
            COffset = c.Offset, CBatch = c.BatchStride, Ldc = c.Ld,
            CBf16 = p.CBf16, Accumulate = p.Accumulate, Alpha = p.Alpha,
        };
        var kernel = device.Kernel("tc_gemm.split_k_sum",
            acc => acc.LoadStreamKernel<ArrayView<float>, ArrayView<float>, ArrayView<ushort>, ReduceParams>(ReduceKernel));
        kernel(Launch.Elementwise(device, p.SplitStride), partials.F32, cF, cH, rp);
    }

    /// <summary>Arguments of the split-K sum (public for ILGPU's CPU backend).</summary>
    public struct ReduceParams
    {
        public long SplitStride, COffset, CBatch;
        public int Splits, M, N, OutBatches, Ldc, CBf16, Accumulate;
        public float Alpha;
    }

    /// <summary>C = alpha·Σ_s partial[s] (+ C), the splits summed in order (deterministic), one element per thread, grid-stride.</summary>
    private static void ReduceKernel(ArrayView<float> partials, ArrayView<float> cF, ArrayView<ushort> cH, ReduceParams p)
    {
        long stride = (long)Grid.DimX * Group.DimX;
        long mn = (long)p.M * p.N;
        for (long e = Grid.GlobalIndex.X; e < p.SplitStride; e += stride)
        {
            float sum = 0f;
            for (int s = 0; s < p.Splits; s++) sum += partials[s * p.SplitStride + e];
            long ob = e / mn;
            long rest = e - ob * mn;
            long row = rest / p.N;
            long col = rest - row * p.N;
            long i = p.COffset + ob * p.CBatch + row * p.Ldc + col;
            float v = p.Alpha * sum;
            if (p.CBf16 != 0)
            {
                if (p.Accumulate != 0) v += BFloat16.ToFloat(cH[i]);
                cH[i] = BFloat16.FromFloat(v);
            }
            else
            {
                if (p.Accumulate != 0) v += cF[i];
                cF[i] = v;
            }
        }
    }

    // ---------------------------------------------------------------------------------------------------------------
    // The emulation (any device): one thread plays a whole 256-thread group.
    // ---------------------------------------------------------------------------------------------------------------

    private const int SmemWords = Stages * StageBytes / 2;      // the 48 KB ring as bf16 words
    private const int RegsPerLane = 24;                          // tca0..15, tcb0..7
    private const int AccPerLane = 64;                           // tcc0..63

    private static void LaunchEmulated(ComputeDevice device, ArrayView<ushort> a, ArrayView<ushort> b, ArrayView<float> cF, ArrayView<ushort> cH,
        TcParams p, int layout, long blocks)
    {
        // A few threads, each with its own emulated shared memory (48 KB) and register file (88 KB).
        int group = Launch.GroupSize(device, 16);
        long groups = Math.Clamp((blocks + group - 1) / group, 1, device.IsCuda ? 64 : Math.Max(1, device.Multiprocessors));
        var config = new KernelConfig((int)groups, group);
        int workers = config.GridDim.X * config.GroupDim.X;
        using var smem = Tensor.Empty(device, new Shape(workers, SmemWords), DType.BF16, MemoryCategory.Workspace, "tc_gemm.emulated_smem");
        using var regs = Tensor.Empty(device, new Shape(workers, Threads * RegsPerLane), DType.I32, MemoryCategory.Workspace, "tc_gemm.emulated_regs");
        using var acc = Tensor.Empty(device, new Shape(workers, Threads * AccPerLane), DType.F32, MemoryCategory.Workspace, "tc_gemm.emulated_acc");
        var kernel = device.Kernel("tc_gemm.emulated",
            ac => ac.LoadStreamKernel<ArrayView<ushort>, ArrayView<ushort>, ArrayView<float>, ArrayView<ushort>, TcParams, int, long,
                ArrayView<ushort>, ArrayView<uint>, ArrayView<float>>(EmulatedKernel));
        kernel(config, a, b, cF, cH, p, layout, blocks, smem.BF16, regs.I32.Cast<uint>(), acc.F32);
        device.Synchronize(); // the scratch tensors are released when this returns
    }

    private static void EmulatedKernel(ArrayView<ushort> a, ArrayView<ushort> b, ArrayView<float> cF, ArrayView<ushort> cH,
        TcParams p, int layout, long blocks, ArrayView<ushort> smemAll, ArrayView<uint> regsAll, ArrayView<float> accAll)
    {
        long worker = Grid.GlobalIndex.X;
        long stride = (long)Grid.DimX * Group.DimX;
        var smem = smemAll.SubView(worker * SmemWords, SmemWords);
        var regs = regsAll.SubView(worker * Threads * RegsPerLane, Threads * RegsPerLane);
        var acc = accAll.SubView(worker * Threads * AccPerLane, Threads * AccPerLane);
        for (long block = worker; block < blocks; block += stride)
            EmulateGroup(a, b, cF, cH, p, layout, (int)block, smem, regs, acc);
    }

    private static void EmulateGroup(ArrayView<ushort> a, ArrayView<ushort> b, ArrayView<float> cF, ArrayView<ushort> cH,
        TcParams p, int layout, int block, ArrayView<ushort> smem, ArrayView<uint> regs, ArrayView<float> acc)
    {
        bool aKc = (layout & ATransposedBit) == 0, bKc = (layout & BTransposedBit) != 0;
        TileOf(block, p, out int m0, out int n0, out int split, out int outBatch);
        for (int i = 0; i < Threads * AccPerLane; i++) acc[i] = 0f;

        int total = p.SumBatches != 0 ? p.Batch * p.KTiles : p.KTiles;
        int first = split * p.SlicesPerSplit;
        int count = Math.Min(p.SlicesPerSplit, total - first);
        int loadBatch = p.SumBatches != 0 ? first / p.KTiles : outBatch;
        int loadKt = first - (p.SumBatches != 0 ? loadBatch * p.KTiles : 0);

        // Same ring schedule as the kernel; a copy completes at once.
        int loadStage = 0;
        for (int s = 0; s < Stages - 1; s++)
        {
            if (s < count)
            {
                EmulateLoadSlice(a, b, p, smem, loadStage * StageBytes, aKc, bKc, m0, n0, loadBatch, loadKt);
                loadKt++;
                if (loadKt == p.KTiles) { loadKt = 0; loadBatch++; }
            }
            loadStage++;
        }
        int computeStage = 0;
        for (int i = 0; i < count; i++)
        {
            if (i + Stages - 1 < count)
            {
                EmulateLoadSlice(a, b, p, smem, loadStage * StageBytes, aKc, bKc, m0, n0, loadBatch, loadKt);
                loadKt++;
                if (loadKt == p.KTiles) { loadKt = 0; loadBatch++; }
            }
            loadStage = loadStage == Stages - 1 ? 0 : loadStage + 1;
            int aStage = computeStage * StageBytes, bStage = aStage + OperandBytes;
            for (int warp = 0; warp < Threads / 32; warp++)
            {
                int wm = warp >> 2, wn = warp & 3;
                for (int ks = 0; ks < 2; ks++)
                {
                    for (int mi = 0; mi < 4; mi++) EmulateLdmatrix(smem, regs, warp, mi * 4, !aKc, aStage, true, aKc, wm, ks, mi);
                    for (int pair = 0; pair < 2; pair++) EmulateLdmatrix(smem, regs, warp, 16 + pair * 4, !bKc, bStage, false, bKc, wn, ks, pair);
                    for (int mi = 0; mi < 4; mi++)
                        for (int ni = 0; ni < 4; ni++) EmulateMma(regs, acc, warp, mi, ni);
                }
            }
            computeStage = computeStage == Stages - 1 ? 0 : computeStage + 1;
        }

        long cBase = p.COffset + outBatch * p.CBatch + split * p.SplitStride;
        for (int t = 0; t < Threads; t++)
        {
            int lane = t & 31, warp = t >> 5;
            int row = m0 + (warp >> 2) * WarpM + (lane >> 2);
            int col = n0 + (warp & 3) * WarpN + 2 * (lane & 3);
            for (int mi = 0; mi < 4; mi++)
                for (int ni = 0; ni < 4; ni++)
                {
                    int q = t * AccPerLane + (mi * 4 + ni) * 4;
                    StorePair(cF, cH, p, cBase, row + mi * 16, col + ni * 8, Pack(acc[q], acc[q + 1]));
                    StorePair(cF, cH, p, cBase, row + mi * 16 + 8, col + ni * 8, Pack(acc[q + 2], acc[q + 3]));
                }
        }
    }

    private static ulong Pack(float lo, float hi) => Interop.FloatAsInt(lo) | ((ulong)Interop.FloatAsInt(hi) << 32);

    /// <summary>Every thread's four chunks of one slice, as the kernel's LoadSlice, copied at once with zero fill.</summary>
    private static void EmulateLoadSlice(ArrayView<ushort> a, ArrayView<ushort> b, TcParams p, ArrayView<ushort> smem, int stage,
        bool aKc, bool bKc, int m0, int n0, int batchIndex, int kt)
    {
        int k0 = kt * BlockK;
        long aShift = batchIndex * p.ABatch + kt * SliceStep(aKc, p.Lda), bShift = batchIndex * p.BBatch + kt * SliceStep(bKc, p.Ldb);
        for (int id = 0; id < 2 * Threads; id++)
        {
            var ca = Chunk(aKc, id, m0, p.M, p.AOffset, p.Lda);
            EmulateCopy(a, smem, stage + ca.Smem, ca.Elem + aShift, ChunkValid(aKc, ca, k0, p.K));
            var cb = Chunk(bKc, id, n0, p.N, p.BOffset, p.Ldb);
            EmulateCopy(b, smem, stage + OperandBytes + cb.Smem, cb.Elem + bShift, ChunkValid(bKc, cb, k0, p.K));
        }
    }

    private static void EmulateCopy(ArrayView<ushort> x, ArrayView<ushort> smem, int byteOffset, long elem, int valid)
    {
        int w = byteOffset >> 1;
        for (int j = 0; j < 8; j += 2)
        {
            uint pair = PackPair(x, elem, valid, j);
            smem[w + j] = (ushort)pair;
            smem[w + j + 1] = (ushort)(pair >> 16);
        }
    }

    /// <summary>
    /// ldmatrix.sync.aligned.m8n8.x4(.trans).shared.b16 for one warp (PTX ISA): lanes 8j..8j+7 give the row addresses
    /// of matrix j; lane i receives in register j the elements (row i/4, columns 2(i mod 4), +1) of matrix j, or with
    /// .trans the elements (rows 2(i mod 4), +1, column i/4). Writes registers slot..slot+3 of each lane.
    /// </summary>
    private static void EmulateLdmatrix(ArrayView<ushort> smem, ArrayView<uint> regs, int warp, int slot, bool trans, int stage,
        bool isA, bool kContiguous, int warpPos, int ks, int sub)
    {
        for (int i = 0; i < 32; i++)
        {
            for (int j = 0; j < 4; j++)
            {
                uint lo, hi;
                if (!trans)
                {
                    int src = 8 * j + (i >> 2);
                    int w = (stage + LaneOffset(isA, kContiguous, src, warpPos, ks, sub)) / 2 + 2 * (i & 3);
                    lo = smem[w];
                    hi = smem[w + 1];
                }
                else
                {
                    int src = 8 * j + 2 * (i & 3);
                    lo = smem[(stage + LaneOffset(isA, kContiguous, src, warpPos, ks, sub)) / 2 + (i >> 2)];
                    hi = smem[(stage + LaneOffset(isA, kContiguous, src + 1, warpPos, ks, sub)) / 2 + (i >> 2)];
                }
                regs[(warp * 32 + i) * RegsPerLane + slot + j] = lo | (hi << 16);
            }
        }
    }

    private static int LaneOffset(bool isA, bool kContiguous, int lane, int warpPos, int ks, int sub) =>
        isA ? LdmatrixOffsetA(kContiguous, lane, warpPos, ks, sub) : LdmatrixOffsetB(kContiguous, lane, warpPos, ks, sub);

    /// <summary>
    /// mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 for one warp, from the PTX ISA fragment layouts
    /// (g = lane/4, t = lane mod 4): A register r holds A[g + 8(r mod 2)][2t + 8(r/2) + h], B register r holds
    /// B[2t + 8r + h][g], accumulator r holds D[g + 8(r/2)][2t + (r mod 2)] (h the bf16 half, low first).
    /// </summary>
    private static void EmulateMma(ArrayView<uint> regs, ArrayView<float> acc, int warp, int mi, int ni)
    {
        int lane0 = warp * 32;
        for (int i = 0; i < 32; i++)
        {
            for (int r = 0; r < 4; r++)
            {
                int row = (i >> 2) + 8 * (r >> 1), col = 2 * (i & 3) + (r & 1);
                float sum = 0f;
                for (int kk = 0; kk < 16; kk++)
                {
                    int aLane = (row & 7) * 4 + ((kk & 7) >> 1), aReg = (row >> 3) + 2 * (kk >> 3);
                    int bLane = col * 4 + ((kk & 7) >> 1), bReg = kk >> 3;
                    uint aw = regs[(lane0 + aLane) * RegsPerLane + mi * 4 + aReg];
                    uint bw = regs[(lane0 + bLane) * RegsPerLane + 16 + ni * 2 + bReg];
                    float av = BFloat16.ToFloat((ushort)((kk & 1) == 0 ? aw : aw >> 16));
                    float bv = BFloat16.ToFloat((ushort)((kk & 1) == 0 ? bw : bw >> 16));
                    sum += av * bv;
                }
                acc[(lane0 + i) * AccPerLane + (mi * 4 + ni) * 4 + r] += sum;
            }
        }
    }

    /// <summary>Float64 CPU reference.</summary>
    public static class Reference
    {
        /// <summary>
        /// The GEMM on bf16 words widened exactly to float64, with <see cref="MatMul.Reference.Gemm"/>'s addressing; the
        /// result (after alpha and the accumulate) is what a perfectly accumulated kernel would produce before any bf16
        /// rounding of C.
        /// </summary>
        public static void Gemm(ushort[] a, long aOffset, int lda, long aBatch, bool transA,
            ushort[] b, long bOffset, int ldb, long bBatch, bool transB,
            double[] c, long cOffset, int ldc, long cBatch, int m, int n, int k, int batch, double alpha = 1, bool accumulate = false)
        {
            MatMul.Reference.Gemm(Widen(a), aOffset, lda, aBatch, transA, Widen(b), bOffset, ldb, bBatch, transB,
                c, cOffset, ldc, cBatch, m, n, k, batch, alpha, accumulate);
        }

        public static double[] Widen(ushort[] words) => Array.ConvertAll(words, w => (double)BFloat16.ToFloat(w));
    }
}
