using ILGPU;
using ILGPU.Runtime;
using System.Runtime.CompilerServices;
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
/// Batched GEMM with float32 arithmetic: C[b] = alpha·op(A[b])·op(B[b]) (+ C[b] when accumulating) (+ bias broadcast
/// over the rows, when given), op(X) = X or Xᵀ, with op(A) M×K, op(B) K×N, C M×N, bias [N]. When C's batch stride is 0
/// and batch &gt; 1 the batch products are summed into the one C (the gradient of an operand that was broadcast over
/// the batch), without atomics.
/// Dtypes: A, B and C may each be float32 or bfloat16 (<see cref="FloatView"/>). Products and sums are float32 whatever
/// the storage: bf16 elements are widened exactly on load, and a bf16 C is rounded once, after the whole dot product
/// (and, when accumulating, after adding the old C in float32, and after adding the bias) — the mixed-precision
/// contract "read bf16, accumulate in float32". The bias (float32 or bf16, one value per column of C, the same for
/// every batch) is the epilogue of a Linear layer fused into the GEMM: y = x·Wᵀ + b without a second pass over y. Under mixed precision: activations × bf16 weight copies → bf16 activations, and dyᵀ·x (both bf16)
/// accumulated into a float32 weight gradient.
///
/// Memory flow (tiled path, the CUDA default): one group of 256 threads owns one output tile of a <see cref="SimtTile"/>
/// shape — 128×128 (8×8 accumulators per thread), 128×64 or 256×32 (8×4) — held in scalar registers; the 16-thread CPU
/// groups run the same kernel with a 16×16 tile (4×4 per thread). A thread's micro-tile is 2×2 (or 2×1, 1×1)
/// sub-blocks of 4×4 spaced half a tile apart, so each k step reads its rows and columns from shared memory as float4s
/// that a warp's lanes share or read consecutively (no bank conflicts). K is walked in slices of 8 (4 on the CPU) through
/// two shared stages, both operands stored k-major (A is transposed on the store when its k index is the contiguous
/// one; rows padded by 4 floats so those transposing stores hit 32 distinct banks): while the group multiplies slice s
/// out of one stage, each thread's global loads of slice s+1 are already in flight into registers, and are written to
/// the other stage after the multiply; one barrier per slice. Global reads go along whichever index is contiguous in
/// the stored operand (consecutive lanes, consecutive addresses, for every transpose combination); tiles wholly inside
/// M and N take a path without bounds arithmetic, edge tiles and the last partial K slice zero-fill. The epilogue
/// reads the bias of the thread's columns once, applies alpha, the accumulate and the bias and stores float4s when C
/// is float32 with 16-byte aligned rows.
/// When the tiles leave multiprocessors idle and K is long (weight gradients: M, N ≤ 1024, K = B·T), K (with the
/// summed batches) is split across groups that write float32 partial tiles to a workspace ("simt_gemm.split_k",
/// <see cref="SplitKWorkspace"/>), summed in split order by a second kernel, which applies alpha and the accumulate:
/// deterministic; the bias is added there, once, not in the partials. The tile and split count come from a small
/// cost model (<see cref="Plan"/>).
///
/// Portable twin (<see cref="KernelPath.Portable"/>, the CPU accelerator's default, where barriers are OS-level
/// rendezvous): no shared memory and no barriers. Each thread owns 4×4 output blocks, grid-stride over the blocks of
/// every output matrix, and walks K reading op(A)'s 4 rows and op(B)'s 4 columns straight from global memory (the
/// CPU's caches play the part of the shared tiles): 8 loads per 16 multiply-adds, addresses advanced by the K
/// stride, no bounds test inside the loop (rows and columns past M and N are clamped to the last valid one and their
/// results never stored). Every element is summed k ascending (batches in order) on both paths, except that split-K
/// sums each split's range first: the same error bound either way.
/// </summary>
public static class MatMul
{
    /// <summary>The portable twin's block side.</summary>
    private const int MicroTile = 4;

    /// <summary>
    /// C[b] = alpha·op(A[b])·op(B[b]) (+ C[b] if <paramref name="accumulate"/>) (+ <paramref name="bias"/>[n] in every
    /// row n of C) for b &lt; <paramref name="batch"/>, op(A) M×K, op(B) K×N, bias [N] float32 or bf16 (not with summed
    /// batches). C must not overlap A, B or the bias, nor (unless its batch stride is 0, which sums) itself.
    /// </summary>
    public static void Gemm(MatrixOperand a, MatrixOperand b, MatrixOperand c, int m, int n, int k, int batch = 1,
        float alpha = 1f, bool accumulate = false, Tensor? bias = null)
    {
        CheckGemm("matmul", a, b, c, m, n, k, batch, bias);
        var device = a.Tensor.Device;
        // bf16 operands on CUDA go to the tensor cores (C float32 or bf16); where it declines (not CUDA), the SIMT kernels below run.
        if (a.Tensor.DType == DType.BF16 && b.Tensor.DType == DType.BF16 && TensorCoreGemm.TryGemm(a, b, c, m, n, k, batch, alpha, accumulate, bias))
            return;
        // fp32 operands go there too when the device allows TF32 or 3xTF32 (ComputeDevice.Fp32Matmul; IEEE by default).
        if (a.Tensor.DType == DType.F32 && b.Tensor.DType == DType.F32 && device.Fp32Matmul != Fp32Matmul.Ieee
            && TensorCoreGemm.TryGemmF32(a, b, c, m, n, k, device.Fp32Matmul, batch, alpha, accumulate, bias))
            return;
        bool sumBatches = c.BatchStride == 0 && batch > 1;
        int outBatches = sumBatches ? 1 : batch;
        var p = new GemmParams
        {
            AOffset = a.Offset, ABatch = a.BatchStride, Lda = a.Ld,
            AStrideM = a.Transposed ? 1 : a.Ld, AStrideK = a.Transposed ? a.Ld : 1,
            BOffset = b.Offset, BBatch = b.BatchStride, Ldb = b.Ld,
            BStrideK = b.Transposed ? 1 : b.Ld, BStrideN = b.Transposed ? b.Ld : 1,
            COffset = c.Offset, CLd = c.Ld, CBatch = c.BatchStride,
            M = m, N = n, K = k, Batch = batch, OutBatches = outBatches, SumBatches = sumBatches ? 1 : 0,
            Alpha = alpha, Accumulate = accumulate ? 1 : 0, Splits = 1, HasBias = bias is null ? 0 : 1,
        };
        var cView = FloatView.Of(c.Tensor);
        // Without a bias the kernels get C's view in its place (never read: HasBias is 0).
        var biasView = bias is null ? cView : FloatView.Of(bias);

        var plan = Launch.Cooperative(device) ? PlanWithOverride(m, n, k, batch, sumBatches, device) : null;
        if (plan is null)
        {
            // The portable twin: MicroTile×MicroTile blocks, one per thread at a time.
            p.TilesM = (m + MicroTile - 1) / MicroTile;
            p.TilesN = (n + MicroTile - 1) / MicroTile;
            var blocked = device.Kernel("matmul.gemm_f32_blocked",
                acc => acc.LoadStreamKernel<FloatView, FloatView, FloatView, FloatView, GemmParams>(BlockedKernel));
            blocked(Launch.Elementwise(device, (long)p.TilesM * p.TilesN * outBatches), FloatView.Of(a.Tensor), FloatView.Of(b.Tensor), cView, biasView, p);
            return;
        }
        Tiled(device, a, b, c, cView, biasView, p, plan.Value);
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
    internal static void CheckGemm(string op, MatrixOperand a, MatrixOperand b, MatrixOperand c, int m, int n, int k, int batch, Tensor? bias = null)
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
        if (bias is not null) CheckBias(op, bias, c, n, batch, dims);
    }

    /// <summary>The epilogue's bias: [N] (one value per column of C), float32 or bf16, on C's device, and C not summing batches.</summary>
    private static void CheckBias(string op, Tensor bias, MatrixOperand c, int n, int batch, string dims)
    {
        bias.ThrowIfDisposed();
        Check.Float(op, bias, "bias");
        if (bias.Shape.Rank != 1 || bias.Shape[0] != n)
            throw new ShapeException(op, $"bias {bias.Shape} must be [{n}], one value per column of C {c} ({dims})");
        if (c.BatchStride == 0 && batch > 1)
            throw new ShapeException(op, $"bias {bias.Shape} cannot be added to C {c} that sums {batch} batch products (batch stride 0; {dims})");
        Check.SameDevice(op, bias, c.Tensor);
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
    /// Kernel arguments (public because ILGPU's CPU backend must see the type). Tiled kernel: op(A)[m,k] of batch b is
    /// a[AOffset + b·ABatch + m·Lda + k] (or + k·Lda + m when A is transposed), likewise B; C[m,n] of output batch ob and
    /// K split s is c[COffset + s·SplitStride + ob·CBatch + m·CLd + n]; a group's K slices are q ∈ [s·SlicesPerSplit, …)
    /// of the Batch·KTiles (summing) or KTiles slices. Portable twin: op(A)[m,k] = a[AOffset + b·ABatch + m·AStrideM +
    /// k·AStrideK], likewise B, and TilesM/TilesN count its 4×4 blocks.
    /// </summary>
    public struct GemmParams
    {
        public long AOffset, AStrideM, AStrideK, ABatch;
        public long BOffset, BStrideK, BStrideN, BBatch;
        public long COffset, CLd, CBatch, SplitStride;
        public int Lda, Ldb;
        public int M, N, K, Batch, OutBatches, TilesM, TilesN, KTiles, Splits, SlicesPerSplit;
        public int SumBatches, Accumulate;
        /// <summary>1 when the epilogue adds the bias (the bias view is C's own otherwise, never read).</summary>
        public int HasBias;
        /// <summary>1 when C is float32 and every row start of it is 16-byte aligned: the epilogue stores float4s.</summary>
        public int CVector;
        public float Alpha;
    }

    // ---------------------------------------------------------------------------------------------------------------
    // Tile shapes and the plan (which tile, how many K splits).
    // ---------------------------------------------------------------------------------------------------------------

    /// <summary>
    /// The tiled kernel's output tile per group. The 256-thread tiles need groups of 256 (CUDA); <see cref="T16x16"/>
    /// is the 16-thread CPU accelerator's (the same kernel, smaller constants), so CI runs the tiled code too.
    /// </summary>
    public enum SimtTile
    {
        /// <summary>Chosen by <see cref="Plan"/>.</summary>
        Auto,
        /// <summary>128×128, 8×8 accumulators per thread as 2×2 sub-blocks of 4×4.</summary>
        T128x128,
        /// <summary>128×64, 8×4 per thread (2×1 sub-blocks): N ≤ 64 (attention's head dimension), or more groups for small outputs.</summary>
        T128x64,
        /// <summary>256×32, 8×4 per thread: N ≤ 32 (attention's P·V and its gradients with 32-wide heads).</summary>
        T256x32,
        /// <summary>16×16, 4×4 per thread, 16 threads, K slices of 4: the CPU accelerator's groups.</summary>
        T16x16,
    }

    public static int TileMOf(SimtTile tile) => tile switch { SimtTile.T256x32 => 256, SimtTile.T16x16 => 16, _ => 128 };
    public static int TileNOf(SimtTile tile) => tile switch { SimtTile.T128x128 => 128, SimtTile.T128x64 => 64, SimtTile.T256x32 => 32, _ => 16 };
    public static int ThreadsOf(SimtTile tile) => tile == SimtTile.T16x16 ? 16 : 256;
    public static int KSliceOf(SimtTile tile) => tile == SimtTile.T16x16 ? 4 : 8;

    /// <summary>
    /// Groups per multiprocessor the kernel is compiled for (PTX .minnctapersm, which caps registers at 65536 / (256·n)):
    /// 1 for 64 accumulators (≤ 255 registers), 2 for 32 (≤ 128). Measured on the H100 (docs/performance.md): capped at
    /// 128 registers (2 groups) the 128×128 kernel spilled 592–600 B per thread to local memory and ran at 4.0–4.6
    /// TFLOP/s at 4096³; with 1 group it uses 249–251 registers, spills nothing and runs at 26.6–27.0.
    /// </summary>
    public static int ResidentOf(SimtTile tile) => tile switch { SimtTile.T128x128 => 1, SimtTile.T16x16 => 1, _ => 2 };

    /// <summary>How the tiled kernel runs one GEMM: the tile, the output tiles, the K slices per tile and their split across groups.</summary>
    public readonly record struct SimtPlan(SimtTile Tile, long Tiles, int KTiles, int Splits, int SlicesPerSplit)
    {
        public long Groups => Tiles * Splits;
        public override string ToString() => $"{Tile}{(Splits > 1 ? $" split {Splits}" : "")}";
    }

    private static readonly LaunchOverride<(SimtTile Tile, int Splits)> PlanOverride = new();

    /// <summary>
    /// Forces the tile (when not Auto) and the K split count (when &gt; 0) of the tiled GEMMs run on this logical thread
    /// until disposed (benchmarks, tests). A 256-thread tile on a device whose groups are smaller is ignored.
    /// </summary>
    public static IDisposable UseSimtPlan(SimtTile tile = SimtTile.Auto, int splits = 0) => PlanOverride.Use((tile, splits));

    private static SimtPlan? PlanWithOverride(int m, int n, int k, int batch, bool sumBatches, ComputeDevice device)
    {
        int group = Launch.GroupSize(device, 256);
        var (tile, splits) = PlanOverride.Value;
        if (tile != SimtTile.Auto && ThreadsOf(tile) <= group) return Fixed(tile, m, n, k, batch, sumBatches, splits);
        var plan = Plan(m, n, k, batch, sumBatches, device.Multiprocessors, group);
        return plan is { } chosen && splits > 0 ? Fixed(chosen.Tile, m, n, k, batch, sumBatches, splits) : plan;
    }

    /// <summary>The plan for a given tile and (at most) <paramref name="splits"/> K splits, none empty.</summary>
    public static SimtPlan Fixed(SimtTile tile, int m, int n, int k, int batch, bool sumBatches, int splits)
    {
        int tm = TileMOf(tile), tn = TileNOf(tile), ks = KSliceOf(tile);
        long tiles = (long)((m + tm - 1) / tm) * ((n + tn - 1) / tn) * (sumBatches ? 1 : batch);
        int kTiles = (k + ks - 1) / ks;
        long total = sumBatches ? (long)batch * kTiles : kTiles;
        if (total > int.MaxValue) throw new ShapeException("matmul", $"K = {k} × batch {batch} is more K slices than one launch can walk");
        int per = (int)((total + Math.Max(1, splits) - 1) / Math.Max(1, splits));
        int actual = (int)((total + per - 1) / per);
        if (tiles * actual > int.MaxValue) throw new ShapeException("matmul", $"{tiles} output tiles of {tm}×{tn} is more than one launch can take (M={m}, N={n}, batch={batch})");
        return new SimtPlan(tile, tiles, kTiles, actual, per);
    }

    /// <summary>
    /// The tile and K split count the tiled kernel uses on a device with <paramref name="multiprocessors"/> SMs and
    /// groups of up to <paramref name="groupSize"/> threads; null when groups are too small for any tile (the portable
    /// twin runs). A pure function of its arguments, so the memory model can predict the split-K workspace.
    /// With 256-thread groups, every tile and every split count up to min(64, slices / 8) (only while one wave of
    /// unsplit tiles leaves resident slots free) is costed and the cheapest kept (ties: the bigger tile, fewer splits):
    /// time = full waves × T(r) + the last, partial wave's T(g), where a wave puts g ≤ r groups (r =
    /// <see cref="ResidentOf"/>) on each SM and T(g) = g · TileM·TileN·(K per split + 16) / (Efficiency · (0.4 +
    /// 0.6·g/r)); split-K adds its workspace traffic (written and read once) at ~1400 bytes per SM cycle (an H100's
    /// ~2.5 TB/s at ~1.75 GHz). Efficiency (1.0 for 128×128, 0.85 for the 8×4 micro-tiles, which load more from shared
    /// memory per multiply-add) and the occupancy ramp (70 % of the SM's rate with one of two groups) are estimates,
    /// not fitted; on the H100 the plans it picks run the model's shapes at 20–27 TFLOP/s (docs/performance.md). The
    /// tile edges count as work, so a 32-wide N picks 256×32 and a 64-wide one 128×64.
    /// </summary>
    public static SimtPlan? Plan(int m, int n, int k, int batch, bool sumBatches, int multiprocessors, int groupSize) =>
        // Every GEMM launch asks: a model has a few dozen shapes, so the up to 3 × 64 costings run once per shape.
        Plans.GetOrAdd((m, n, k, batch, sumBatches, multiprocessors, groupSize),
            key => ChoosePlan(key.M, key.N, key.K, key.Batch, key.SumBatches, key.Multiprocessors, key.GroupSize));

    private static readonly System.Collections.Concurrent.ConcurrentDictionary<
        (int M, int N, int K, int Batch, bool SumBatches, int Multiprocessors, int GroupSize), SimtPlan?> Plans = new();

    private static readonly SimtTile[] CooperativeTiles = [SimtTile.T128x128, SimtTile.T128x64, SimtTile.T256x32];

    private static SimtPlan? ChoosePlan(int m, int n, int k, int batch, bool sumBatches, int multiprocessors, int groupSize)
    {
        if (groupSize < 16) return null;
        if (groupSize < 256) return Fixed(SimtTile.T16x16, m, n, k, batch, sumBatches, 1);
        int sms = Math.Max(1, multiprocessors);
        SimtPlan? best = null;
        double bestCost = double.PositiveInfinity;
        foreach (var tile in CooperativeTiles)
        {
            var unsplit = Fixed(tile, m, n, k, batch, sumBatches, 1);
            int r = ResidentOf(tile);
            int maxSplits = unsplit.Tiles >= (long)r * sms ? 1 : (int)Math.Clamp(unsplit.SlicesPerSplit / 8, 1, 64);
            for (int s = 1; s <= maxSplits; s++)
            {
                var plan = s == 1 ? unsplit : Fixed(tile, m, n, k, batch, sumBatches, s);
                if (s > 1 && plan.Splits != s) continue;
                long outElements = (long)(sumBatches ? 1 : batch) * m * n;
                if (s > 1 && s * outElements > int.MaxValue) break;
                double cost = Cost(plan, sms) + (s > 1 ? 2.0 * s * outElements * 4 / 1400 : 0);
                if (cost < bestCost) { best = plan; bestCost = cost; }
            }
        }
        return best;
    }

    private static double Cost(SimtPlan plan, int sms)
    {
        int r = ResidentOf(plan.Tile);
        double efficiency = plan.Tile == SimtTile.T128x128 ? 1.0 : 0.85;
        double work = (double)TileMOf(plan.Tile) * TileNOf(plan.Tile) * (plan.SlicesPerSplit * KSliceOf(plan.Tile) + 16) / 128;
        double Wave(long g) => g * work / (efficiency * (0.4 + 0.6 * g / r));
        long slots = (long)r * sms;
        long full = plan.Groups / slots, rest = plan.Groups - full * slots;
        return full * Wave(r) + (rest > 0 ? Wave((rest + sms - 1) / sms) : 0);
    }

    /// <summary>The op name of the split-K partials in the tracker (the memory model predicts them under the same name).</summary>
    public const string SplitKOp = "simt_gemm.split_k";

    /// <summary>
    /// The shape of the float32 workspace (<see cref="SplitKOp"/>, category Workspace, freed when the GEMM returns) that
    /// <see cref="Gemm"/> rents on a device for this product: [splits, output batches, M, N], or null when it rents none
    /// (no K split, or the portable path: <paramref name="cooperative"/> false). Not used when the tensor cores take the
    /// GEMM (bf16 A and B on CUDA: see TensorCoreGemm's "tc_gemm.split_k").
    /// </summary>
    public static Shape? SplitKWorkspace(int m, int n, int k, int batch, bool sumBatches, bool cooperative, int multiprocessors, int maxGroupSize)
    {
        if (!cooperative) return null;
        var plan = Plan(m, n, k, batch, sumBatches, multiprocessors, Math.Min(256, maxGroupSize));
        return plan is { Splits: > 1 } p ? new Shape(p.Splits, sumBatches ? 1 : batch, m, n) : null;
    }

    /// <summary>The plan <see cref="Gemm"/> would use on this device (with any <see cref="UseSimtPlan"/> override), or null on the portable path.</summary>
    public static SimtPlan? PlanFor(ComputeDevice device, int m, int n, int k, int batch = 1, bool sumBatches = false) =>
        Launch.Cooperative(device) ? PlanWithOverride(m, n, k, batch, sumBatches, device) : null;

    // ---------------------------------------------------------------------------------------------------------------
    // The tiled kernel (the cooperative path).
    // ---------------------------------------------------------------------------------------------------------------

    /// <summary>Compile-time constants of a tile shape (the kernel is instantiated per shape; branches on them fold away).</summary>
    public interface ITileShape
    {
        /// <summary>Threads per group.</summary>
        int Threads { get; }
        /// <summary>Threads along N (the rest go along M).</summary>
        int ThreadsN { get; }
        /// <summary>Sub-blocks of 4 rows (1 or 2) per thread along M, spaced half a tile apart.</summary>
        int SubM { get; }
        /// <summary>Sub-blocks of 4 columns (1 or 2) per thread along N.</summary>
        int SubN { get; }
        /// <summary>Depth of a K slice (one shared stage).</summary>
        int KSlice { get; }
    }

    public struct Shape128x128 : ITileShape { public readonly int Threads => 256; public readonly int ThreadsN => 16; public readonly int SubM => 2; public readonly int SubN => 2; public readonly int KSlice => 8; }
    public struct Shape128x64 : ITileShape { public readonly int Threads => 256; public readonly int ThreadsN => 16; public readonly int SubM => 2; public readonly int SubN => 1; public readonly int KSlice => 8; }
    public struct Shape256x32 : ITileShape { public readonly int Threads => 256; public readonly int ThreadsN => 8; public readonly int SubM => 2; public readonly int SubN => 1; public readonly int KSlice => 8; }
    public struct Shape16x16 : ITileShape { public readonly int Threads => 16; public readonly int ThreadsN => 4; public readonly int SubM => 1; public readonly int SubN => 1; public readonly int KSlice => 4; }

    /// <summary>Four floats read or written as one 16-byte access (ld/st.v4.f32): a fragment of 4 rows or columns.</summary>
    public struct Quad
    {
        public float X, Y, Z, W;

        public Quad(float x, float y, float z, float w)
        {
            X = x; Y = y; Z = z; W = w;
        }

        /// <summary>Componentwise float32 sums (each one rounding, as four scalar adds).</summary>
        public static Quad operator +(Quad a, Quad b) => new(a.X + b.X, a.Y + b.Y, a.Z + b.Z, a.W + b.W);
    }

    /// <summary>A thread's accumulators, Cij = row i, column j of its micro-tile (rows 4–7 / columns 4–7: the second sub-blocks). Lives in registers.</summary>
    public struct Accumulators
    {
        public float C00, C01, C02, C03, C04, C05, C06, C07;
        public float C10, C11, C12, C13, C14, C15, C16, C17;
        public float C20, C21, C22, C23, C24, C25, C26, C27;
        public float C30, C31, C32, C33, C34, C35, C36, C37;
        public float C40, C41, C42, C43, C44, C45, C46, C47;
        public float C50, C51, C52, C53, C54, C55, C56, C57;
        public float C60, C61, C62, C63, C64, C65, C66, C67;
        public float C70, C71, C72, C73, C74, C75, C76, C77;
    }

    /// <summary>
    /// Shared floats per operand: two stages of KSlice k-rows of (tile rows + 4) floats, for the largest tile rows of any
    /// shape (A: 256 rows of <see cref="SimtTile.T256x32"/>; B: 128 columns of <see cref="SimtTile.T128x128"/>).
    /// </summary>
    private const int SharedA = 2 * 8 * (256 + 4), SharedB = 2 * 8 * (128 + 4);

    private static readonly string[] TiledKeys = Enumerable.Range(0, 5 * 16).Select(i => $"matmul.tiled.{(SimtTile)(i / 16)}.{i % 16}").ToArray();

    private static Type ShapeType(SimtTile tile) => tile switch
    {
        SimtTile.T128x128 => typeof(Shape128x128),
        SimtTile.T128x64 => typeof(Shape128x64),
        SimtTile.T256x32 => typeof(Shape256x32),
        SimtTile.T16x16 => typeof(Shape16x16),
        _ => throw new ArgumentOutOfRangeException(nameof(tile), tile, "a concrete tile"),
    };

    // Kernel variant bits: the operand layouts and dtypes (compile-time flags of the kernel).
    public const int AKContiguousBit = 1, BKContiguousBit = 2, ABf16Bit = 4, BBf16Bit = 8;

    /// <summary>The variant bits of a GEMM's operands: k contiguous in A (not transposed) / B (transposed), A / B bfloat16.</summary>
    public static int VariantOf(MatrixOperand a, MatrixOperand b) =>
        (a.Transposed ? 0 : AKContiguousBit) | (b.Transposed ? BKContiguousBit : 0)
        | (a.Tensor.DType == DType.BF16 ? ABf16Bit : 0) | (b.Tensor.DType == DType.BF16 ? BBf16Bit : 0);

    /// <summary>The kernel instance for a tile and variant (<see cref="VariantOf"/>).</summary>
    private static System.Reflection.MethodInfo TiledMethod(SimtTile tile, int variant)
    {
        Type Flag(int bit) => (variant & bit) != 0 ? typeof(TensorCoreGemm.Yes) : typeof(TensorCoreGemm.No);
        return typeof(MatMul).GetMethod(nameof(TiledKernel), System.Reflection.BindingFlags.NonPublic | System.Reflection.BindingFlags.Static)!
            .MakeGenericMethod(ShapeType(tile), Flag(AKContiguousBit), Flag(BKContiguousBit), Flag(ABf16Bit), Flag(BBf16Bit));
    }

    private static Action<KernelConfig, FloatView, FloatView, FloatView, FloatView, GemmParams> TiledLauncher(ComputeDevice device, SimtTile tile, int variant) =>
        device.Kernel(TiledKeys[(int)tile * 16 + variant], acc =>
        {
            var kernel = (Action<FloatView, FloatView, FloatView, FloatView, GemmParams>)Delegate.CreateDelegate(
                typeof(Action<FloatView, FloatView, FloatView, FloatView, GemmParams>), TiledMethod(tile, variant));
            // On CUDA: .maxntid 256 and .minnctapersm r, so ptxas keeps the registers within r groups per SM.
            return device.IsCuda ? acc.LoadStreamKernel(kernel, Specialization(tile)) : acc.LoadStreamKernel(kernel);
        });

    private static KernelSpecialization Specialization(SimtTile tile) => new(ThreadsOf(tile), ResidentOf(tile));

    private static void Tiled(ComputeDevice device, MatrixOperand a, MatrixOperand b, MatrixOperand c, FloatView cView, FloatView bias, GemmParams p, SimtPlan plan)
    {
        var tile = plan.Tile;
        p.TilesM = (p.M + TileMOf(tile) - 1) / TileMOf(tile);
        p.TilesN = (p.N + TileNOf(tile) - 1) / TileNOf(tile);
        p.KTiles = plan.KTiles;
        p.Splits = plan.Splits;
        p.SlicesPerSplit = plan.SlicesPerSplit;
        var launch = TiledLauncher(device, tile, VariantOf(a, b));
        var config = new KernelConfig((int)plan.Groups, ThreadsOf(tile));
        if (plan.Splits == 1)
        {
            p.CVector = Vectorizable(c, p.OutBatches) ? 1 : 0;
            launch(config, FloatView.Of(a.Tensor), FloatView.Of(b.Tensor), cView, bias, p);
            return;
        }

        // float32 partial tiles [split][outBatch][M][N]; the sum applies alpha, the accumulate, the bias and C's dtype.
        using var partials = Tensor.Empty(device, new Shape(plan.Splits, p.OutBatches, p.M, p.N), DType.F32, MemoryCategory.Workspace, SplitKOp);
        var q = p;
        q.COffset = 0; q.CLd = p.N; q.CBatch = (long)p.M * p.N; q.SplitStride = (long)p.OutBatches * p.M * p.N;
        q.Alpha = 1f; q.Accumulate = 0; q.HasBias = 0;
        q.CVector = Vectorizable(new MatrixOperand(partials, 0, p.N, q.CBatch), p.OutBatches) && q.SplitStride % 4 == 0 ? 1 : 0;
        launch(config, FloatView.Of(a.Tensor), FloatView.Of(b.Tensor), FloatView.Of(partials), bias, q);

        var sp = new SplitSumParams
        {
            Splits = plan.Splits, SplitStride = q.SplitStride, N = p.N, MN = (long)p.M * p.N,
            COffset = p.COffset, CBatch = p.CBatch, CLd = p.CLd, Accumulate = p.Accumulate, Alpha = p.Alpha, HasBias = p.HasBias,
        };
        var sum = device.Kernel("matmul.split_k_sum",
            acc => acc.LoadStreamKernel<ArrayView<float>, FloatView, FloatView, SplitSumParams>(SplitSumKernel));
        sum(Launch.Elementwise(device, q.SplitStride), partials.F32, cView, bias, sp);
    }

    /// <summary>
    /// True when C is float32 and every row start of every output batch is a multiple of 4 floats from a 16-byte
    /// aligned view start: the kernel indexes C's view as float4s (element i is float4 i / 4).
    /// </summary>
    private static bool Vectorizable(MatrixOperand c, int outBatches)
    {
        if (c.Tensor.DType != DType.F32 || c.Offset % 4 != 0 || c.Ld % 4 != 0 || (outBatches > 1 && c.BatchStride % 4 != 0)) return false;
        return c.Tensor.Address % 16 == 0;
    }

    /// <summary>
    /// One group per (output tile, K split), N tiles fastest. See the class comment for the memory flow; the
    /// constants come from <typeparamref name="TShape"/>, the operand layouts and dtypes from the four flags (k is the
    /// stored operand's contiguous index: A not transposed, B transposed; bf16 storage), so every branch on them folds
    /// at compile time; only C's dtype and alignment are run-time (uniform) branches, in the epilogue.
    /// </summary>
    private static void TiledKernel<TShape, TAKContiguous, TBKContiguous, TABf16, TBBf16>(FloatView a, FloatView b, FloatView c, FloatView bias, GemmParams p)
        where TShape : struct, ITileShape
        where TAKContiguous : struct, TensorCoreGemm.IFlag
        where TBKContiguous : struct, TensorCoreGemm.IFlag
        where TABf16 : struct, TensorCoreGemm.IFlag
        where TBBf16 : struct, TensorCoreGemm.IFlag
    {
        int tid = Group.IdxX;
        int block = Grid.IdxX;
        var shape = default(TShape);
        int threads = shape.Threads, threadsN = shape.ThreadsN, ks = shape.KSlice;
        bool subM2 = shape.SubM == 2, subN2 = shape.SubN == 2;
        bool aKc = default(TAKContiguous).On, bKc = default(TBKContiguous).On;
        int threadsM = threads / threadsN;
        int halfM = threadsM * 4, halfN = threadsN * 4;          // where the second sub-blocks start
        int tileM = subM2 ? 2 * halfM : halfM, tileN = subN2 ? 2 * halfN : halfN;
        int pitchA = tileM + 4, pitchB = tileN + 4;              // +4: transposing stores hit 32 banks, rows stay 16-byte aligned
        int stageA = ks * pitchA, stageB = ks * pitchB;
        var sa = SharedMemory.Allocate<float>(SharedA);
        var sb = SharedMemory.Allocate<float>(SharedB);
        var saQ = sa.Cast<Quad>();
        var sbQ = sb.Cast<Quad>();

        // The group's tile and K split.
        int tn = block % p.TilesN;
        int rest = block / p.TilesN;
        int tm = rest % p.TilesM;
        rest /= p.TilesM;
        int split = rest % p.Splits;
        int outBatch = rest / p.Splits;
        int m0 = tm * tileM, n0 = tn * tileN;
        bool interior = m0 + tileM <= p.M && n0 + tileN <= p.N;

        // The thread's place in the tile: a warp is 4 (M) × 8 (N) threads, so a k step's fragment reads are 4 and 8
        // distinct float4s (broadcasts and one 128-byte row).
        int lanesN = threadsN < 8 ? threadsN : 8;
        int warpsN = threadsN / lanesN;
        int warp = tid >> 5, lane = tid & 31;
        int ty = warp / warpsN * (32 / lanesN) + lane / lanesN;
        int tx = warp % warpsN * lanesN + lane % lanesN;

        // This thread's share of a slice's global loads of A and of B.
        var la = new SliceLoads(aKc, tid, threads, ks, tileM, m0, p.M, p.Lda, pitchA);
        var lb = new SliceLoads(bKc, tid, threads, ks, tileN, n0, p.N, p.Ldb, pitchB);

        // The group's K slices: [first, first + count) of the (batch, k tile) sequence.
        int total = p.SumBatches != 0 ? p.Batch * p.KTiles : p.KTiles;
        int first = split * p.SlicesPerSplit;
        int count = Math.Min(p.SlicesPerSplit, total - first);
        int bi = p.SumBatches != 0 ? first / p.KTiles : outBatch;
        int kt = first - (p.SumBatches != 0 ? bi * p.KTiles : 0);

        float a0 = 0, a1 = 0, a2 = 0, a3 = 0, a4 = 0, a5 = 0, a6 = 0, a7 = 0;
        float b0 = 0, b1 = 0, b2 = 0, b3 = 0, b4 = 0, b5 = 0, b6 = 0, b7 = 0;
        {
            int k0 = kt * ks;
            bool full = interior && k0 + ks <= p.K;
            LoadOperand<TABf16>(a, la.Count, p.AOffset + bi * p.ABatch + kt * la.SliceStep + la.Thread, la.Step, full, la.RowsLeft, p.K - k0 - la.K, la.RowStep, la.KStep,
                out a0, out a1, out a2, out a3, out a4, out a5, out a6, out a7);
            LoadOperand<TBBf16>(b, lb.Count, p.BOffset + bi * p.BBatch + kt * lb.SliceStep + lb.Thread, lb.Step, full, lb.RowsLeft, p.K - k0 - lb.K, lb.RowStep, lb.KStep,
                out b0, out b1, out b2, out b3, out b4, out b5, out b6, out b7);
            StoreOperand(sa, la.Count, la.Shared, la.SharedStep, a0, a1, a2, a3, a4, a5, a6, a7);
            StoreOperand(sb, lb.Count, lb.Shared, lb.SharedStep, b0, b1, b2, b3, b4, b5, b6, b7);
        }
        Group.Barrier();

        var acc = default(Accumulators);
        int aFragment = ty, bFragment = tx;                      // float4 index of the thread's rows / columns in a k-row
        for (int s = 0; s < count; s++)
        {
            int stage = s & 1;
            bool more = s + 1 < count;
            if (more)
            {
                // Slice s+1's loads go out now and land in registers while slice s is multiplied.
                kt++;
                if (kt == p.KTiles)
                {
                    kt = 0;
                    bi++;
                }
                int k0 = kt * ks;
                bool full = interior && k0 + ks <= p.K;
                LoadOperand<TABf16>(a, la.Count, p.AOffset + bi * p.ABatch + kt * la.SliceStep + la.Thread, la.Step, full, la.RowsLeft, p.K - k0 - la.K, la.RowStep, la.KStep,
                    out a0, out a1, out a2, out a3, out a4, out a5, out a6, out a7);
                LoadOperand<TBBf16>(b, lb.Count, p.BOffset + bi * p.BBatch + kt * lb.SliceStep + lb.Thread, lb.Step, full, lb.RowsLeft, p.K - k0 - lb.K, lb.RowStep, lb.KStep,
                    out b0, out b1, out b2, out b3, out b4, out b5, out b6, out b7);
            }

            // The slice's k steps, unrolled (ks is 8 or 4). The fragments are read through views that start at this
            // thread's first float4 of the stage, so every read is base + a constant (an immediate offset in the PTX).
            var aStage = saQ.SubView((stage * stageA >> 2) + aFragment);
            var bStage = sbQ.SubView((stage * stageB >> 2) + bFragment);
            int pa = pitchA >> 2, pb = pitchB >> 2, ha = halfM >> 2, hb = halfN >> 2;
            KStep(ref acc, aStage, bStage, 0, 0, ha, hb, subM2, subN2);
            KStep(ref acc, aStage, bStage, pa, pb, ha, hb, subM2, subN2);
            KStep(ref acc, aStage, bStage, 2 * pa, 2 * pb, ha, hb, subM2, subN2);
            KStep(ref acc, aStage, bStage, 3 * pa, 3 * pb, ha, hb, subM2, subN2);
            if (ks > 4)
            {
                KStep(ref acc, aStage, bStage, 4 * pa, 4 * pb, ha, hb, subM2, subN2);
                KStep(ref acc, aStage, bStage, 5 * pa, 5 * pb, ha, hb, subM2, subN2);
                KStep(ref acc, aStage, bStage, 6 * pa, 6 * pb, ha, hb, subM2, subN2);
                KStep(ref acc, aStage, bStage, 7 * pa, 7 * pb, ha, hb, subM2, subN2);
            }

            if (more)
            {
                // The other stage was last read in iteration s-1, which every thread finished before the last barrier.
                int next = 1 - stage;
                StoreOperand(sa, la.Count, next * stageA + la.Shared, la.SharedStep, a0, a1, a2, a3, a4, a5, a6, a7);
                StoreOperand(sb, lb.Count, next * stageB + lb.Shared, lb.SharedStep, b0, b1, b2, b3, b4, b5, b6, b7);
            }
            Group.Barrier();
        }

        long cBase = p.COffset + split * p.SplitStride + outBatch * p.CBatch;
        int r0 = m0 + ty * 4, q0 = n0 + tx * 4, q1 = q0 + halfN;
        // The bias of the thread's 4 (or 8) columns, read once for all its rows.
        var e0 = ColumnBias(bias, p, q0);
        var e1 = subN2 ? ColumnBias(bias, p, q1) : default;
        StoreRow(c, p, cBase, r0 + 0, q0, q1, interior, subN2, e0, e1, acc.C00, acc.C01, acc.C02, acc.C03, acc.C04, acc.C05, acc.C06, acc.C07);
        StoreRow(c, p, cBase, r0 + 1, q0, q1, interior, subN2, e0, e1, acc.C10, acc.C11, acc.C12, acc.C13, acc.C14, acc.C15, acc.C16, acc.C17);
        StoreRow(c, p, cBase, r0 + 2, q0, q1, interior, subN2, e0, e1, acc.C20, acc.C21, acc.C22, acc.C23, acc.C24, acc.C25, acc.C26, acc.C27);
        StoreRow(c, p, cBase, r0 + 3, q0, q1, interior, subN2, e0, e1, acc.C30, acc.C31, acc.C32, acc.C33, acc.C34, acc.C35, acc.C36, acc.C37);
        if (subM2)
        {
            int r1 = r0 + halfM;
            StoreRow(c, p, cBase, r1 + 0, q0, q1, interior, subN2, e0, e1, acc.C40, acc.C41, acc.C42, acc.C43, acc.C44, acc.C45, acc.C46, acc.C47);
            StoreRow(c, p, cBase, r1 + 1, q0, q1, interior, subN2, e0, e1, acc.C50, acc.C51, acc.C52, acc.C53, acc.C54, acc.C55, acc.C56, acc.C57);
            StoreRow(c, p, cBase, r1 + 2, q0, q1, interior, subN2, e0, e1, acc.C60, acc.C61, acc.C62, acc.C63, acc.C64, acc.C65, acc.C66, acc.C67);
            StoreRow(c, p, cBase, r1 + 3, q0, q1, interior, subN2, e0, e1, acc.C70, acc.C71, acc.C72, acc.C73, acc.C74, acc.C75, acc.C76, acc.C77);
        }
    }

    /// <summary>
    /// One thread's share of an operand's slice loads (A with its M tile, B with its N tile). K-contiguous operand:
    /// element (row, k) = (tid / ks, tid % ks), the next load threads/ks rows further. Row-contiguous: (tid % rows,
    /// tid / rows), the next threads/rows k-rows further. Offsets are elements of the operand and of its shared tile.
    /// </summary>
    private readonly struct SliceLoads
    {
        public readonly int Count, K, RowStep, KStep, Shared, SharedStep, RowsLeft;
        public readonly long Step, Thread, SliceStep;

        public SliceLoads(bool kContiguous, int tid, int threads, int ks, int tileRows, int x0, int extent, int ld, int pitch)
        {
            Count = tileRows * ks / threads;
            int row = kContiguous ? tid / ks : tid % tileRows;
            K = kContiguous ? tid % ks : tid / tileRows;
            RowStep = kContiguous ? threads / ks : 0;
            KStep = kContiguous ? 0 : threads / tileRows;
            Step = (long)(kContiguous ? RowStep : KStep) * ld;
            Thread = kContiguous ? (long)(x0 + row) * ld + K : (long)K * ld + x0 + row;
            SliceStep = kContiguous ? ks : (long)ks * ld;
            Shared = K * pitch + row;
            SharedStep = kContiguous ? RowStep : KStep * pitch;
            RowsLeft = extent - x0 - row;
        }
    }

    /// <summary>
    /// This thread's loads of one operand slice: element o, o + step, …, (<paramref name="loads"/> of them, a
    /// compile-time count ≤ 8). <paramref name="full"/>: the whole slice is inside the matrix, no tests. Otherwise load
    /// i exists when i·rowStep &lt; rowsLeft and i·kStep &lt; kLeft (the rows and k left from this thread's first element);
    /// the rest read as 0.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void LoadOperand<TBf16>(FloatView x, int loads, long o, long step, bool full, int rowsLeft, int kLeft, int rowStep, int kStep,
        out float v0, out float v1, out float v2, out float v3, out float v4, out float v5, out float v6, out float v7)
        where TBf16 : struct, TensorCoreGemm.IFlag
    {
        long o1 = o + step, o2 = o1 + step, o3 = o2 + step, o4 = o3 + step, o5 = o4 + step, o6 = o5 + step, o7 = o6 + step;
        if (full)
        {
            v0 = Fetch<TBf16>(x, o);
            v1 = loads > 1 ? Fetch<TBf16>(x, o1) : 0f;
            v2 = loads > 2 ? Fetch<TBf16>(x, o2) : 0f;
            v3 = loads > 3 ? Fetch<TBf16>(x, o3) : 0f;
            v4 = loads > 4 ? Fetch<TBf16>(x, o4) : 0f;
            v5 = loads > 5 ? Fetch<TBf16>(x, o5) : 0f;
            v6 = loads > 6 ? Fetch<TBf16>(x, o6) : 0f;
            v7 = loads > 7 ? Fetch<TBf16>(x, o7) : 0f;
        }
        else
        {
            v0 = rowsLeft > 0 && kLeft > 0 ? Fetch<TBf16>(x, o) : 0f;
            v1 = loads > 1 && rowsLeft > rowStep && kLeft > kStep ? Fetch<TBf16>(x, o1) : 0f;
            v2 = loads > 2 && rowsLeft > 2 * rowStep && kLeft > 2 * kStep ? Fetch<TBf16>(x, o2) : 0f;
            v3 = loads > 3 && rowsLeft > 3 * rowStep && kLeft > 3 * kStep ? Fetch<TBf16>(x, o3) : 0f;
            v4 = loads > 4 && rowsLeft > 4 * rowStep && kLeft > 4 * kStep ? Fetch<TBf16>(x, o4) : 0f;
            v5 = loads > 5 && rowsLeft > 5 * rowStep && kLeft > 5 * kStep ? Fetch<TBf16>(x, o5) : 0f;
            v6 = loads > 6 && rowsLeft > 6 * rowStep && kLeft > 6 * kStep ? Fetch<TBf16>(x, o6) : 0f;
            v7 = loads > 7 && rowsLeft > 7 * rowStep && kLeft > 7 * kStep ? Fetch<TBf16>(x, o7) : 0f;
        }
    }

    /// <summary>Element o of an operand whose dtype is a compile-time flag (no branch on it per load).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static float Fetch<TBf16>(FloatView x, long o) where TBf16 : struct, TensorCoreGemm.IFlag =>
        default(TBf16).On ? BFloat16.ToFloat(x.Bf16[o]) : x.F32[o];

    /// <summary>Writes the loaded values to shared memory: s[at + i·step] = v_i for i &lt; <paramref name="loads"/>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void StoreOperand(ArrayView<float> s, int loads, int at, int step,
        float v0, float v1, float v2, float v3, float v4, float v5, float v6, float v7)
    {
        s[at] = v0;
        if (loads > 1) s[at + step] = v1;
        if (loads > 2) s[at + 2 * step] = v2;
        if (loads > 3) s[at + 3 * step] = v3;
        if (loads > 4) s[at + 4 * step] = v4;
        if (loads > 5) s[at + 5 * step] = v5;
        if (loads > 6) s[at + 6 * step] = v6;
        if (loads > 7) s[at + 7 * step] = v7;
    }

    /// <summary>One k step: the thread's A rows and B columns of k-row (float4 index aq / bq) and the rank-one update.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void KStep(ref Accumulators acc, ArrayView<Quad> saQ, ArrayView<Quad> sbQ, int aq, int bq, int ha, int hb, bool subM2, bool subN2)
    {
        var fa0 = saQ[aq];
        var fa1 = subM2 ? saQ[aq + ha] : default;
        var fb0 = sbQ[bq];
        var fb1 = subN2 ? sbQ[bq + hb] : default;
        RankOne(ref acc, fa0, fa1, fb0, fb1, subM2, subN2);
    }

    /// <summary>
    /// One rank-1 update of the thread's micro-tile: rows a0 (and a1, the second M sub-block), columns b0 (and b1).
    /// The sub-block flags are constants of the tile shape, so the unused updates and accumulators compile away.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void RankOne(ref Accumulators acc, Quad a0, Quad a1, Quad b0, Quad b1, bool subM2, bool subN2)
    {
            acc.C00 += a0.X * b0.X; acc.C01 += a0.X * b0.Y; acc.C02 += a0.X * b0.Z; acc.C03 += a0.X * b0.W;
            acc.C10 += a0.Y * b0.X; acc.C11 += a0.Y * b0.Y; acc.C12 += a0.Y * b0.Z; acc.C13 += a0.Y * b0.W;
            acc.C20 += a0.Z * b0.X; acc.C21 += a0.Z * b0.Y; acc.C22 += a0.Z * b0.Z; acc.C23 += a0.Z * b0.W;
            acc.C30 += a0.W * b0.X; acc.C31 += a0.W * b0.Y; acc.C32 += a0.W * b0.Z; acc.C33 += a0.W * b0.W;
        if (subN2)
        {
            acc.C04 += a0.X * b1.X; acc.C05 += a0.X * b1.Y; acc.C06 += a0.X * b1.Z; acc.C07 += a0.X * b1.W;
            acc.C14 += a0.Y * b1.X; acc.C15 += a0.Y * b1.Y; acc.C16 += a0.Y * b1.Z; acc.C17 += a0.Y * b1.W;
            acc.C24 += a0.Z * b1.X; acc.C25 += a0.Z * b1.Y; acc.C26 += a0.Z * b1.Z; acc.C27 += a0.Z * b1.W;
            acc.C34 += a0.W * b1.X; acc.C35 += a0.W * b1.Y; acc.C36 += a0.W * b1.Z; acc.C37 += a0.W * b1.W;
        }
        if (subM2)
        {
            acc.C40 += a1.X * b0.X; acc.C41 += a1.X * b0.Y; acc.C42 += a1.X * b0.Z; acc.C43 += a1.X * b0.W;
            acc.C50 += a1.Y * b0.X; acc.C51 += a1.Y * b0.Y; acc.C52 += a1.Y * b0.Z; acc.C53 += a1.Y * b0.W;
            acc.C60 += a1.Z * b0.X; acc.C61 += a1.Z * b0.Y; acc.C62 += a1.Z * b0.Z; acc.C63 += a1.Z * b0.W;
            acc.C70 += a1.W * b0.X; acc.C71 += a1.W * b0.Y; acc.C72 += a1.W * b0.Z; acc.C73 += a1.W * b0.W;
        }
        if (subM2 && subN2)
        {
            acc.C44 += a1.X * b1.X; acc.C45 += a1.X * b1.Y; acc.C46 += a1.X * b1.Z; acc.C47 += a1.X * b1.W;
            acc.C54 += a1.Y * b1.X; acc.C55 += a1.Y * b1.Y; acc.C56 += a1.Y * b1.Z; acc.C57 += a1.Y * b1.W;
            acc.C64 += a1.Z * b1.X; acc.C65 += a1.Z * b1.Y; acc.C66 += a1.Z * b1.Z; acc.C67 += a1.Z * b1.W;
            acc.C74 += a1.W * b1.X; acc.C75 += a1.W * b1.Y; acc.C76 += a1.W * b1.Z; acc.C77 += a1.W * b1.W;
        }
    }

    /// <summary>
    /// One row of the thread's micro-tile: C[r, q0 + j] = v_j and, with a second N sub-block, C[r, q1 + j] = v_{4+j};
    /// e0 / e1 are the bias of columns q0.. / q1.. (<see cref="ColumnBias"/>).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void StoreRow(FloatView c, GemmParams p, long cBase, int r, int q0, int q1, bool interior, bool subN2, Quad e0, Quad e1,
        float v0, float v1, float v2, float v3, float v4, float v5, float v6, float v7)
    {
        if (!interior && r >= p.M) return;
        long rowBase = cBase + r * p.CLd;
        StoreQuad(c, p, rowBase, q0, interior, e0, v0, v1, v2, v3);
        if (subN2) StoreQuad(c, p, rowBase, q1, interior, e1, v4, v5, v6, v7);
    }

    /// <summary>
    /// C[rowBase + q + j] = alpha·v_j (+ the old value) (+ e_j, the column's bias), j &lt; 4: one float4 access when C
    /// allows, else per element past N.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void StoreQuad(FloatView c, GemmParams p, long rowBase, int q, bool interior, Quad e, float v0, float v1, float v2, float v3)
    {
        if (p.CVector != 0 && (interior || q + 3 < p.N))
        {
            var quads = c.F32.Cast<Quad>();
            long i = (rowBase + q) >> 2;
            float alpha = p.Alpha;
            var r = new Quad(alpha * v0, alpha * v1, alpha * v2, alpha * v3);
            if (p.Accumulate != 0)
            {
                var old = quads[i];
                r = new Quad(old.X + r.X, old.Y + r.Y, old.Z + r.Z, old.W + r.W);
            }
            if (p.HasBias != 0) r = new Quad(r.X + e.X, r.Y + e.Y, r.Z + e.Z, r.W + e.W);
            quads[i] = r;
            return;
        }
        StoreOne(c, p, rowBase, q, v0, e.X);
        StoreOne(c, p, rowBase, q + 1, v1, e.Y);
        StoreOne(c, p, rowBase, q + 2, v2, e.Z);
        StoreOne(c, p, rowBase, q + 3, v3, e.W);
    }

    /// <summary>bias[q + j] for j &lt; 4, the epilogue's values for columns q..q+3 (0 past N; all 0, nothing read, without a bias).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static Quad ColumnBias(FloatView bias, GemmParams p, int q)
    {
        if (p.HasBias == 0) return default;
        return new Quad(q < p.N ? bias.Load(q) : 0f, q + 1 < p.N ? bias.Load(q + 1) : 0f,
            q + 2 < p.N ? bias.Load(q + 2) : 0f, q + 3 < p.N ? bias.Load(q + 3) : 0f);
    }

    /// <summary>Arguments of the split-K sum (public for ILGPU's CPU backend).</summary>
    public struct SplitSumParams
    {
        public long SplitStride, MN, COffset, CBatch, CLd;
        public int Splits, N, Accumulate, HasBias;
        public float Alpha;
    }

    /// <summary>
    /// C = alpha·Σ_s partial[s] (+ C) (+ the column's bias), the splits summed in order (deterministic), one element per
    /// thread, grid-stride. The only place a split-K GEMM adds the bias (the partials have none).
    /// </summary>
    private static void SplitSumKernel(ArrayView<float> partials, FloatView c, FloatView bias, SplitSumParams p)
    {
        long stride = (long)Grid.DimX * Group.DimX;
        for (long e = Grid.GlobalIndex.X; e < p.SplitStride; e += stride)
        {
            float sum = partials[e];
            long at = e;
            for (int s = 1; s < p.Splits; s++)
            {
                at += p.SplitStride;
                sum += partials[at];
            }
            long ob = e / p.MN;
            long inMatrix = e - ob * p.MN;
            long row = inMatrix / p.N;
            long col = inMatrix - row * p.N;
            long i = p.COffset + ob * p.CBatch + row * p.CLd + col;
            float v = p.Alpha * sum;
            if (p.Accumulate != 0) v = c.Load(i) + v;
            if (p.HasBias != 0) v += bias.Load(col);
            c.Store(i, v);
        }
    }

    /// <summary>The driver's figures for a tiled-kernel instance on CUDA (null elsewhere); see <see cref="VariantOf"/> for the variant bits.</summary>
    public static KernelResources? TiledKernelResources(ComputeDevice device, SimtTile tile, int variant) =>
        !device.IsCuda || tile is SimtTile.Auto or SimtTile.T16x16 ? null : KernelResources.Of(device, TiledLauncher(device, tile, variant), ThreadsOf(tile));

    /// <summary>
    /// The PTX of one tiled-kernel instance (for ptxas -v / inspection): the device's own backend on CUDA, an sm_90 one
    /// elsewhere, with the launch bounds the CUDA path uses.
    /// </summary>
    public static string CompilePtx(ComputeDevice device, SimtTile tile, int variant = AKContiguousBit)
    {
        var entry = ILGPU.Backends.EntryPoints.EntryPointDescription.FromExplicitlyGroupedKernel(TiledMethod(tile, variant));
        var specialization = Specialization(tile);
        if (device.Accelerator is ILGPU.Runtime.Cuda.CudaAccelerator cuda)
            return ((ILGPU.Backends.PTX.PTXCompiledKernel)cuda.Backend.Compile(entry, specialization)).PTXAssembly;
        using var backend = new ILGPU.Backends.PTX.PTXBackend(device.Context, ILGPU.Runtime.Cuda.CudaArchitecture.SM_90, ILGPU.Runtime.Cuda.CudaInstructionSet.ISA_88, null!);
        return ((ILGPU.Backends.PTX.PTXCompiledKernel)backend.Compile(entry, specialization)).PTXAssembly;
    }

    /// <summary>
    /// The portable twin: thread-private 4×4 blocks of C (TilesM × TilesN blocks per output matrix, block side
    /// <see cref="MicroTile"/>), read from global memory, no shared memory, no barriers.
    /// </summary>
    private static void BlockedKernel(FloatView a, FloatView b, FloatView c, FloatView bias, GemmParams p)
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
            var e = ColumnBias(bias, p, n0); // the block's 4 columns' bias, read once for its 4 rows
            // The tiled kernel's row store as an edge tile with one N sub-block (CVector is 0 here: scalar stores).
            StoreRow(c, p, cBase, m0, n0, 0, false, false, e, e, c00, c01, c02, c03, 0, 0, 0, 0);
            StoreRow(c, p, cBase, m0 + 1, n0, 0, false, false, e, e, c10, c11, c12, c13, 0, 0, 0, 0);
            StoreRow(c, p, cBase, m0 + 2, n0, 0, false, false, e, e, c20, c21, c22, c23, 0, 0, 0, 0);
            StoreRow(c, p, cBase, m0 + 3, n0, 0, false, false, e, e, c30, c31, c32, c33, 0, 0, 0, 0);
        }
    }

    /// <summary>
    /// C[i] = alpha·v (+ C[i]) (+ e, the column's bias, with one): the old C and the bias are added in float32 and
    /// the result rounded once if C is bf16.
    /// </summary>
    private static void StoreOne(FloatView c, GemmParams p, long rowBase, int q, float v, float e)
    {
        if (q >= p.N) return;
        long i = rowBase + q;
        float r = p.Alpha * v;
        if (p.Accumulate != 0) r = c.Load(i) + r;
        if (p.HasBias != 0) r += e;
        c.Store(i, r);
    }

    /// <summary>Float64 CPU references.</summary>
    public static class Reference
    {
        /// <summary>
        /// The GEMM on flat arrays with the same addressing as <see cref="MatrixOperand"/>: updates <paramref name="c"/>
        /// in place (C = alpha·op(A)·op(B) (+ C) (+ bias[j] in column j); a C batch stride of 0 with batch &gt; 1 sums
        /// the batch products).
        /// </summary>
        public static void Gemm(double[] a, long aOffset, int lda, long aBatch, bool transA,
            double[] b, long bOffset, int ldb, long bBatch, bool transB,
            double[] c, long cOffset, int ldc, long cBatch,
            int m, int n, int k, int batch, double alpha = 1, bool accumulate = false, double[]? bias = null)
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
                        c[ci] = (accumulate ? c[ci] + v : v) + (bias is null ? 0 : bias[j]);
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
