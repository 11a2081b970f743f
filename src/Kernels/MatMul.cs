using ILGPU;
using ILGPU.Runtime;
using Memopt.Tensors;

namespace Memopt.Kernels;

/// <summary>
/// One matrix operand of a GEMM, addressed inside a (possibly bigger) float32 or bfloat16 tensor: matrix b of the batch starts at
/// element <see cref="Offset"/> + b·<see cref="BatchStride"/> of the tensor, its stored rows are <see cref="Ld"/>
/// elements apart and its elements within a row are adjacent. BatchStride 0 broadcasts one matrix to every batch
/// (a weight shared by all sequences). <see cref="Transposed"/> means the stored matrix is op(X)ᵀ, so for op(A) of
/// shape M×K a transposed A is stored K×M. Examples: one head's Q inside a [B,T,3,H,hd] tensor is Offset = h·hd,
/// Ld = 3·H·hd, BatchStride = T·3·H·hd.
/// </summary>
public readonly record struct MatrixOperand(Tensor Tensor, long Offset, int Ld, long BatchStride, bool Transposed = false)
{
    /// <summary>
    /// A contiguous rank-2 [rows, cols] tensor (one matrix, broadcast over any batch) or rank-3 [batch, rows, cols]
    /// tensor (one matrix per batch), as stored; <paramref name="transposed"/> says whether the GEMM uses it transposed.
    /// </summary>
    public static MatrixOperand Dense(Tensor t, bool transposed = false)
    {
        if (t.Shape.Rank is not (2 or 3)) throw new ShapeException("matmul", $"operand {t.Shape} must be rank 2 [rows, cols] or rank 3 [batch, rows, cols]");
        int rows = t.Shape[-2], cols = t.Shape[-1];
        return new MatrixOperand(t, 0, cols, t.Shape.Rank == 3 ? (long)rows * cols : 0, transposed);
    }

    /// <summary>Every [.., cols] tensor seen as one [Rows, cols] matrix (the rows of a Linear layer's input).</summary>
    public static MatrixOperand Rows(Tensor t, bool transposed = false) => new(t, 0, t.Shape.Last, 0, transposed);

    public MatrixOperand AsTransposed(bool transposed) => this with { Transposed = transposed };

    public override string ToString() =>
        $"{Tensor.Shape} at offset {Offset}, ld {Ld}, batch stride {BatchStride}{(Transposed ? ", transposed" : "")}";
}

/// <summary>
/// Batched GEMM with float32 arithmetic: C[b] = alpha·op(A[b])·op(B[b]) (+ C[b] when accumulating), op(X) = X or Xᵀ,
/// with op(A) M×K, op(B) K×N, C M×N. When C's batch stride is 0 and batch &gt; 1 the batch products are summed into the
/// one C (the gradient of an operand that was broadcast over the batch), inside the kernel, without atomics.
/// Dtypes: A, B and C may each be float32 or bfloat16 (<see cref="FloatView"/>). Products and sums are float32 whatever
/// the storage: bf16 elements are widened exactly on load, and a bf16 C is rounded once, after the whole dot product
/// (and, when accumulating, after adding the old C in float32) — the mixed-precision contract "read bf16, accumulate
/// in float32". Under mixed precision: activations × bf16 weight copies → bf16 activations, and dyᵀ·x (both bf16)
/// accumulated into a float32 weight gradient.
///
/// Memory flow (cooperative path, the CUDA default): each group owns one T×T output tile (T = 4·√groupSize: 64 for
/// 256-thread CUDA groups, 16 for the 16-thread CPU groups) and keeps it in registers, 4×4 per thread (thread (tx,ty)
/// owns rows ty + i·√g and columns tx + j·√g, so a warp's stores to C are consecutive). It walks K in slices of 16: the group stages op(A)'s T×16
/// slice and op(B)'s 16×T slice in shared memory (k-major, rows padded to 65 floats to spread banks), reading global
/// memory along whichever index is contiguous in the stored operand (coalesced for every transpose combination),
/// with zero fill past M, N, K; then every thread does 16 rank-1 updates of its micro-tile from shared memory.
/// Two barriers per K slice. Groups loop over tiles, so any grid size is correct.
///
/// Portable twin (<see cref="KernelPath.Portable"/>, the CPU accelerator's default, where barriers are OS-level
/// rendezvous): no shared memory and no barriers. Each thread owns 4×4 output blocks, grid-stride over the blocks of
/// every output matrix, and walks K reading op(A)'s 4 rows and op(B)'s 4 columns straight from global memory (the
/// CPU's caches play the part of the shared tiles): 8 loads per 16 multiply-adds, addresses advanced by the K
/// stride, no bounds test inside the loop (rows and columns past M and N are clamped to the last valid one and their
/// results never stored). Same accumulation order per element (k ascending, batches in order), so the same error bound.
/// </summary>
public static class MatMul
{
    private const int KTile = 16;
    private const int KTileShift = 4;
    private const int MaxTile = 64;
    /// <summary>Shared row pitch: 65 floats puts the 16 k-rows of a column in different banks when loads are k-fastest.</summary>
    private const int SharedPitch = MaxTile + 1;
    private const int MicroTile = 4;

    /// <summary>
    /// C[b] = alpha·op(A[b])·op(B[b]) (+ C[b] if <paramref name="accumulate"/>) for b &lt; <paramref name="batch"/>,
    /// op(A) M×K, op(B) K×N. C must not overlap A or B, nor (unless its batch stride is 0, which sums) itself.
    /// </summary>
    public static void Gemm(MatrixOperand a, MatrixOperand b, MatrixOperand c, int m, int n, int k, int batch = 1,
        float alpha = 1f, bool accumulate = false)
    {
        CheckGemm("matmul", a, b, c, m, n, k, batch);
        var device = a.Tensor.Device;
        // bf16 operands on CUDA go to the tensor cores (C float32 or bf16); where it declines (not CUDA), the SIMT kernels below run.
        if (a.Tensor.DType == DType.BF16 && b.Tensor.DType == DType.BF16 && TensorCoreGemm.TryGemm(a, b, c, m, n, k, batch, alpha, accumulate))
            return;
        bool sumBatches = c.BatchStride == 0 && batch > 1;
        int outBatches = sumBatches ? 1 : batch;
        var p = new GemmParams
        {
            AOffset = a.Offset, ABatch = a.BatchStride,
            AStrideM = a.Transposed ? 1 : a.Ld, AStrideK = a.Transposed ? a.Ld : 1, AKContiguous = a.Transposed ? 0 : 1,
            BOffset = b.Offset, BBatch = b.BatchStride,
            BStrideK = b.Transposed ? 1 : b.Ld, BStrideN = b.Transposed ? b.Ld : 1, BKContiguous = b.Transposed ? 1 : 0,
            COffset = c.Offset, CLd = c.Ld, CBatch = c.BatchStride,
            M = m, N = n, K = k, Batch = batch, OutBatches = outBatches, SumBatches = sumBatches ? 1 : 0,
            Alpha = alpha, Accumulate = accumulate ? 1 : 0,
        };

        if (!Launch.Cooperative(device))
        {
            // The portable twin: MicroTile×MicroTile blocks, one per thread at a time.
            p.TilesM = (m + MicroTile - 1) / MicroTile;
            p.TilesN = (n + MicroTile - 1) / MicroTile;
            var blocked = device.Kernel("matmul.gemm_f32_blocked",
                acc => acc.LoadStreamKernel<FloatView, FloatView, FloatView, GemmParams>(BlockedKernel));
            blocked(Launch.Elementwise(device, (long)p.TilesM * p.TilesN * outBatches), FloatView.Of(a.Tensor), FloatView.Of(b.Tensor), FloatView.Of(c.Tensor), p);
            return;
        }

        // A square group: 4·√g must be ≤ 64 and the micro-tile layout needs √g·√g threads.
        int threadsX = 1;
        while ((threadsX * 2) * (threadsX * 2) <= Launch.GroupSize(device, 256) && threadsX * 2 * MicroTile <= MaxTile) threadsX *= 2;
        int tile = threadsX * MicroTile;
        p.ThreadsX = threadsX;
        p.TileShift = System.Numerics.BitOperations.Log2((uint)tile);
        p.TilesM = (m + tile - 1) / tile;
        p.TilesN = (n + tile - 1) / tile;
        long tiles = (long)p.TilesM * p.TilesN * outBatches;
        long maxGroups = device.IsCuda ? device.Multiprocessors * 16L : Math.Max(1, device.Multiprocessors);
        var config = new KernelConfig((int)Math.Min(tiles, maxGroups), threadsX * threadsX);
        var kernel = device.Kernel("matmul.gemm_f32",
            acc => acc.LoadStreamKernel<FloatView, FloatView, FloatView, GemmParams>(GemmKernel));
        kernel(config, FloatView.Of(a.Tensor), FloatView.Of(b.Tensor), FloatView.Of(c.Tensor), p);
    }

    /// <summary>
    /// c = alpha·op(a)·op(b) (+ c) for contiguous tensors: a [M, K] or [batch, M, K] ([.., K, M] when transA),
    /// b [K, N] or [batch, K, N] ([.., N, K] when transB); a rank-2 operand is broadcast over the other's batch.
    /// c is [M, N] when both are rank 2, else [batch, M, N].
    /// </summary>
    public static void Forward(Tensor a, Tensor b, Tensor c, bool transA = false, bool transB = false, float alpha = 1f, bool accumulate = false)
    {
        var s = MatMulShape.Of(a.Shape, b.Shape, transA, transB);
        if (!c.Shape.Equals(s.Output))
            throw new ShapeException("matmul", $"output {c.Shape} should be {s.Output} for a {a.Shape}{T(transA)} times b {b.Shape}{T(transB)}");
        Gemm(MatrixOperand.Dense(a, transA), MatrixOperand.Dense(b, transB), MatrixOperand.Dense(c), s.M, s.N, s.K, s.Batch, alpha, accumulate);
    }

    internal static string T(bool transposed) => transposed ? "ᵀ" : "";

    /// <summary>Shared by every GEMM entry (this SIMT GEMM and the tensor-core one), with the entry's op name in the messages.</summary>
    internal static void CheckGemm(string op, MatrixOperand a, MatrixOperand b, MatrixOperand c, int m, int n, int k, int batch)
    {
        string dims = $"M={m}, N={n}, K={k}, batch={batch}";
        if (m <= 0 || n <= 0 || k <= 0 || batch <= 0)
            throw new ShapeException(op, $"every dimension must be > 0, got {dims} (A {a.Tensor.Shape}, B {b.Tensor.Shape}, C {c.Tensor.Shape})");
        CheckOperand(op, "A", a, m, k, batch, dims);
        CheckOperand(op, "B", b, k, n, batch, dims);
        if (c.Transposed) throw new ShapeException(op, $"output C {c} cannot be transposed; swap and transpose A and B instead (Cᵀ = op(B)ᵀ·op(A)ᵀ)");
        CheckOperand(op, "C", c, m, n, batch, dims);
        Check.SameDevice(op, a.Tensor, b.Tensor);
        Check.SameDevice(op, a.Tensor, c.Tensor);
    }

    /// <summary>The operand's logical op(X) is rows×cols; every element it addresses in every batch must lie inside its tensor.</summary>
    private static void CheckOperand(string op, string role, MatrixOperand x, int rows, int cols, int batch, string dims)
    {
        x.Tensor.ThrowIfDisposed();
        Check.Float(op, x.Tensor, role);
        int storedRows = x.Transposed ? cols : rows, storedCols = x.Transposed ? rows : cols;
        if (x.Offset < 0 || x.BatchStride < 0 || x.Ld < storedCols)
            throw new ShapeException(op, $"{role} {x}: needs offset ≥ 0, batch stride ≥ 0 and ld ≥ {storedCols} stored columns ({dims})");
        long last = x.Offset + (batch - 1) * x.BatchStride + (storedRows - 1) * (long)x.Ld + storedCols - 1;
        if (last >= x.Tensor.Numel)
            throw new ShapeException(op, $"{role} {x} as {storedRows}×{storedCols} stored matrices addresses element {last}, past the tensor's {x.Tensor.Numel} ({dims})");
    }

    /// <summary>
    /// Kernel arguments (public because ILGPU's CPU backend must see the type): op(A)[m,k] = a[AOffset + b·ABatch +
    /// m·AStrideM + k·AStrideK], likewise op(B)[k,n]; C[m,n] = c[COffset + b·CBatch + m·CLd + n]. TilesM/TilesN count
    /// the output tiles (cooperative) or the 4×4 blocks (portable) of one output matrix.
    /// </summary>
    public struct GemmParams
    {
        public long AOffset, AStrideM, AStrideK, ABatch;
        public long BOffset, BStrideK, BStrideN, BBatch;
        public long COffset, CLd, CBatch;
        public int M, N, K, Batch, OutBatches, TilesM, TilesN, ThreadsX;
        /// <summary>log2 of the tile side (a power of two): slice indices split with shifts, not divisions.</summary>
        public int TileShift;
        /// <summary>1 when k is the stored operand's contiguous index: load slices k-fastest to coalesce.</summary>
        public int AKContiguous, BKContiguous;
        public int SumBatches, Accumulate;
        public float Alpha;
    }

    private static void GemmKernel(FloatView a, FloatView b, FloatView c, GemmParams p)
    {
        int tid = Group.IdxX;
        int groupSize = Group.DimX;
        int firstTile = Grid.IdxX;
        int gridSize = Grid.DimX;
        var sa = SharedMemory.Allocate<float>(KTile * SharedPitch);
        var sb = SharedMemory.Allocate<float>(KTile * SharedPitch);

        int tx = p.ThreadsX;
        int tile = tx * MicroTile;
        int slice = tile * KTile;
        int col = tid % tx, row = tid / tx;
        long tilesPerMatrix = (long)p.TilesM * p.TilesN;
        long tiles = tilesPerMatrix * p.OutBatches;

        for (long t = firstTile; t < tiles; t += gridSize)
        {
            int outBatch = (int)(t / tilesPerMatrix);
            long inMatrix = t - outBatch * tilesPerMatrix;
            int m0 = (int)(inMatrix / p.TilesN) * tile;
            int n0 = (int)(inMatrix % p.TilesN) * tile;
            float c00 = 0, c01 = 0, c02 = 0, c03 = 0, c10 = 0, c11 = 0, c12 = 0, c13 = 0;
            float c20 = 0, c21 = 0, c22 = 0, c23 = 0, c30 = 0, c31 = 0, c32 = 0, c33 = 0;
            int firstBatch = p.SumBatches != 0 ? 0 : outBatch;
            int endBatch = p.SumBatches != 0 ? p.Batch : outBatch + 1;

            for (int bi = firstBatch; bi < endBatch; bi++)
            {
                long aBase = p.AOffset + bi * p.ABatch;
                long bBase = p.BOffset + bi * p.BBatch;
                for (int k0 = 0; k0 < p.K; k0 += KTile)
                {
                    for (int e = tid; e < slice; e += groupSize)
                    {
                        int kk = p.AKContiguous != 0 ? e & (KTile - 1) : e >> p.TileShift;
                        int mm = p.AKContiguous != 0 ? e >> KTileShift : e & (tile - 1);
                        int gm = m0 + mm, gk = k0 + kk;
                        bool inside = gm < p.M && gk < p.K;
                        // Read a valid element either way (no speculative out-of-range load), then zero-fill.
                        float v = a.Load(inside ? aBase + gm * p.AStrideM + gk * p.AStrideK : aBase);
                        sa[kk * SharedPitch + mm] = inside ? v : 0f;
                    }
                    for (int e = tid; e < slice; e += groupSize)
                    {
                        int kk = p.BKContiguous != 0 ? e & (KTile - 1) : e >> p.TileShift;
                        int nn = p.BKContiguous != 0 ? e >> KTileShift : e & (tile - 1);
                        int gn = n0 + nn, gk = k0 + kk;
                        bool inside = gn < p.N && gk < p.K;
                        float v = b.Load(inside ? bBase + gk * p.BStrideK + gn * p.BStrideN : bBase);
                        sb[kk * SharedPitch + nn] = inside ? v : 0f;
                    }
                    Group.Barrier();
                    for (int kk = 0; kk < KTile; kk++)
                    {
                        int ra = kk * SharedPitch + row;
                        float a0 = sa[ra], a1 = sa[ra + tx], a2 = sa[ra + 2 * tx], a3 = sa[ra + 3 * tx];
                        int rb = kk * SharedPitch + col;
                        float b0 = sb[rb], b1 = sb[rb + tx], b2 = sb[rb + 2 * tx], b3 = sb[rb + 3 * tx];
                        c00 += a0 * b0; c01 += a0 * b1; c02 += a0 * b2; c03 += a0 * b3;
                        c10 += a1 * b0; c11 += a1 * b1; c12 += a1 * b2; c13 += a1 * b3;
                        c20 += a2 * b0; c21 += a2 * b1; c22 += a2 * b2; c23 += a2 * b3;
                        c30 += a3 * b0; c31 += a3 * b1; c32 += a3 * b2; c33 += a3 * b3;
                    }
                    Group.Barrier();
                }
            }

            long cBase = p.COffset + outBatch * p.CBatch;
            int r0 = m0 + row, q0 = n0 + col;
            Store(c, cBase, p, r0, q0, tx, c00, c01, c02, c03);
            Store(c, cBase, p, r0 + tx, q0, tx, c10, c11, c12, c13);
            Store(c, cBase, p, r0 + 2 * tx, q0, tx, c20, c21, c22, c23);
            Store(c, cBase, p, r0 + 3 * tx, q0, tx, c30, c31, c32, c33);
        }
    }

    /// <summary>
    /// The portable twin: thread-private 4×4 blocks of C (TilesM × TilesN blocks per output matrix, block side
    /// <see cref="MicroTile"/>), read from global memory, no shared memory, no barriers.
    /// </summary>
    private static void BlockedKernel(FloatView a, FloatView b, FloatView c, GemmParams p)
    {
        long first = Grid.GlobalIndex.X;
        long stride = (long)Grid.DimX * Group.DimX;
        long blocksPerMatrix = (long)p.TilesM * p.TilesN;
        long blocks = blocksPerMatrix * p.OutBatches;
        int lastM = p.M - 1, lastN = p.N - 1, k = p.K;
        long aStrideM = p.AStrideM, aStrideK = p.AStrideK, bStrideK = p.BStrideK, bStrideN = p.BStrideN;

        for (long t = first; t < blocks; t += stride)
        {
            int outBatch = (int)(t / blocksPerMatrix);
            long inMatrix = t - outBatch * blocksPerMatrix;
            int blockM = (int)(inMatrix / p.TilesN);
            int m0 = blockM * MicroTile;
            int n0 = (int)(inMatrix - (long)blockM * p.TilesN) * MicroTile;
            // Rows/columns past the edge repeat the last valid one: in-range loads, results discarded at the store.
            long ar0 = m0 * aStrideM;
            long ar1 = Math.Min(m0 + 1, lastM) * aStrideM;
            long ar2 = Math.Min(m0 + 2, lastM) * aStrideM;
            long ar3 = Math.Min(m0 + 3, lastM) * aStrideM;
            long bc0 = n0 * bStrideN;
            long bc1 = Math.Min(n0 + 1, lastN) * bStrideN;
            long bc2 = Math.Min(n0 + 2, lastN) * bStrideN;
            long bc3 = Math.Min(n0 + 3, lastN) * bStrideN;
            float c00 = 0, c01 = 0, c02 = 0, c03 = 0, c10 = 0, c11 = 0, c12 = 0, c13 = 0;
            float c20 = 0, c21 = 0, c22 = 0, c23 = 0, c30 = 0, c31 = 0, c32 = 0, c33 = 0;
            int firstBatch = p.SumBatches != 0 ? 0 : outBatch;
            int endBatch = p.SumBatches != 0 ? p.Batch : outBatch + 1;

            for (int bi = firstBatch; bi < endBatch; bi++)
            {
                long ak = p.AOffset + bi * p.ABatch;
                long bk = p.BOffset + bi * p.BBatch;
                for (int kk = 0; kk < k; kk++)
                {
                    float a0 = a.Load(ak + ar0), a1 = a.Load(ak + ar1), a2 = a.Load(ak + ar2), a3 = a.Load(ak + ar3);
                    float b0 = b.Load(bk + bc0), b1 = b.Load(bk + bc1), b2 = b.Load(bk + bc2), b3 = b.Load(bk + bc3);
                    c00 += a0 * b0; c01 += a0 * b1; c02 += a0 * b2; c03 += a0 * b3;
                    c10 += a1 * b0; c11 += a1 * b1; c12 += a1 * b2; c13 += a1 * b3;
                    c20 += a2 * b0; c21 += a2 * b1; c22 += a2 * b2; c23 += a2 * b3;
                    c30 += a3 * b0; c31 += a3 * b1; c32 += a3 * b2; c33 += a3 * b3;
                    ak += aStrideK;
                    bk += bStrideK;
                }
            }

            long cBase = p.COffset + outBatch * p.CBatch;
            Store(c, cBase, p, m0, n0, 1, c00, c01, c02, c03);
            Store(c, cBase, p, m0 + 1, n0, 1, c10, c11, c12, c13);
            Store(c, cBase, p, m0 + 2, n0, 1, c20, c21, c22, c23);
            Store(c, cBase, p, m0 + 3, n0, 1, c30, c31, c32, c33);
        }
    }

    /// <summary>Writes one micro-tile row: C[r, q + j·step] for j &lt; 4, skipping what lies past M or N.</summary>
    private static void Store(FloatView c, long cBase, GemmParams p, int r, int q, int step, float v0, float v1, float v2, float v3)
    {
        if (r >= p.M) return;
        long rowBase = cBase + r * p.CLd;
        StoreOne(c, rowBase, q, p.N, p.Alpha, p.Accumulate, v0);
        StoreOne(c, rowBase, q + step, p.N, p.Alpha, p.Accumulate, v1);
        StoreOne(c, rowBase, q + 2 * step, p.N, p.Alpha, p.Accumulate, v2);
        StoreOne(c, rowBase, q + 3 * step, p.N, p.Alpha, p.Accumulate, v3);
    }

    /// <summary>C[i] = alpha·v (+ C[i]): the old C is added in float32 and the sum rounded once if C is bf16.</summary>
    private static void StoreOne(FloatView c, long rowBase, int q, int n, float alpha, int accumulate, float v)
    {
        if (q >= n) return;
        long i = rowBase + q;
        c.Store(i, accumulate != 0 ? c.Load(i) + alpha * v : alpha * v);
    }

    /// <summary>Float64 CPU references.</summary>
    public static class Reference
    {
        /// <summary>
        /// The GEMM on flat arrays with the same addressing as <see cref="MatrixOperand"/>: updates <paramref name="c"/>
        /// in place (C = alpha·op(A)·op(B) (+ C); a C batch stride of 0 with batch &gt; 1 sums the batch products).
        /// </summary>
        public static void Gemm(double[] a, long aOffset, int lda, long aBatch, bool transA,
            double[] b, long bOffset, int ldb, long bBatch, bool transB,
            double[] c, long cOffset, int ldc, long cBatch,
            int m, int n, int k, int batch, double alpha = 1, bool accumulate = false)
        {
            bool sum = cBatch == 0 && batch > 1;
            var result = new double[(sum ? 1 : batch) * (long)m * n];
            for (int bi = 0; bi < batch; bi++)
                for (int i = 0; i < m; i++)
                    for (int j = 0; j < n; j++)
                    {
                        double s = 0;
                        for (int l = 0; l < k; l++)
                        {
                            double av = a[aOffset + bi * aBatch + (transA ? (long)l * lda + i : (long)i * lda + l)];
                            double bv = b[bOffset + bi * bBatch + (transB ? (long)j * ldb + l : (long)l * ldb + j)];
                            s += av * bv;
                        }
                        result[((sum ? 0 : bi) * (long)m + i) * n + j] += alpha * s;
                    }
            for (int bi = 0; bi < (sum ? 1 : batch); bi++)
                for (int i = 0; i < m; i++)
                    for (int j = 0; j < n; j++)
                    {
                        long ci = cOffset + bi * cBatch + (long)i * ldc + j;
                        double v = result[((long)bi * m + i) * n + j];
                        c[ci] = accumulate ? c[ci] + v : v;
                    }
        }

        /// <summary>The float64 twin of <see cref="MatMul.Forward"/>: returns op(a)·op(b) with the shape rules of <see cref="MatMulShape"/>.</summary>
        public static double[] Forward(double[] a, Shape aShape, double[] b, Shape bShape, bool transA = false, bool transB = false)
        {
            var s = MatMulShape.Of(aShape, bShape, transA, transB);
            var c = new double[s.Output.Numel];
            Gemm(a, 0, aShape.Last, aShape.Rank == 3 ? (long)aShape[-2] * aShape.Last : 0, transA,
                 b, 0, bShape.Last, bShape.Rank == 3 ? (long)bShape[-2] * bShape.Last : 0, transB,
                 c, 0, s.N, (long)s.M * s.N, s.M, s.N, s.K, s.Batch);
            return c;
        }
    }
}

/// <summary>
/// The shape rule of a (batched) matrix product of contiguous tensors: op(a) is [batch?, M, K], op(b) [batch?, K, N];
/// a rank-2 operand is broadcast over the other's batch; the product is [M, N] or [batch, M, N].
/// </summary>
public sealed record MatMulShape(int Batch, int M, int N, int K, Shape Output, bool ABroadcast, bool BBroadcast)
{
    public static MatMulShape Of(Shape a, Shape b, bool transA, bool transB)
    {
        string both = $"a {a}{MatMul.T(transA)} and b {b}{MatMul.T(transB)}";
        if (a.Rank is not (2 or 3) || b.Rank is not (2 or 3))
            throw new ShapeException("matmul", $"operands must be rank 2 or 3, got {both}");
        int m = transA ? a[-1] : a[-2], ka = transA ? a[-2] : a[-1];
        int kb = transB ? b[-1] : b[-2], n = transB ? b[-2] : b[-1];
        if (ka != kb)
            throw new ShapeException("matmul", $"inner dimensions differ: {both} give K = {ka} vs {kb}");
        if (a.Rank == 3 && b.Rank == 3 && a[0] != b[0])
            throw new ShapeException("matmul", $"batch sizes differ: {both}");
        int batch = a.Rank == 3 ? a[0] : b.Rank == 3 ? b[0] : 1;
        bool batched = a.Rank == 3 || b.Rank == 3;
        var output = batched ? new Shape(batch, m, n) : new Shape(m, n);
        return new MatMulShape(batch, m, n, ka, output, batched && a.Rank == 2, batched && b.Rank == 2);
    }
}
