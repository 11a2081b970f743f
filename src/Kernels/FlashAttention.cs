using System.Runtime.CompilerServices;
using ILGPU;
using ILGPU.Runtime;
using Memopt.Tensors;

namespace Memopt.Kernels;

/// <summary>
/// Causal multi-head attention computed tile by tile, straight from the fused projection qkv [B, T, 3C] (C = H·hd;
/// q = columns [0, C), k = [C, 2C), v = [2C, 3C); head h at h·hd within each) to y [B, T, C] in merged-head layout:
///   y_i = Σ_j P_ij v_j,  P_ij = exp(s·q_i·k_j − L_i),  L_i = log Σ_visible exp(s·q_i·k_j)  (s = 1/√hd),
/// query i seeing keys j with i − W &lt; j ≤ i (flash-attn's window_size = (W − 1, 0); no window = plain causal).
/// Nothing of size T² ever reaches memory: the forward keeps y and the per-row log-sum-exp L [B, H, T] (fp32), and the
/// backward (FlashAttention-2) recomputes P from q, k and L:
///   D_i = Σ_d dy_id·y_id,  dP = dy·vᵀ,  dS = P ∘ (dP − D),  dv = Pᵀ·dy,  dk = s·dSᵀ·q,  dq = s·dS·k,
/// all three added (+=) into d(qkv). Work is O(T·min(T, W)·hd): key tiles that a query tile cannot see (above the
/// diagonal, or wholly before the window) are never visited.
///
/// Cooperative form (CUDA): a group of tx² threads (tx = 16 on CUDA, 4 on the CPU accelerator) works on 4tx × 4tx
/// tiles (64 × 64; tile = 4tx), each thread owning a 4 × 4 register block (rows row + i·tx, columns col + j·tx).
///   Forward: a group owns (b, h, a tile of 64 queries, a chunk of 64 output dims; hd ≤ 64 is one chunk). For every
///   visible key tile it forms S = Q·Kᵀ from 32-dim slices of Q and K staged in shared memory (column-major, pitch 65),
///   masks it, does the online softmax in registers (the row maximum across the tx threads of a row by warp shuffles,
///   each thread keeping its partial row sum), writes P to shared memory (64 × 65) and adds P·V from 32-key slices of V.
///   Shared: 2 × 32 × 65 + 64 × 65 floats = 33 KB, static. At the end y = O / l and L = m + log l.
///   Backward: a group owns (b, h, a tile of 64 keys, a chunk of 64 dims) and keeps dK and dV in registers. For every
///   query tile that sees its keys it recomputes S and dP together from 16-dim slices of q, k, dy, v; forms P and dS in
///   registers; stores P in shared memory and adds Pᵀ·dy into dV; then stores dS in the same buffer and adds dSᵀ·q into
///   dK and dS·k into a register block of dQ, which it adds to global memory with atomics (dQ rows are shared by every
///   key tile, and atomics cost 4096 adds per 64 × 64 tile pair against ~800 K multiply-adds of recompute: cheaper than
///   a second pass over query tiles that would recompute S and dP again). dK and dV have one owner and are written once
///   (+=). Shared: 64 × 65 + 2 × 32 × 65 floats = 33 KB. D is a separate pass, one thread per (b, t, h).
/// Portable form (the CPU accelerator, no barriers): forward one thread per (b, h, query) running the online softmax
/// over its visible keys with an hd-long accumulator in local memory; backward one launch in which the first B·H·T
/// threads each own a dq row (walking its keys) and the next B·H·T each own a dk and dv row (walking the queries that
/// see it), recomputing P from L: no atomics, each gradient row has one writer.
/// Dtypes: qkv and y float32 or bfloat16 (y takes qkv's dtype); dy and d(qkv) float32 or bfloat16 each; L, D and all
/// arithmetic float32. A bf16 d(qkv) on the cooperative path gets dq through an fp32 scratch (no bf16 atomics).
/// Tensor cores: for a bf16 qkv (and bf16 dy) with head dim 32 or 64 on a CUDA GPU with bf16 tensor cores (compute
/// capability ≥ 8), Forward and Backward run <see cref="FlashAttentionTensorCore"/> in place of the cooperative kernels
/// (the same outputs, saved tensors and scratch: D, and the fp32 dq for a bf16 d(qkv); P and dS are rounded to bf16
/// for the mma products); <see cref="FlashAttentionTensorCore.PathFor"/> says which path runs and
/// <see cref="FlashAttentionTensorCore.Use"/> forces one.
/// </summary>
public static class FlashAttention
{
    /// <summary>Largest head dim: the portable kernels keep hd-long rows in local memory of this size.</summary>
    public const int MaxHeadDim = 128;
    /// <summary>Largest tile side (4 × 16 threads); shared arrays are sized for it.</summary>
    private const int MaxTile = 64;
    /// <summary>Shared row pitch: 65 floats put the rows of a column in different banks.</summary>
    private const int Pitch = MaxTile + 1;
    /// <summary>Slice of the forward's dims (S = Q·Kᵀ) and of the keys/queries in the P·V, Pᵀ·dy, dSᵀ·q, dS·k products.</summary>
    private const int Slice = 32;
    /// <summary>Slice of dims in the backward's S and dP products: four operands of 16 × 65 fill the 2 × 32 × 65 buffer.</summary>
    private const int BackwardDimSlice = 16;
    private const int Micro = 4;
    /// <summary>Score of a masked entry (and the running max of a row that has seen nothing): exp(NegBig − m) = 0.</summary>
    private const float NegBig = -1e30f;

    /// <summary>Kernel arguments (public because ILGPU's CPU backend must see the type).</summary>
    public struct Params
    {
        public int Batch, T, Heads, HeadDim, C, Window;
        /// <summary>3C: elements between rows of qkv (and of d(qkv)).</summary>
        public long RowStride;
        /// <summary>Elements between rows of the dq target (3C when it is d(qkv) itself, C for the fp32 scratch).</summary>
        public long DqStride;
        public float Scale;
        /// <summary>Cooperative layout: tx threads per row of a group, tile = 4·tx, slice = min(32, tile), tile counts.</summary>
        public int Tx, Tile, Slice, Tiles, DChunks;
        /// <summary>1 where the tensor holds bfloat16 words.</summary>
        public int QkvBf16, GradOutBf16, GradBf16;
    }

    /// <summary>Checks qkv [B, T, 3·H·hd] (float32 or bfloat16), heads and window; returns y's shape [B, T, H·hd].</summary>
    public static Shape CheckArguments(string op, Tensor qkv, int heads, int? window)
    {
        var s = qkv.Shape;
        Check.That(qkv.DType is DType.F32 or DType.BF16, op, $"qkv {s} is {qkv.DType.Name()}, expected float32 or bfloat16");
        Check.That(s.Rank == 3, op, $"qkv {s} must be [B, T, 3·C]");
        Check.That(heads >= 1, op, $"heads = {heads} must be ≥ 1 (qkv {s})");
        Check.That(s[0] >= 1 && s[1] >= 1, op, $"qkv {s} must have B ≥ 1 and T ≥ 1");
        Check.That(s.Last % (3 * heads) == 0 && s.Last > 0, op, $"qkv {s}: the last dimension must be 3·heads·head_dim with heads = {heads}");
        int hd = s.Last / (3 * heads);
        Check.That(hd <= MaxHeadDim, op, $"qkv {s} with {heads} heads has head_dim {hd}; at most {MaxHeadDim} is supported");
        Check.That(window is null || window >= 1, op, $"window = {window} must be ≥ 1 (qkv {s})");
        Check.That((long)s[0] * heads * s[1] * 2 <= int.MaxValue, op, $"qkv {s}: B·H·T rows overflow");
        return new Shape(s[0], s[1], s.Last / 3);
    }

    /// <summary>y [B, T, C] (qkv's dtype) and lse [B, H, T] (float32) from qkv [B, T, 3C].</summary>
    public static void Forward(Tensor qkv, int heads, int? window, Tensor y, Tensor lse)
    {
        CheckForward("flash_attention", qkv, heads, window, y, lse);
        if (FlashAttentionTensorCore.TryForward(qkv, heads, window, y, lse)) return;
        var device = qkv.Device;
        bool cooperative = Launch.Cooperative(device);
        var p = Layout(device, qkv, heads, window, cooperative);
        var (qf, qh) = Views(qkv, lse);
        var (yf, yh) = Views(y, lse);
        if (cooperative)
        {
            var k = device.Kernel("flash_attention.fwd", acc => acc.LoadStreamKernel<ArrayView<float>, ArrayView<ushort>, ArrayView<float>, ArrayView<ushort>, ArrayView<float>, Params>(ForwardKernel));
            k(TileConfig(device, p), qf, qh, yf, yh, lse.F32, p);
            return;
        }
        var serial = device.Kernel("flash_attention.fwd_thread_per_row", acc => acc.LoadStreamKernel<ArrayView<float>, ArrayView<ushort>, ArrayView<float>, ArrayView<ushort>, ArrayView<float>, Params>(ForwardRowKernel));
        serial(Launch.ThreadPerRow(device, (long)p.Batch * p.Heads * p.T), qf, qh, yf, yh, lse.F32, p);
    }

    /// <summary>
    /// d(qkv) += the gradient of attention given the forward's qkv, y and lse and the output gradient dy [B, T, C].
    /// dy and dqkv may each be float32 or bfloat16.
    /// </summary>
    public static void Backward(Tensor qkv, Tensor y, Tensor lse, Tensor dy, int heads, int? window, Tensor dqkv)
    {
        const string op = "flash_attention_backward";
        var yShape = CheckArguments(op, qkv, heads, window);
        Check.That(y.Shape.Equals(yShape) && y.DType == qkv.DType, op, $"y {y.Shape} {y.DType.Name()} must be {yShape} {qkv.DType.Name()} for qkv {qkv.Shape}");
        Check.That(dy.Shape.Equals(yShape) && dy.DType is DType.F32 or DType.BF16, op, $"dy {dy.Shape} {dy.DType.Name()} must be {yShape}, float32 or bfloat16");
        Check.That(dqkv.Shape.Equals(qkv.Shape) && dqkv.DType is DType.F32 or DType.BF16, op, $"d(qkv) {dqkv.Shape} {dqkv.DType.Name()} must be {qkv.Shape}, float32 or bfloat16");
        CheckLse(op, lse, qkv, heads);
        foreach (var t in new[] { y, lse, dy, dqkv }) Check.SameDevice(op, qkv, t);
        var device = qkv.Device;
        // The tensor-core kernel (null: the SIMT kernels) takes the cooperative path's place and memory (D; for a bf16
        // d(qkv) the fp32 dq scratch).
        bool? tensorCores = FlashAttentionTensorCore.BackwardChoice(qkv, heads, dy, dqkv);
        bool cooperative = Launch.Cooperative(device) || tensorCores is not null;
        var p = Layout(device, qkv, heads, window, cooperative);
        p.GradOutBf16 = dy.DType == DType.BF16 ? 1 : 0;
        p.GradBf16 = dqkv.DType == DType.BF16 ? 1 : 0;
        var (qf, qh) = Views(qkv, lse);
        var (yf, yh) = Views(y, lse);
        var (gf, gh) = Views(dy, lse);
        var (df, dh) = Views(dqkv, lse);
        long rows = (long)p.Batch * p.Heads * p.T;

        using var delta = Tensor.Empty(device, lse.Shape, DType.F32, MemoryCategory.Workspace, op + ".delta");
        var deltaQuads = p.HeadDim % 4 == 0 ? Quads.KindOf(y, dy) : QuadKind.Scalar;
        if (deltaQuads == QuadKind.Bf16)
            DeltaQuads(device, "flash_attention.delta_bf16x4", Bf16Quads.Of(y), Bf16Quads.Of(dy), delta, p, rows);
        else if (deltaQuads == QuadKind.F32)
            DeltaQuads(device, "flash_attention.delta_f32x4", F32Quads.Of(y), F32Quads.Of(dy), delta, p, rows);
        else
        {
            var dk = device.Kernel("flash_attention.delta", acc => acc.LoadStreamKernel<ArrayView<float>, ArrayView<ushort>, ArrayView<float>, ArrayView<ushort>, ArrayView<float>, Params>(DeltaKernel));
            dk(Launch.ThreadPerRow(device, rows), yf, yh, gf, gh, delta.F32, p);
        }

        if (!cooperative)
        {
            var serial = device.Kernel("flash_attention.bwd_thread_per_row", acc => acc.LoadStreamKernel<ArrayView<float>, ArrayView<ushort>, ArrayView<float>, ArrayView<ushort>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<ushort>, Params>(BackwardRowKernel));
            serial(Launch.ThreadPerRow(device, 2 * rows), qf, qh, gf, gh, lse.F32, delta.F32, df, dh, p);
            return;
        }
        // Adds dq (scale·dS·k) into dqTarget with atomics, dk and dv into d(qkv).
        void Run(Tensor dqTarget)
        {
            if (tensorCores is bool emulate)
            {
                FlashAttentionTensorCore.RunBackward(qkv, lse, delta, dy, heads, window, dqkv, dqTarget, p.DqStride, emulate);
                return;
            }
            var k = device.Kernel("flash_attention.bwd", acc => acc.LoadStreamKernel<ArrayView<float>, ArrayView<ushort>, ArrayView<float>, ArrayView<ushort>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<ushort>, ArrayView<float>, Params>(BackwardKernel));
            k(TileConfig(device, p), qf, qh, gf, gh, lse.F32, delta.F32, df, dh, dqTarget.F32, p);
        }
        if (p.GradBf16 == 0)
        {
            p.DqStride = p.RowStride;
            Run(dqkv);
            return;
        }
        // No bf16 atomics: dq gathers in an fp32 scratch, added (rounded once) into the bf16 d(qkv) afterwards.
        using var dq = Tensor.Zeros(device, yShape, DType.F32, MemoryCategory.Workspace, op + ".dq");
        p.DqStride = p.C;
        Run(dq);
        if (p.C % 4 == 0 && F32Quads.Fits(dq) && Bf16Quads.Fits(dqkv) && dq.Numel <= int.MaxValue)
        {
            var quads = device.Kernel("flash_attention.add_dq_bf16x4", acc => acc.LoadStreamKernel<F32Quads, Bf16Quads, int, int, int>(AddDqQuadKernel));
            quads(Launch.Elementwise(device, dq.Numel / 4), F32Quads.Of(dq), Bf16Quads.Of(dqkv), p.C / 4, (int)(p.RowStride / 4), (int)(dq.Numel / 4));
            return;
        }
        var add = device.Kernel("flash_attention.add_dq_bf16", acc => acc.LoadStreamKernel<ArrayView<float>, ArrayView<ushort>, Params>(AddDqBf16Kernel));
        add(Launch.Elementwise(device, dq.Numel), dq.F32, dh, p);
    }

    // The two small passes around the backward kernels, four values per access and 32-bit index math where the shapes
    // and alignment allow (the same sums in the same order): one 2-byte access at a time and a 64-bit division per
    // element held them to 14 and 18 µs a call in the bf16 + flash step on the H100 (b32).

    private static void DeltaQuads<TQuads>(ComputeDevice device, string key, TQuads y, TQuads dy, Tensor delta, Params p, long rows) where TQuads : struct, IQuads
    {
        var k = device.Kernel(key, acc => acc.LoadStreamKernel<TQuads, TQuads, ArrayView<float>, Params>(DeltaQuadKernel));
        k(Launch.ThreadPerRow(device, rows), y, dy, delta.F32, p);
    }

    /// <summary><see cref="DeltaKernel"/> a quad at a time: each row's products added one by one in the same order.</summary>
    private static void DeltaQuadKernel<TQuads>(TQuads y, TQuads dy, ArrayView<float> delta, Params p) where TQuads : struct, IQuads
    {
        int stride = Grid.DimX * Group.DimX;
        int rows = p.Batch * p.T * p.Heads;
        int quads = p.HeadDim / 4;
        for (int idx = Grid.GlobalIndex.X; idx < rows; idx += stride)
        {
            int h = idx % p.Heads;
            int bt = idx / p.Heads;
            int b = bt / p.T, i = bt - b * p.T;
            long start = ((long)bt * p.C + h * p.HeadDim) / 4;
            float sum = 0f;
            for (int d = 0; d < quads; d++)
            {
                var g = dy.Load(start + d);
                var v = y.Load(start + d);
                sum += g.X * v.X;
                sum += g.Y * v.Y;
                sum += g.Z * v.Z;
                sum += g.W * v.W;
            }
            delta[((long)b * p.Heads + h) * p.T + i] = sum;
        }
    }

    /// <summary><see cref="AddDqBf16Kernel"/> a quad at a time (C and 3C multiples of 4).</summary>
    private static void AddDqQuadKernel(F32Quads dq, Bf16Quads dqkv, int quadsPerRow, int rowStrideQuads, int quads)
    {
        int stride = Grid.DimX * Group.DimX;
        for (int q = Grid.GlobalIndex.X; q < quads; q += stride)
        {
            int bt = q / quadsPerRow;
            long target = (long)bt * rowStrideQuads + (q - bt * quadsPerRow);
            var d = dqkv.Load(target);
            var g = dq.Load(q);
            dqkv.Store(target, d + g);
        }
    }

    /// <summary>The forward's argument checks: qkv, heads and window, y [B, T, C] in qkv's dtype, lse [B, H, T] float32, one device.</summary>
    internal static void CheckForward(string op, Tensor qkv, int heads, int? window, Tensor y, Tensor lse)
    {
        var yShape = CheckArguments(op, qkv, heads, window);
        Check.That(y.Shape.Equals(yShape) && y.DType == qkv.DType, op, $"output {y.Shape} {y.DType.Name()} must be {yShape} {qkv.DType.Name()} for qkv {qkv.Shape}");
        CheckLse(op, lse, qkv, heads);
        Check.SameDevice(op, qkv, y);
        Check.SameDevice(op, qkv, lse);
    }

    private static void CheckLse(string op, Tensor lse, Tensor qkv, int heads)
    {
        var want = new Shape(qkv.Shape[0], heads, qkv.Shape[1]);
        Check.That(lse.Shape.Equals(want) && lse.DType == DType.F32, op, $"lse {lse.Shape} {lse.DType.Name()} must be {want} float32 for qkv {qkv.Shape}");
    }

    /// <summary>
    /// A tensor as the (float, bf16) view pair the kernels take: the real view for its dtype and, for the other, a
    /// stand-in the kernels never read (the float32 <paramref name="f32"/> reinterpreted, always valid).
    /// </summary>
    private static (ArrayView<float> F, ArrayView<ushort> H) Views(Tensor t, Tensor f32) =>
        t.DType == DType.BF16 ? (f32.F32, t.BF16) : (t.F32, f32.Raw.Cast<ushort>());

    private static Params Layout(ComputeDevice device, Tensor qkv, int heads, int? window, bool cooperative)
    {
        int b = qkv.Shape[0], t = qkv.Shape[1], c = qkv.Shape.Last / 3, hd = c / heads;
        var p = new Params
        {
            Batch = b, T = t, Heads = heads, HeadDim = hd, C = c,
            Window = window is int w && w < t ? w : t,
            RowStride = 3L * c, DqStride = 3L * c,
            Scale = 1f / MathF.Sqrt(hd),
            QkvBf16 = qkv.DType == DType.BF16 ? 1 : 0,
        };
        if (cooperative)
        {
            // tx² threads with tx a power of two: 4tx ≤ 64, and a row's tx threads inside one warp (row shuffles).
            int group = Launch.GroupSize(device, 256), warp = device.Accelerator.WarpSize, tx = 1;
            while ((tx * 2) * (tx * 2) <= group && tx * 2 * Micro <= MaxTile && tx * 2 <= warp) tx *= 2;
            p.Tx = tx;
            p.Tile = tx * Micro;
            p.Slice = Math.Min(Slice, p.Tile);
            p.Tiles = (t + p.Tile - 1) / p.Tile;
            p.DChunks = (hd + p.Tile - 1) / p.Tile;
        }
        return p;
    }

    /// <summary>Groups of tx² threads; on CUDA a few groups per multiprocessor (33 KB of shared memory each), on the CPU one per core.</summary>
    private static KernelConfig TileConfig(ComputeDevice device, Params p)
    {
        long items = (long)p.Batch * p.Heads * p.Tiles * p.DChunks;
        long maxGroups = device.IsCuda ? device.Multiprocessors * 6L : Math.Max(1, device.Multiprocessors);
        return new KernelConfig((int)Math.Clamp(items, 1, maxGroups), p.Tx * p.Tx);
    }

    // ---------------------------------------------------------------------------------------------------------------
    // Element access in either dtype (the flag is uniform across a launch).

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static float Load(ArrayView<float> f, ArrayView<ushort> h, int bf16, long i) => bf16 != 0 ? BFloat16.ToFloat(h[i]) : f[i];

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Store(ArrayView<float> f, ArrayView<ushort> h, int bf16, long i, float v)
    {
        if (bf16 != 0) h[i] = BFloat16.FromFloat(v);
        else f[i] = v;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void AddTo(ArrayView<float> f, ArrayView<ushort> h, int bf16, long i, float v)
    {
        if (bf16 != 0) h[i] = BFloat16.FromFloat(BFloat16.ToFloat(h[i]) + v);
        else f[i] += v;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static bool Visible(int query, int key, int t, int window) => query < t && key <= query && key > query - window;

    /// <summary>The scaled score, or <see cref="NegBig"/> where the mask hides it.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static float Masked(float s, int query, int key, int t, int window, float scale) =>
        Visible(query, key, t, window) ? s * scale : NegBig;

    /// <summary>exp(s − m) for a visible score, exactly 0 for a masked one (also when the row has seen nothing yet).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static float Prob(float s, float m) => s > NegBig ? MathF.Exp(s - m) : 0f;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static float Max4(float a, float b, float c, float d) => MathF.Max(MathF.Max(a, b), MathF.Max(c, d));


    /// <summary>
    /// Stages rows [r0, r0 + rows) × columns [col, col + cols) of a row-major source (row stride <paramref name="stride"/>,
    /// starting at <paramref name="origin"/>) column-major into shared memory: dst[offset + c·Pitch + r]. Reads run
    /// along columns (coalesced); rows at or past <paramref name="limit"/> are zero.
    /// </summary>
    private static void LoadColumnMajor(ArrayView<float> f, ArrayView<ushort> h, int bf16, ArrayView<float> dst, int offset,
        long origin, long stride, int r0, int limit, int col, int rows, int cols, int tid, int threads)
    {
        int n = rows * cols;
        for (int e = tid; e < n; e += threads)
        {
            int c = e % cols, r = e / cols;
            bool inside = r0 + r < limit;
            // Read a valid element either way (no speculative out-of-range load), then zero-fill.
            float v = Load(f, h, bf16, inside ? origin + (r0 + r) * stride + col + c : origin);
            dst[offset + c * Pitch + r] = inside ? v : 0f;
        }
    }

    /// <summary>
    /// Stages rows [r0, r0 + rows) × columns [col, col + cols) row-major into shared memory: dst[offset + r·Pitch + c];
    /// zero past row <paramref name="limit"/> or column col + <paramref name="colLimit"/>.
    /// </summary>
    private static void LoadRowMajor(ArrayView<float> f, ArrayView<ushort> h, int bf16, ArrayView<float> dst, int offset,
        long origin, long stride, int r0, int limit, int col, int colLimit, int rows, int cols, int tid, int threads)
    {
        int n = rows * cols;
        for (int e = tid; e < n; e += threads)
        {
            int c = e % cols, r = e / cols;
            bool inside = r0 + r < limit && c < colLimit;
            float v = Load(f, h, bf16, inside ? origin + (r0 + r) * stride + col + c : origin);
            dst[offset + r * Pitch + c] = inside ? v : 0f;
        }
    }

    // ---------------------------------------------------------------------------------------------------------------
    // Cooperative forward.

    private static void ForwardKernel(ArrayView<float> qkvF, ArrayView<ushort> qkvH, ArrayView<float> yF, ArrayView<ushort> yH,
        ArrayView<float> lse, Params p)
    {
        int tid = Group.IdxX;
        int threads = Group.DimX;
        int firstItem = Grid.IdxX;
        int gridSize = Grid.DimX;
        var sa = SharedMemory.Allocate<float>(Slice * Pitch);   // Q slice [dim][query], then V slice [key][dim]
        var sb = SharedMemory.Allocate<float>(Slice * Pitch);   // K slice [dim][key]
        var sp = SharedMemory.Allocate<float>(MaxTile * Pitch); // P [query][key]

        int tx = p.Tx, tile = p.Tile, sl = p.Slice, hd = p.HeadDim, t = p.T, w = p.Window;
        float scale = p.Scale;
        int col = tid % tx, row = tid / tx;
        int pr0 = row * Pitch, pr1 = (row + tx) * Pitch, pr2 = (row + 2 * tx) * Pitch, pr3 = (row + 3 * tx) * Pitch;
        long items = (long)p.Batch * p.Heads * p.Tiles * p.DChunks;

        for (long item = firstItem; item < items; item += gridSize)
        {
            int dc = (int)(item % p.DChunks);
            long rest = item / p.DChunks;
            int qt = p.Tiles - 1 - (int)(rest % p.Tiles); // the longest (last) query tiles first
            rest /= p.Tiles;
            int h = (int)(rest % p.Heads);
            int b = (int)(rest / p.Heads);
            int q0 = qt * tile, d0 = dc * tile;
            long origin = (long)b * t * p.RowStride;
            int qCol = h * hd, kCol = p.C + h * hd, vCol = 2 * p.C + h * hd;
            int qEnd = Math.Min(q0 + tile, t);
            int kStart = Math.Max(0, q0 - w + 1) / tile * tile;
            int dWidth = Math.Min(tile, hd - d0);
            bool half = dWidth <= 2 * tx;
            int r0 = q0 + row, r1 = r0 + tx, r2 = r0 + 2 * tx, r3 = r0 + 3 * tx;

            float m0 = NegBig, m1 = NegBig, m2 = NegBig, m3 = NegBig;
            float l0 = 0, l1 = 0, l2 = 0, l3 = 0;
            float o00 = 0, o01 = 0, o02 = 0, o03 = 0, o10 = 0, o11 = 0, o12 = 0, o13 = 0;
            float o20 = 0, o21 = 0, o22 = 0, o23 = 0, o30 = 0, o31 = 0, o32 = 0, o33 = 0;

            for (int k0 = kStart; k0 < qEnd; k0 += tile)
            {
                // S = Q·Kᵀ for this (query tile, key tile), over dims in slices.
                float s00 = 0, s01 = 0, s02 = 0, s03 = 0, s10 = 0, s11 = 0, s12 = 0, s13 = 0;
                float s20 = 0, s21 = 0, s22 = 0, s23 = 0, s30 = 0, s31 = 0, s32 = 0, s33 = 0;
                for (int ds = 0; ds < hd; ds += Slice)
                {
                    int dn = Math.Min(Slice, hd - ds);
                    LoadColumnMajor(qkvF, qkvH, p.QkvBf16, sa, 0, origin, p.RowStride, q0, t, qCol + ds, tile, dn, tid, threads);
                    LoadColumnMajor(qkvF, qkvH, p.QkvBf16, sb, 0, origin, p.RowStride, k0, t, kCol + ds, tile, dn, tid, threads);
                    Group.Barrier();
                    for (int dd = 0; dd < dn; dd++)
                    {
                        int ra = dd * Pitch + row, rb = dd * Pitch + col;
                        float a0 = sa[ra], a1 = sa[ra + tx], a2 = sa[ra + 2 * tx], a3 = sa[ra + 3 * tx];
                        float b0 = sb[rb], b1 = sb[rb + tx], b2 = sb[rb + 2 * tx], b3 = sb[rb + 3 * tx];
                        s00 += a0 * b0; s01 += a0 * b1; s02 += a0 * b2; s03 += a0 * b3;
                        s10 += a1 * b0; s11 += a1 * b1; s12 += a1 * b2; s13 += a1 * b3;
                        s20 += a2 * b0; s21 += a2 * b1; s22 += a2 * b2; s23 += a2 * b3;
                        s30 += a3 * b0; s31 += a3 * b1; s32 += a3 * b2; s33 += a3 * b3;
                    }
                    Group.Barrier();
                }

                // Mask and scale, then the online softmax: new row max, rescale of what was accumulated, P.
                int c0 = k0 + col, c1 = c0 + tx, c2 = c0 + 2 * tx, c3 = c0 + 3 * tx;
                s00 = Masked(s00, r0, c0, t, w, scale); s01 = Masked(s01, r0, c1, t, w, scale); s02 = Masked(s02, r0, c2, t, w, scale); s03 = Masked(s03, r0, c3, t, w, scale);
                s10 = Masked(s10, r1, c0, t, w, scale); s11 = Masked(s11, r1, c1, t, w, scale); s12 = Masked(s12, r1, c2, t, w, scale); s13 = Masked(s13, r1, c3, t, w, scale);
                s20 = Masked(s20, r2, c0, t, w, scale); s21 = Masked(s21, r2, c1, t, w, scale); s22 = Masked(s22, r2, c2, t, w, scale); s23 = Masked(s23, r2, c3, t, w, scale);
                s30 = Masked(s30, r3, c0, t, w, scale); s31 = Masked(s31, r3, c1, t, w, scale); s32 = Masked(s32, r3, c2, t, w, scale); s33 = Masked(s33, r3, c3, t, w, scale);
                float n0 = MathF.Max(m0, WarpReduce.Max(Max4(s00, s01, s02, s03), tx));
                float n1 = MathF.Max(m1, WarpReduce.Max(Max4(s10, s11, s12, s13), tx));
                float n2 = MathF.Max(m2, WarpReduce.Max(Max4(s20, s21, s22, s23), tx));
                float n3 = MathF.Max(m3, WarpReduce.Max(Max4(s30, s31, s32, s33), tx));
                float a0s = MathF.Exp(m0 - n0), a1s = MathF.Exp(m1 - n1), a2s = MathF.Exp(m2 - n2), a3s = MathF.Exp(m3 - n3);
                m0 = n0; m1 = n1; m2 = n2; m3 = n3;
                s00 = Prob(s00, n0); s01 = Prob(s01, n0); s02 = Prob(s02, n0); s03 = Prob(s03, n0);
                s10 = Prob(s10, n1); s11 = Prob(s11, n1); s12 = Prob(s12, n1); s13 = Prob(s13, n1);
                s20 = Prob(s20, n2); s21 = Prob(s21, n2); s22 = Prob(s22, n2); s23 = Prob(s23, n2);
                s30 = Prob(s30, n3); s31 = Prob(s31, n3); s32 = Prob(s32, n3); s33 = Prob(s33, n3);
                l0 = l0 * a0s + (s00 + s01) + (s02 + s03);
                l1 = l1 * a1s + (s10 + s11) + (s12 + s13);
                l2 = l2 * a2s + (s20 + s21) + (s22 + s23);
                l3 = l3 * a3s + (s30 + s31) + (s32 + s33);
                o00 *= a0s; o01 *= a0s; o02 *= a0s; o03 *= a0s;
                o10 *= a1s; o11 *= a1s; o12 *= a1s; o13 *= a1s;
                o20 *= a2s; o21 *= a2s; o22 *= a2s; o23 *= a2s;
                o30 *= a3s; o31 *= a3s; o32 *= a3s; o33 *= a3s;
                sp[pr0 + col] = s00; sp[pr0 + col + tx] = s01; sp[pr0 + col + 2 * tx] = s02; sp[pr0 + col + 3 * tx] = s03;
                sp[pr1 + col] = s10; sp[pr1 + col + tx] = s11; sp[pr1 + col + 2 * tx] = s12; sp[pr1 + col + 3 * tx] = s13;
                sp[pr2 + col] = s20; sp[pr2 + col + tx] = s21; sp[pr2 + col + 2 * tx] = s22; sp[pr2 + col + 3 * tx] = s23;
                sp[pr3 + col] = s30; sp[pr3 + col + tx] = s31; sp[pr3 + col + 2 * tx] = s32; sp[pr3 + col + 3 * tx] = s33;

                // O += P·V over the tile's keys in slices (the first barrier also publishes P).
                for (int ks = 0; ks < tile; ks += sl)
                {
                    LoadRowMajor(qkvF, qkvH, p.QkvBf16, sa, 0, origin, p.RowStride, k0 + ks, t, vCol + d0, dWidth, sl, tile, tid, threads);
                    Group.Barrier();
                    for (int kk = 0; kk < sl; kk++)
                    {
                        int key = ks + kk, vb = kk * Pitch + col;
                        float p0 = sp[pr0 + key], p1 = sp[pr1 + key], p2 = sp[pr2 + key], p3 = sp[pr3 + key];
                        float v0 = sa[vb], v1 = sa[vb + tx];
                        o00 += p0 * v0; o01 += p0 * v1;
                        o10 += p1 * v0; o11 += p1 * v1;
                        o20 += p2 * v0; o21 += p2 * v1;
                        o30 += p3 * v0; o31 += p3 * v1;
                        if (!half)
                        {
                            float v2 = sa[vb + 2 * tx], v3 = sa[vb + 3 * tx];
                            o02 += p0 * v2; o03 += p0 * v3;
                            o12 += p1 * v2; o13 += p1 * v3;
                            o22 += p2 * v2; o23 += p2 * v3;
                            o32 += p3 * v2; o33 += p3 * v3;
                        }
                    }
                    Group.Barrier();
                }
            }

            // Each thread summed P over its own columns only: the row's total is the sum over its tx threads.
            l0 = WarpReduce.Sum(l0, tx); l1 = WarpReduce.Sum(l1, tx); l2 = WarpReduce.Sum(l2, tx); l3 = WarpReduce.Sum(l3, tx);
            int yCol = h * hd + d0 + col;
            StoreOutputRow(yF, yH, p, b, r0, yCol, dWidth, col, tx, 1f / l0, o00, o01, o02, o03);
            StoreOutputRow(yF, yH, p, b, r1, yCol, dWidth, col, tx, 1f / l1, o10, o11, o12, o13);
            StoreOutputRow(yF, yH, p, b, r2, yCol, dWidth, col, tx, 1f / l2, o20, o21, o22, o23);
            StoreOutputRow(yF, yH, p, b, r3, yCol, dWidth, col, tx, 1f / l3, o30, o31, o32, o33);
            if (dc == 0 && col == 0)
            {
                long lseRow = ((long)b * p.Heads + h) * t;
                if (r0 < t) lse[lseRow + r0] = m0 + MathF.Log(l0);
                if (r1 < t) lse[lseRow + r1] = m1 + MathF.Log(l1);
                if (r2 < t) lse[lseRow + r2] = m2 + MathF.Log(l2);
                if (r3 < t) lse[lseRow + r3] = m3 + MathF.Log(l3);
            }
        }
    }

    /// <summary>y[b, r, yCol + j·tx] = o_j · inv for the columns inside the chunk (col + j·tx &lt; width) of a row inside T.</summary>
    private static void StoreOutputRow(ArrayView<float> yF, ArrayView<ushort> yH, Params p, int b, int r, int yCol, int width, int col, int tx,
        float inv, float o0, float o1, float o2, float o3)
    {
        if (r >= p.T) return;
        long rowBase = ((long)b * p.T + r) * p.C + yCol;
        if (col < width) Store(yF, yH, p.QkvBf16, rowBase, o0 * inv);
        if (col + tx < width) Store(yF, yH, p.QkvBf16, rowBase + tx, o1 * inv);
        if (col + 2 * tx < width) Store(yF, yH, p.QkvBf16, rowBase + 2 * tx, o2 * inv);
        if (col + 3 * tx < width) Store(yF, yH, p.QkvBf16, rowBase + 3 * tx, o3 * inv);
    }

    // ---------------------------------------------------------------------------------------------------------------
    // Cooperative backward.

    private static void BackwardKernel(ArrayView<float> qkvF, ArrayView<ushort> qkvH, ArrayView<float> dyF, ArrayView<ushort> dyH,
        ArrayView<float> lse, ArrayView<float> delta, ArrayView<float> dqkvF, ArrayView<ushort> dqkvH, ArrayView<float> dq, Params p)
    {
        int tid = Group.IdxX;
        int threads = Group.DimX;
        int firstItem = Grid.IdxX;
        int gridSize = Grid.DimX;
        var sx = SharedMemory.Allocate<float>(MaxTile * Pitch);     // P, then dS: [query][key]
        var sbuf = SharedMemory.Allocate<float>(2 * Slice * Pitch); // 4 dim slices of 16 (q, k, dy, v), or 2 row slices of 32

        int tx = p.Tx, tile = p.Tile, sl = p.Slice, hd = p.HeadDim, t = p.T, w = p.Window;
        float scale = p.Scale;
        int col = tid % tx, row = tid / tx;
        int pr0 = row * Pitch, pr1 = (row + tx) * Pitch, pr2 = (row + 2 * tx) * Pitch, pr3 = (row + 3 * tx) * Pitch;
        const int kOff = BackwardDimSlice * Pitch, gOff = 2 * BackwardDimSlice * Pitch, vOff = 3 * BackwardDimSlice * Pitch;
        const int second = Slice * Pitch;
        long items = (long)p.Batch * p.Heads * p.Tiles * p.DChunks;

        for (long item = firstItem; item < items; item += gridSize)
        {
            int dc = (int)(item % p.DChunks);
            long rest = item / p.DChunks;
            int kt = (int)(rest % p.Tiles); // the first key tiles are seen by the most queries: they go first
            rest /= p.Tiles;
            int h = (int)(rest % p.Heads);
            int b = (int)(rest / p.Heads);
            int k0 = kt * tile, d0 = dc * tile;
            long origin = (long)b * t * p.RowStride;
            long gOrigin = (long)b * t * p.C;
            int qCol = h * hd, kCol = p.C + h * hd, vCol = 2 * p.C + h * hd, gCol = h * hd;
            int kEnd = Math.Min(k0 + tile, t);
            int qLast = Math.Min(t - 1, kEnd - 1 + w - 1);
            int dWidth = Math.Min(tile, hd - d0);
            bool half = dWidth <= 2 * tx;
            long lseRow = ((long)b * p.Heads + h) * t;
            // This thread's keys (rows of dK, dV) and columns of the S block.
            int kr0 = k0 + row, kr1 = kr0 + tx, kr2 = kr0 + 2 * tx, kr3 = kr0 + 3 * tx;
            int c0 = k0 + col, c1 = c0 + tx, c2 = c0 + 2 * tx, c3 = c0 + 3 * tx;

            float dk00 = 0, dk01 = 0, dk02 = 0, dk03 = 0, dk10 = 0, dk11 = 0, dk12 = 0, dk13 = 0;
            float dk20 = 0, dk21 = 0, dk22 = 0, dk23 = 0, dk30 = 0, dk31 = 0, dk32 = 0, dk33 = 0;
            float dv00 = 0, dv01 = 0, dv02 = 0, dv03 = 0, dv10 = 0, dv11 = 0, dv12 = 0, dv13 = 0;
            float dv20 = 0, dv21 = 0, dv22 = 0, dv23 = 0, dv30 = 0, dv31 = 0, dv32 = 0, dv33 = 0;

            for (int q0 = k0; q0 <= qLast; q0 += tile)
            {
                // Phase 1: S = Q·Kᵀ and dP = dY·Vᵀ together (rows = queries, columns = keys).
                float s00 = 0, s01 = 0, s02 = 0, s03 = 0, s10 = 0, s11 = 0, s12 = 0, s13 = 0;
                float s20 = 0, s21 = 0, s22 = 0, s23 = 0, s30 = 0, s31 = 0, s32 = 0, s33 = 0;
                float g00 = 0, g01 = 0, g02 = 0, g03 = 0, g10 = 0, g11 = 0, g12 = 0, g13 = 0;
                float g20 = 0, g21 = 0, g22 = 0, g23 = 0, g30 = 0, g31 = 0, g32 = 0, g33 = 0;
                for (int ds = 0; ds < hd; ds += BackwardDimSlice)
                {
                    int dn = Math.Min(BackwardDimSlice, hd - ds);
                    LoadColumnMajor(qkvF, qkvH, p.QkvBf16, sbuf, 0, origin, p.RowStride, q0, t, qCol + ds, tile, dn, tid, threads);
                    LoadColumnMajor(qkvF, qkvH, p.QkvBf16, sbuf, kOff, origin, p.RowStride, k0, t, kCol + ds, tile, dn, tid, threads);
                    LoadColumnMajor(dyF, dyH, p.GradOutBf16, sbuf, gOff, gOrigin, p.C, q0, t, gCol + ds, tile, dn, tid, threads);
                    LoadColumnMajor(qkvF, qkvH, p.QkvBf16, sbuf, vOff, origin, p.RowStride, k0, t, vCol + ds, tile, dn, tid, threads);
                    Group.Barrier();
                    for (int dd = 0; dd < dn; dd++)
                    {
                        int ra = dd * Pitch + row, rb = dd * Pitch + col;
                        float a0 = sbuf[ra], a1 = sbuf[ra + tx], a2 = sbuf[ra + 2 * tx], a3 = sbuf[ra + 3 * tx];
                        float b0 = sbuf[kOff + rb], b1 = sbuf[kOff + rb + tx], b2 = sbuf[kOff + rb + 2 * tx], b3 = sbuf[kOff + rb + 3 * tx];
                        s00 += a0 * b0; s01 += a0 * b1; s02 += a0 * b2; s03 += a0 * b3;
                        s10 += a1 * b0; s11 += a1 * b1; s12 += a1 * b2; s13 += a1 * b3;
                        s20 += a2 * b0; s21 += a2 * b1; s22 += a2 * b2; s23 += a2 * b3;
                        s30 += a3 * b0; s31 += a3 * b1; s32 += a3 * b2; s33 += a3 * b3;
                        float e0 = sbuf[gOff + ra], e1 = sbuf[gOff + ra + tx], e2 = sbuf[gOff + ra + 2 * tx], e3 = sbuf[gOff + ra + 3 * tx];
                        float f0 = sbuf[vOff + rb], f1 = sbuf[vOff + rb + tx], f2 = sbuf[vOff + rb + 2 * tx], f3 = sbuf[vOff + rb + 3 * tx];
                        g00 += e0 * f0; g01 += e0 * f1; g02 += e0 * f2; g03 += e0 * f3;
                        g10 += e1 * f0; g11 += e1 * f1; g12 += e1 * f2; g13 += e1 * f3;
                        g20 += e2 * f0; g21 += e2 * f1; g22 += e2 * f2; g23 += e2 * f3;
                        g30 += e3 * f0; g31 += e3 * f1; g32 += e3 * f2; g33 += e3 * f3;
                    }
                    Group.Barrier();
                }

                // P = exp(s·S − L) on visible entries (0 elsewhere); dS = P ∘ (dP − D).
                int r0 = q0 + row, r1 = r0 + tx, r2 = r0 + 2 * tx, r3 = r0 + 3 * tx;
                float L0 = r0 < t ? lse[lseRow + r0] : 0f, L1 = r1 < t ? lse[lseRow + r1] : 0f;
                float L2 = r2 < t ? lse[lseRow + r2] : 0f, L3 = r3 < t ? lse[lseRow + r3] : 0f;
                float D0 = r0 < t ? delta[lseRow + r0] : 0f, D1 = r1 < t ? delta[lseRow + r1] : 0f;
                float D2 = r2 < t ? delta[lseRow + r2] : 0f, D3 = r3 < t ? delta[lseRow + r3] : 0f;
                s00 = Prob(Masked(s00, r0, c0, t, w, scale), L0); s01 = Prob(Masked(s01, r0, c1, t, w, scale), L0);
                s02 = Prob(Masked(s02, r0, c2, t, w, scale), L0); s03 = Prob(Masked(s03, r0, c3, t, w, scale), L0);
                s10 = Prob(Masked(s10, r1, c0, t, w, scale), L1); s11 = Prob(Masked(s11, r1, c1, t, w, scale), L1);
                s12 = Prob(Masked(s12, r1, c2, t, w, scale), L1); s13 = Prob(Masked(s13, r1, c3, t, w, scale), L1);
                s20 = Prob(Masked(s20, r2, c0, t, w, scale), L2); s21 = Prob(Masked(s21, r2, c1, t, w, scale), L2);
                s22 = Prob(Masked(s22, r2, c2, t, w, scale), L2); s23 = Prob(Masked(s23, r2, c3, t, w, scale), L2);
                s30 = Prob(Masked(s30, r3, c0, t, w, scale), L3); s31 = Prob(Masked(s31, r3, c1, t, w, scale), L3);
                s32 = Prob(Masked(s32, r3, c2, t, w, scale), L3); s33 = Prob(Masked(s33, r3, c3, t, w, scale), L3);
                g00 = s00 * (g00 - D0); g01 = s01 * (g01 - D0); g02 = s02 * (g02 - D0); g03 = s03 * (g03 - D0);
                g10 = s10 * (g10 - D1); g11 = s11 * (g11 - D1); g12 = s12 * (g12 - D1); g13 = s13 * (g13 - D1);
                g20 = s20 * (g20 - D2); g21 = s21 * (g21 - D2); g22 = s22 * (g22 - D2); g23 = s23 * (g23 - D2);
                g30 = s30 * (g30 - D3); g31 = s31 * (g31 - D3); g32 = s32 * (g32 - D3); g33 = s33 * (g33 - D3);

                // Phase 2: dV += Pᵀ·dY (rows = keys, columns = dims of the chunk), dY in slices of queries.
                sx[pr0 + col] = s00; sx[pr0 + col + tx] = s01; sx[pr0 + col + 2 * tx] = s02; sx[pr0 + col + 3 * tx] = s03;
                sx[pr1 + col] = s10; sx[pr1 + col + tx] = s11; sx[pr1 + col + 2 * tx] = s12; sx[pr1 + col + 3 * tx] = s13;
                sx[pr2 + col] = s20; sx[pr2 + col + tx] = s21; sx[pr2 + col + 2 * tx] = s22; sx[pr2 + col + 3 * tx] = s23;
                sx[pr3 + col] = s30; sx[pr3 + col + tx] = s31; sx[pr3 + col + 2 * tx] = s32; sx[pr3 + col + 3 * tx] = s33;
                for (int rs = 0; rs < tile; rs += sl)
                {
                    LoadRowMajor(dyF, dyH, p.GradOutBf16, sbuf, 0, gOrigin, p.C, q0 + rs, t, gCol + d0, dWidth, sl, tile, tid, threads);
                    Group.Barrier();
                    for (int rr = 0; rr < sl; rr++)
                    {
                        int xr = (rs + rr) * Pitch + row, yb = rr * Pitch + col;
                        float x0 = sx[xr], x1 = sx[xr + tx], x2 = sx[xr + 2 * tx], x3 = sx[xr + 3 * tx];
                        float y0 = sbuf[yb], y1 = sbuf[yb + tx];
                        dv00 += x0 * y0; dv01 += x0 * y1;
                        dv10 += x1 * y0; dv11 += x1 * y1;
                        dv20 += x2 * y0; dv21 += x2 * y1;
                        dv30 += x3 * y0; dv31 += x3 * y1;
                        if (!half)
                        {
                            float y2 = sbuf[yb + 2 * tx], y3 = sbuf[yb + 3 * tx];
                            dv02 += x0 * y2; dv03 += x0 * y3;
                            dv12 += x1 * y2; dv13 += x1 * y3;
                            dv22 += x2 * y2; dv23 += x2 * y3;
                            dv32 += x3 * y2; dv33 += x3 * y3;
                        }
                    }
                    Group.Barrier();
                }

                // Phase 3: dK += dSᵀ·Q (rows = keys) and dQ = dS·K (rows = queries), Q and K in slices of rows.
                sx[pr0 + col] = g00; sx[pr0 + col + tx] = g01; sx[pr0 + col + 2 * tx] = g02; sx[pr0 + col + 3 * tx] = g03;
                sx[pr1 + col] = g10; sx[pr1 + col + tx] = g11; sx[pr1 + col + 2 * tx] = g12; sx[pr1 + col + 3 * tx] = g13;
                sx[pr2 + col] = g20; sx[pr2 + col + tx] = g21; sx[pr2 + col + 2 * tx] = g22; sx[pr2 + col + 3 * tx] = g23;
                sx[pr3 + col] = g30; sx[pr3 + col + tx] = g31; sx[pr3 + col + 2 * tx] = g32; sx[pr3 + col + 3 * tx] = g33;
                float dq00 = 0, dq01 = 0, dq02 = 0, dq03 = 0, dq10 = 0, dq11 = 0, dq12 = 0, dq13 = 0;
                float dq20 = 0, dq21 = 0, dq22 = 0, dq23 = 0, dq30 = 0, dq31 = 0, dq32 = 0, dq33 = 0;
                for (int rs = 0; rs < tile; rs += sl)
                {
                    LoadRowMajor(qkvF, qkvH, p.QkvBf16, sbuf, 0, origin, p.RowStride, q0 + rs, t, qCol + d0, dWidth, sl, tile, tid, threads);
                    LoadRowMajor(qkvF, qkvH, p.QkvBf16, sbuf, second, origin, p.RowStride, k0 + rs, t, kCol + d0, dWidth, sl, tile, tid, threads);
                    Group.Barrier();
                    for (int rr = 0; rr < sl; rr++)
                    {
                        int xr = (rs + rr) * Pitch + row, xc = rs + rr, yb = rr * Pitch + col;
                        // dS[query rs+rr][this thread's keys] for dK; dS[this thread's queries][key rs+rr] for dQ.
                        float x0 = sx[xr], x1 = sx[xr + tx], x2 = sx[xr + 2 * tx], x3 = sx[xr + 3 * tx];
                        float z0 = sx[pr0 + xc], z1 = sx[pr1 + xc], z2 = sx[pr2 + xc], z3 = sx[pr3 + xc];
                        float qv0 = sbuf[yb], qv1 = sbuf[yb + tx];
                        float kv0 = sbuf[second + yb], kv1 = sbuf[second + yb + tx];
                        dk00 += x0 * qv0; dk01 += x0 * qv1;
                        dk10 += x1 * qv0; dk11 += x1 * qv1;
                        dk20 += x2 * qv0; dk21 += x2 * qv1;
                        dk30 += x3 * qv0; dk31 += x3 * qv1;
                        dq00 += z0 * kv0; dq01 += z0 * kv1;
                        dq10 += z1 * kv0; dq11 += z1 * kv1;
                        dq20 += z2 * kv0; dq21 += z2 * kv1;
                        dq30 += z3 * kv0; dq31 += z3 * kv1;
                        if (!half)
                        {
                            float qv2 = sbuf[yb + 2 * tx], qv3 = sbuf[yb + 3 * tx];
                            float kv2 = sbuf[second + yb + 2 * tx], kv3 = sbuf[second + yb + 3 * tx];
                            dk02 += x0 * qv2; dk03 += x0 * qv3;
                            dk12 += x1 * qv2; dk13 += x1 * qv3;
                            dk22 += x2 * qv2; dk23 += x2 * qv3;
                            dk32 += x3 * qv2; dk33 += x3 * qv3;
                            dq02 += z0 * kv2; dq03 += z0 * kv3;
                            dq12 += z1 * kv2; dq13 += z1 * kv3;
                            dq22 += z2 * kv2; dq23 += z2 * kv3;
                            dq32 += z3 * kv2; dq33 += z3 * kv3;
                        }
                    }
                    Group.Barrier();
                }
                int dqCol = qCol + d0 + col;
                AtomicAddRow(dq, p, b, r0, dqCol, dWidth, col, tx, scale, dq00, dq01, dq02, dq03);
                AtomicAddRow(dq, p, b, r1, dqCol, dWidth, col, tx, scale, dq10, dq11, dq12, dq13);
                AtomicAddRow(dq, p, b, r2, dqCol, dWidth, col, tx, scale, dq20, dq21, dq22, dq23);
                AtomicAddRow(dq, p, b, r3, dqCol, dWidth, col, tx, scale, dq30, dq31, dq32, dq33);
            }

            int kc = kCol + d0 + col, vc = vCol + d0 + col;
            AddGradRow(dqkvF, dqkvH, p, b, kr0, kc, dWidth, col, tx, scale, dk00, dk01, dk02, dk03);
            AddGradRow(dqkvF, dqkvH, p, b, kr1, kc, dWidth, col, tx, scale, dk10, dk11, dk12, dk13);
            AddGradRow(dqkvF, dqkvH, p, b, kr2, kc, dWidth, col, tx, scale, dk20, dk21, dk22, dk23);
            AddGradRow(dqkvF, dqkvH, p, b, kr3, kc, dWidth, col, tx, scale, dk30, dk31, dk32, dk33);
            AddGradRow(dqkvF, dqkvH, p, b, kr0, vc, dWidth, col, tx, 1f, dv00, dv01, dv02, dv03);
            AddGradRow(dqkvF, dqkvH, p, b, kr1, vc, dWidth, col, tx, 1f, dv10, dv11, dv12, dv13);
            AddGradRow(dqkvF, dqkvH, p, b, kr2, vc, dWidth, col, tx, 1f, dv20, dv21, dv22, dv23);
            AddGradRow(dqkvF, dqkvH, p, b, kr3, vc, dWidth, col, tx, 1f, dv30, dv31, dv32, dv33);
        }
    }

    /// <summary>dq[b, r, dqCol + j·tx] += s·v_j (atomics: every key tile adds into the same dq rows).</summary>
    private static void AtomicAddRow(ArrayView<float> dq, Params p, int b, int r, int dqCol, int width, int col, int tx, float s,
        float v0, float v1, float v2, float v3)
    {
        if (r >= p.T) return;
        long rowBase = ((long)b * p.T + r) * p.DqStride + dqCol;
        if (col < width) Atomic.Add(ref dq[rowBase], s * v0);
        if (col + tx < width) Atomic.Add(ref dq[rowBase + tx], s * v1);
        if (col + 2 * tx < width) Atomic.Add(ref dq[rowBase + 2 * tx], s * v2);
        if (col + 3 * tx < width) Atomic.Add(ref dq[rowBase + 3 * tx], s * v3);
    }

    /// <summary>d(qkv)[b, r, c + j·tx] += s·v_j: this group is the only writer of these elements.</summary>
    private static void AddGradRow(ArrayView<float> f, ArrayView<ushort> hv, Params p, int b, int r, int c, int width, int col, int tx, float s,
        float v0, float v1, float v2, float v3)
    {
        if (r >= p.T) return;
        long rowBase = ((long)b * p.T + r) * p.RowStride + c;
        if (col < width) AddTo(f, hv, p.GradBf16, rowBase, s * v0);
        if (col + tx < width) AddTo(f, hv, p.GradBf16, rowBase + tx, s * v1);
        if (col + 2 * tx < width) AddTo(f, hv, p.GradBf16, rowBase + 2 * tx, s * v2);
        if (col + 3 * tx < width) AddTo(f, hv, p.GradBf16, rowBase + 3 * tx, s * v3);
    }

    /// <summary>The bf16 d(qkv)'s q columns += the fp32 dq scratch [B, T, C], rounded once.</summary>
    private static void AddDqBf16Kernel(ArrayView<float> dq, ArrayView<ushort> dqkv, Params p)
    {
        long n = (long)p.Batch * p.T * p.C;
        long stride = (long)Grid.DimX * Group.DimX;
        for (long i = Grid.GlobalIndex.X; i < n; i += stride)
        {
            long bt = i / p.C;
            long target = bt * p.RowStride + (i - bt * p.C);
            dqkv[target] = BFloat16.FromFloat(BFloat16.ToFloat(dqkv[target]) + dq[i]);
        }
    }

    // ---------------------------------------------------------------------------------------------------------------
    // D = rowsum(dY ∘ Y), both paths.

    /// <summary>One thread per (b, t, h) (consecutive threads read consecutive heads of a row): D[b, h, t] = Σ_d dy·y.</summary>
    private static void DeltaKernel(ArrayView<float> yF, ArrayView<ushort> yH, ArrayView<float> dyF, ArrayView<ushort> dyH,
        ArrayView<float> delta, Params p)
    {
        int stride = Grid.DimX * Group.DimX;
        int rows = p.Batch * p.T * p.Heads;
        int hd = p.HeadDim;
        for (int idx = Grid.GlobalIndex.X; idx < rows; idx += stride)
        {
            int h = idx % p.Heads;
            int bt = idx / p.Heads;
            int b = bt / p.T, i = bt - b * p.T;
            long start = (long)bt * p.C + h * hd;
            float sum = 0f;
            for (int d = 0; d < hd; d++) sum += Load(dyF, dyH, p.GradOutBf16, start + d) * Load(yF, yH, p.QkvBf16, start + d);
            delta[((long)b * p.Heads + h) * p.T + i] = sum;
        }
    }

    // ---------------------------------------------------------------------------------------------------------------
    // Portable twins.

    /// <summary>One thread per (b, h, query): online softmax over the visible keys, the output row in local memory.</summary>
    private static void ForwardRowKernel(ArrayView<float> qkvF, ArrayView<ushort> qkvH, ArrayView<float> yF, ArrayView<ushort> yH,
        ArrayView<float> lse, Params p)
    {
        int stride = Grid.DimX * Group.DimX;
        int first = Grid.GlobalIndex.X;
        var q = LocalMemory.Allocate<float>(MaxHeadDim);
        var acc = LocalMemory.Allocate<float>(MaxHeadDim);
        int t = p.T, hd = p.HeadDim, rows = p.Batch * p.Heads * t;
        for (int idx = first; idx < rows; idx += stride)
        {
            int i = idx % t;
            int bh = idx / t;
            int h = bh % p.Heads, b = bh / p.Heads;
            long origin = (long)b * t * p.RowStride;
            long qBase = origin + i * p.RowStride + h * hd;
            for (int d = 0; d < hd; d++)
            {
                q[d] = Load(qkvF, qkvH, p.QkvBf16, qBase + d);
                acc[d] = 0f;
            }
            float m = NegBig, l = 0f;
            for (int j = Math.Max(0, i - p.Window + 1); j <= i; j++)
            {
                long kBase = origin + j * p.RowStride + p.C + h * hd, vBase = kBase + p.C;
                float s = 0f;
                for (int d = 0; d < hd; d++) s += q[d] * Load(qkvF, qkvH, p.QkvBf16, kBase + d);
                s *= p.Scale;
                if (s > m)
                {
                    // A new maximum: rescale what was accumulated relative to the old one.
                    float a = MathF.Exp(m - s);
                    l *= a;
                    for (int d = 0; d < hd; d++) acc[d] *= a;
                    m = s;
                }
                float pj = MathF.Exp(s - m);
                l += pj;
                for (int d = 0; d < hd; d++) acc[d] += pj * Load(qkvF, qkvH, p.QkvBf16, vBase + d);
            }
            float inv = 1f / l;
            long yBase = ((long)b * t + i) * p.C + h * hd;
            for (int d = 0; d < hd; d++) Store(yF, yH, p.QkvBf16, yBase + d, acc[d] * inv);
            lse[((long)b * p.Heads + h) * t + i] = m + MathF.Log(l);
        }
    }

    /// <summary>
    /// Threads [0, B·H·T) each own a dq row (walking its visible keys); threads [B·H·T, 2·B·H·T) each own a dk and a
    /// dv row (walking the queries that see the key). Each gradient row has exactly one writer: no atomics.
    /// </summary>
    private static void BackwardRowKernel(ArrayView<float> qkvF, ArrayView<ushort> qkvH, ArrayView<float> dyF, ArrayView<ushort> dyH,
        ArrayView<float> lse, ArrayView<float> delta, ArrayView<float> dqkvF, ArrayView<ushort> dqkvH, Params p)
    {
        int stride = Grid.DimX * Group.DimX;
        int first = Grid.GlobalIndex.X;
        var own = LocalMemory.Allocate<float>(MaxHeadDim);  // q row (dq role) or k row (dk/dv role)
        var ownG = LocalMemory.Allocate<float>(MaxHeadDim); // dy row (dq role) or v row (dk/dv role)
        var acc = LocalMemory.Allocate<float>(MaxHeadDim);  // dq, or dk
        var acc2 = LocalMemory.Allocate<float>(MaxHeadDim); // dv
        int t = p.T, hd = p.HeadDim, rows = p.Batch * p.Heads * t, w = p.Window;
        float scale = p.Scale;
        for (int idx = first; idx < 2 * rows; idx += stride)
        {
            bool keyRole = idx >= rows;
            int r = keyRole ? idx - rows : idx;
            int i = r % t;
            int bh = r / t;
            int h = bh % p.Heads, b = bh / p.Heads;
            long origin = (long)b * t * p.RowStride;
            long gOrigin = (long)b * t * p.C;
            long lseRow = (long)bh * t;
            int qCol = h * hd, kCol = p.C + h * hd, vCol = 2 * p.C + h * hd;
            for (int d = 0; d < hd; d++) { acc[d] = 0f; acc2[d] = 0f; }
            if (!keyRole)
            {
                for (int d = 0; d < hd; d++)
                {
                    own[d] = Load(qkvF, qkvH, p.QkvBf16, origin + i * p.RowStride + qCol + d);
                    ownG[d] = Load(dyF, dyH, p.GradOutBf16, gOrigin + i * p.C + qCol + d);
                }
                float li = lse[lseRow + i], di = delta[lseRow + i];
                for (int j = Math.Max(0, i - w + 1); j <= i; j++)
                {
                    long kBase = origin + j * p.RowStride + kCol, vBase = origin + j * p.RowStride + vCol;
                    float s = 0f, dp = 0f;
                    for (int d = 0; d < hd; d++)
                    {
                        s += own[d] * Load(qkvF, qkvH, p.QkvBf16, kBase + d);
                        dp += ownG[d] * Load(qkvF, qkvH, p.QkvBf16, vBase + d);
                    }
                    float ds = MathF.Exp(s * scale - li) * (dp - di);
                    for (int d = 0; d < hd; d++) acc[d] += ds * Load(qkvF, qkvH, p.QkvBf16, kBase + d);
                }
                long target = origin + i * p.RowStride + qCol;
                for (int d = 0; d < hd; d++) AddTo(dqkvF, dqkvH, p.GradBf16, target + d, scale * acc[d]);
            }
            else
            {
                for (int d = 0; d < hd; d++)
                {
                    own[d] = Load(qkvF, qkvH, p.QkvBf16, origin + i * p.RowStride + kCol + d);
                    ownG[d] = Load(qkvF, qkvH, p.QkvBf16, origin + i * p.RowStride + vCol + d);
                }
                int last = Math.Min(t - 1, i + w - 1);
                for (int j = i; j <= last; j++)
                {
                    long qBase = origin + j * p.RowStride + qCol, gBase = gOrigin + j * p.C + qCol;
                    float s = 0f, dp = 0f;
                    for (int d = 0; d < hd; d++)
                    {
                        s += own[d] * Load(qkvF, qkvH, p.QkvBf16, qBase + d);
                        dp += ownG[d] * Load(dyF, dyH, p.GradOutBf16, gBase + d);
                    }
                    float pj = MathF.Exp(s * scale - lse[lseRow + j]);
                    float ds = pj * (dp - delta[lseRow + j]);
                    for (int d = 0; d < hd; d++)
                    {
                        acc[d] += ds * Load(qkvF, qkvH, p.QkvBf16, qBase + d);
                        acc2[d] += pj * Load(dyF, dyH, p.GradOutBf16, gBase + d);
                    }
                }
                long kTarget = origin + i * p.RowStride + kCol, vTarget = origin + i * p.RowStride + vCol;
                for (int d = 0; d < hd; d++)
                {
                    AddTo(dqkvF, dqkvH, p.GradBf16, kTarget + d, scale * acc[d]);
                    AddTo(dqkvF, dqkvH, p.GradBf16, vTarget + d, acc2[d]);
                }
            }
        }
    }

    /// <summary>Float64 references over flat row-major arrays: the definition (−∞ on masked scores, a plain softmax).</summary>
    public static class Reference
    {
        public static bool Visible(int query, int key, int window) => key <= query && key > query - window;

        /// <summary>y [B, T, C] and lse [B, H, T] from qkv [B, T, 3C].</summary>
        public static (double[] Y, double[] Lse) Forward(double[] qkv, int batch, int t, int heads, int? window)
        {
            int c = qkv.Length / (batch * t) / 3, hd = c / heads, w = window ?? t;
            double scale = 1.0 / Math.Sqrt(hd);
            var y = new double[batch * t * c];
            var lse = new double[batch * heads * t];
            var s = new double[t];
            for (int b = 0; b < batch; b++)
                for (int h = 0; h < heads; h++)
                    for (int i = 0; i < t; i++)
                    {
                        double max = double.NegativeInfinity;
                        for (int j = 0; j < t; j++)
                        {
                            s[j] = Visible(i, j, w) ? scale * Dot(qkv, Index(b, i, 0, h, t, c, hd), qkv, Index(b, j, 1, h, t, c, hd), hd) : double.NegativeInfinity;
                            max = Math.Max(max, s[j]);
                        }
                        double sum = 0;
                        for (int j = 0; j < t; j++) sum += Math.Exp(s[j] - max);
                        lse[(b * heads + h) * t + i] = max + Math.Log(sum);
                        for (int j = 0; j < t; j++)
                        {
                            double pj = Math.Exp(s[j] - max) / sum;
                            if (pj == 0) continue;
                            long v = Index(b, j, 2, h, t, c, hd);
                            for (int d = 0; d < hd; d++) y[(b * t + i) * c + h * hd + d] += pj * qkv[v + d];
                        }
                    }
            return (y, lse);
        }

        /// <summary>
        /// d(qkv) [B, T, 3C] for the output gradient dy [B, T, C]: the analytic gradient, in float64. With
        /// <paramref name="storedY"/>, D = Σ dy·y reads that output (e.g. the bf16-rounded y a kernel kept) instead of the
        /// exact one, as the kernels do: the gradient of the computation as performed, not of exact attention.
        /// </summary>
        public static double[] Backward(double[] qkv, double[] dy, int batch, int t, int heads, int? window, double[]? storedY = null)
        {
            int c = qkv.Length / (batch * t) / 3, hd = c / heads, w = window ?? t;
            double scale = 1.0 / Math.Sqrt(hd);
            var (_, lse) = Forward(qkv, batch, t, heads, window);
            var dqkv = new double[qkv.Length];
            var p = new double[t];
            var dp = new double[t];
            for (int b = 0; b < batch; b++)
                for (int h = 0; h < heads; h++)
                    for (int i = 0; i < t; i++)
                    {
                        long qi = Index(b, i, 0, h, t, c, hd);
                        long gi = (long)(b * t + i) * c + h * hd;
                        double rowDot = 0;
                        for (int j = 0; j < t; j++)
                        {
                            if (!Visible(i, j, w)) { p[j] = 0; dp[j] = 0; continue; }
                            p[j] = Math.Exp(scale * Dot(qkv, qi, qkv, Index(b, j, 1, h, t, c, hd), hd) - lse[(b * heads + h) * t + i]);
                            dp[j] = Dot(dy, gi, qkv, Index(b, j, 2, h, t, c, hd), hd);
                            rowDot += p[j] * dp[j];
                        }
                        if (storedY is not null) rowDot = Dot(dy, gi, storedY, gi, hd);
                        for (int j = 0; j < t; j++)
                        {
                            if (p[j] == 0) continue;
                            double ds = p[j] * (dp[j] - rowDot);
                            long kj = Index(b, j, 1, h, t, c, hd), vj = Index(b, j, 2, h, t, c, hd);
                            for (int d = 0; d < hd; d++)
                            {
                                dqkv[qi + d] += scale * ds * qkv[kj + d];
                                dqkv[kj + d] += scale * ds * qkv[qi + d];
                                dqkv[vj + d] += p[j] * dy[gi + d];
                            }
                        }
                    }
            return dqkv;
        }

        private static long Index(int b, int i, int which, int h, int t, int c, int hd) => (long)(b * t + i) * 3 * c + which * c + h * hd;

        private static double Dot(double[] a, long ai, double[] b, long bi, int n)
        {
            double s = 0;
            for (int d = 0; d < n; d++) s += a[ai + d] * b[bi + d];
            return s;
        }
    }
}
