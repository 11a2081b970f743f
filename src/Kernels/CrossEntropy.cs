using ILGPU;
using ILGPU.Algorithms;
using ILGPU.Algorithms.ScanReduceOperations;
using ILGPU.Runtime;
using Memopt.Tensors;

namespace Memopt.Kernels;

/// <summary>
/// Fused softmax + cross-entropy over the last axis, mean over the rows whose target is not the ignore index,
/// with optional label smoothing ε (PyTorch semantics):
///   lse_r   = log Σ_j exp(x_rj)
///   loss_r  = (1−ε)·(lse_r − x_r,t) + ε·(lse_r − mean_j x_rj)        (= (1−ε)·(−log p_t) + ε·mean_j(−log p_j))
///   loss    = Σ_r loss_r / count,  count = rows with t_r ≠ ignoreIndex   (0 when every row is ignored)
///   dx_rj  += dloss·(p_rj − (1−ε)·[j = t_r] − ε/V) / count           (0 for ignored rows)
/// Memory: the forward reads each logit once (one group per row: an online max/sum-exp per thread, then group
/// reductions) and writes only the per-row log-sum-exp [N] and per-row loss [N]; a single-group kernel sums the
/// row losses into the scalar (deterministic, no atomics). That is the cooperative form (CUDA); the portable form
/// (<see cref="KernelPath"/>, the CPU accelerator, where each group and group reduction is an OS-level rendezvous)
/// gives each row to one thread (a max pass, then a blocked sum of exp(x − max): the same max-subtracted math, one
/// more read of a row that is in cache) and sums the row losses on a single thread.
/// Backward recomputes p from the logits and the saved log-sum-exp (one group or, portable, one thread per row), so
/// no N×V probability tensor ever exists: at V = 50257 and N = 32768 the logits are 6.6 GB, the saved extra is 128 KB.
/// Target validation is device-side: the forward kernel counts valid rows and out-of-range targets into a small
/// status buffer that the host reads once after the kernel (8 bytes and one stream synchronisation per call, about
/// 10–30 µs of idle GPU on an H100 — the training loop reads the loss back each step anyway). An out-of-range
/// target throws <see cref="ShapeException"/> naming the first bad row and its value.
/// The fused LM head (<c>Ops.LinearCrossEntropy</c>, --fused-head) uses <see cref="Chunk"/> instead: one chunk of rows
/// whose logits (rows padded to 8, bias added on load) become row losses and, in place, their gradient in one kernel;
/// <see cref="CountTargets"/> gives it the count first, since the gradient it writes is already divided by it.
/// Dtypes: the logits and their gradient may be float32 or bfloat16 (<see cref="FloatView"/>); the log-sum-exp, the row
/// losses, the loss and its gradient are float32, and so is all the math: a bf16 logit is widened on load, a bf16
/// gradient rounded once when stored.
/// </summary>
public static class CrossEntropy
{
    public const string Op = "cross_entropy";

    /// <summary>
    /// Computes the mean loss into <paramref name="loss"/> [1] and the per-row log-sum-exp into
    /// <paramref name="rowLse"/> [rows] (0 for ignored rows); returns the number of rows that count.
    /// </summary>
    public static int Forward(Tensor logits, Tensor targets, int ignoreIndex, float labelSmoothing, Tensor rowLse, Tensor loss)
    {
        CheckInputs(logits, targets, labelSmoothing);
        int rows = checked((int)logits.Shape.Rows), vocab = logits.Shape.Last;
        Check.That(rowLse.DType == DType.F32 && rowLse.Numel == rows, Op, $"row log-sum-exp buffer {rowLse.Shape} {rowLse.DType.Name()} must be float32 with {rows} elements (logits {logits.Shape})");
        Check.That(loss.DType == DType.F32 && loss.Numel == 1, Op, $"loss buffer {loss.Shape} {loss.DType.Name()} must be one float32");
        Check.SameDevice(Op, logits, rowLse);
        Check.SameDevice(Op, logits, loss);

        var device = logits.Device;
        using var rowLoss = Tensor.Empty(device, new Shape(rows), DType.F32, MemoryCategory.Workspace, Op + ":row_loss");
        using var status = Tensor.Zeros(device, new Shape(2), DType.I32, MemoryCategory.Workspace, Op + ":status");
        bool cooperative = Launch.Cooperative(device);
        if (cooperative)
        {
            var forward = device.Kernel("cross_entropy.fwd", acc => acc.LoadStreamKernel<
                FloatView, ArrayView<int>, ArrayView<float>, ArrayView<float>, ArrayView<int>, int, int, float>(ForwardKernel));
            forward(Launch.PerRow(device, rows), FloatView.Of(logits), targets.I32, rowLse.F32, rowLoss.F32, status.I32, vocab, ignoreIndex, labelSmoothing);
        }
        else
        {
            var forward = device.Kernel("cross_entropy.fwd_thread_per_row", acc => acc.LoadStreamKernel<
                FloatView, ArrayView<int>, ArrayView<float>, ArrayView<float>, ArrayView<int>, int, int, int, float>(ForwardRowKernel));
            forward(Launch.ThreadPerRow(device, rows), FloatView.Of(logits), targets.I32, rowLse.F32, rowLoss.F32, status.I32, rows, vocab, ignoreIndex, labelSmoothing);
        }

        var counts = status.ToIntArray(); // the one read-back: [valid rows, out-of-range targets]
        if (counts[1] > 0) throw OutOfRange(logits, targets, ignoreIndex, counts[1]);
        int count = counts[0];

        Mean(rowLoss, count, loss);
        return count;
    }

    /// <summary>loss[0] = Σ rowLoss / count (0 when count is 0), summed in a fixed order (deterministic).</summary>
    public static void Mean(Tensor rowLoss, int count, Tensor loss)
    {
        var device = rowLoss.Device;
        int rows = checked((int)rowLoss.Numel);
        float scale = count > 0 ? 1f / count : 0f;
        if (Launch.Cooperative(device))
        {
            var sum = device.Kernel("cross_entropy.mean", acc => acc.LoadStreamKernel<ArrayView<float>, int, float, ArrayView<float>>(MeanKernel));
            sum(new KernelConfig(1, Launch.GroupSize(device)), rowLoss.F32, rows, scale, loss.F32);
        }
        else
        {
            var sum = device.Kernel("cross_entropy.mean_single_thread", acc => acc.LoadStreamKernel<ArrayView<float>, int, float, ArrayView<float>>(MeanSingleThreadKernel));
            sum(Launch.SingleThread(device), rowLoss.F32, rows, scale, loss.F32);
        }
    }

    /// <summary>
    /// Validates a batch's targets against <paramref name="vocab"/> and returns the rows that count (target ≠ the
    /// ignore index), with one read-back; an out-of-range target throws <see cref="ShapeException"/> naming the
    /// first bad row. The fused head (<see cref="Chunk"/>) needs the count before its first chunk, since the
    /// gradients it writes in the forward are already divided by it.
    /// </summary>
    public static int CountTargets(Tensor targets, int vocab, int ignoreIndex)
    {
        Check.DType(Op, targets, DType.I32, "targets");
        Check.That(vocab >= 1, Op, $"vocabulary {vocab} must be ≥ 1");
        var device = targets.Device;
        using var status = Tensor.Zeros(device, new Shape(2), DType.I32, MemoryCategory.Workspace, Op + ":status");
        var count = device.Kernel("cross_entropy.count_targets", acc => acc.LoadStreamKernel<ArrayView<int>, ArrayView<int>, int, int, int>(CountKernel));
        count(Launch.Elementwise(device, targets.Numel), targets.I32, status.I32, checked((int)targets.Numel), vocab, ignoreIndex);
        var counts = status.ToIntArray();
        if (counts[1] > 0) throw OutOfRange(vocab, $"targets {targets.Shape}", targets, ignoreIndex, counts[1]);
        return counts[0];
    }

    /// <summary>
    /// One chunk of rows of the fused LM head + cross-entropy (<c>Ops.LinearCrossEntropy</c>): from logits
    /// [rows, stride] (float32 or bf16; columns ≥ <paramref name="vocab"/> are padding, never read), adds the bias
    /// (float32 or bf16 [vocab], or none: the fused head adds its bias in the logits GEMM's epilogue, so the hot loop
    /// reads the logits alone) on load and writes each row's loss into
    /// <paramref name="rowLoss"/> [rows] (0 for ignored rows). With <paramref name="gradient"/>, it then overwrites the
    /// logits in place with the loss gradient G = (p − smoothed one-hot)·<paramref name="invCount"/> (0 in the padding
    /// columns and the ignored rows); every element is read before it is written, by the same thread. Targets must be
    /// in range (<see cref="CountTargets"/>).
    /// Cooperative: one group of up to 1024 threads per row: one read of the row for the log-sum-exp, then a second
    /// read and one write for G. Large groups keep few rows in flight (two per SM), so at V = 50257 in bf16 (100 KB a
    /// row) the second read finds the row in the H100's 50 MB L2. Portable: one thread per row, a max pass, a blocked
    /// sum-exp pass and the gradient pass.
    /// </summary>
    public static void Chunk(Tensor logits, Tensor? bias, Tensor targets, int vocab, int ignoreIndex, float labelSmoothing,
        Tensor rowLoss, bool gradient, float invCount)
    {
        Check.Float(Op, logits, "chunk logits");
        Check.That(logits.Shape.Rank == 2 && logits.Shape.Last >= vocab && vocab >= 1, Op, $"chunk logits {logits.Shape} must be [rows, stride ≥ vocab {vocab}]");
        int rows = logits.Shape[0], stride = logits.Shape.Last;
        Check.DType(Op, targets, DType.I32, "targets");
        Check.That(targets.Numel == rows, Op, $"targets {targets.Shape} must have one entry per chunk row (logits {logits.Shape})");
        Check.That(rowLoss.DType == DType.F32 && rowLoss.Numel == rows, Op, $"row losses {rowLoss.Shape} must be float32 with {rows} elements (logits {logits.Shape})");
        if (bias is not null)
        {
            Check.Float(Op, bias, "bias");
            Check.That(bias.Numel == vocab, Op, $"bias {bias.Shape} must have {vocab} elements");
        }
        Check.That(labelSmoothing >= 0f && labelSmoothing <= 1f, Op, $"label smoothing {labelSmoothing} is not in [0, 1]");
        var device = logits.Device;
        int hasBias = bias is null ? 0 : 1, hasGrad = gradient ? 1 : 0;
        var shape = new ChunkShape(vocab, stride, ignoreIndex, labelSmoothing, 1f - labelSmoothing, labelSmoothing / vocab, invCount, rows);
        if (Launch.Cooperative(device) && stride % 4 == 0)
        {
            // Four logits per access (an 8-byte bf16 word, a 16-byte float4): 2- and 4-byte accesses held the kernel to
            // 40-50% of the H100's bandwidth.
            if (Bf16Quads.Fits(logits))
            {
                QuadChunk(device, "cross_entropy.chunk_bf16x4", Bf16Quads.Of(logits), bias, logits, hasBias, targets, rowLoss, hasGrad, shape);
                return;
            }
            if (F32Quads.Fits(logits))
            {
                QuadChunk(device, "cross_entropy.chunk_f32x4", F32Quads.Of(logits), bias, logits, hasBias, targets, rowLoss, hasGrad, shape);
                return;
            }
        }
        if (Launch.Cooperative(device))
        {
            var k = device.Kernel("cross_entropy.chunk", acc => acc.LoadStreamKernel<
                FloatView, FloatView, int, ArrayView<int>, ArrayView<float>, int, ChunkShape>(ChunkKernel));
            k(Launch.PerRow(device, rows, 1024), FloatView.Of(logits), FloatView.Of(bias ?? logits), hasBias, targets.I32, rowLoss.F32, hasGrad, shape);
            return;
        }
        var serial = device.Kernel("cross_entropy.chunk_thread_per_row", acc => acc.LoadStreamKernel<
            FloatView, FloatView, int, ArrayView<int>, ArrayView<float>, int, ChunkShape>(ChunkRowKernel));
        serial(Launch.ThreadPerRow(device, rows), FloatView.Of(logits), FloatView.Of(bias ?? logits), hasBias, targets.I32, rowLoss.F32, hasGrad, shape);
    }

    /// <summary>The scalars of a chunk launch (public because ILGPU's CPU backend must see the type).</summary>
    public readonly record struct ChunkShape(int Vocab, int Stride, int IgnoreIndex, float Smoothing, float OnTarget, float Uniform, float InvCount, int Rows);

    /// <summary>
    /// dlogits += dloss·(softmax − smoothed one-hot)/count, reading the logits and the saved log-sum-exp.
    /// <paramref name="count"/> is what <see cref="Forward"/> returned; with 0 nothing is added.
    /// </summary>
    public static void Backward(Tensor logits, Tensor targets, Tensor rowLse, Tensor dloss, int count, int ignoreIndex, float labelSmoothing, Tensor dlogits)
    {
        CheckInputs(logits, targets, labelSmoothing);
        int rows = checked((int)logits.Shape.Rows), vocab = logits.Shape.Last;
        Check.That(rowLse.DType == DType.F32 && rowLse.Numel == rows, Op, $"row log-sum-exp {rowLse.Shape} must be float32 with {rows} elements (logits {logits.Shape})");
        Check.That(dloss.DType == DType.F32 && dloss.Numel == 1, Op, $"loss gradient {dloss.Shape} {dloss.DType.Name()} must be one float32");
        Check.Float(Op, dlogits, "logits gradient");
        Check.SameShape(Op, logits, dlogits);
        Check.That(count >= 0 && count <= rows, Op, $"count {count} is not in 0..{rows}");
        if (count == 0) return;

        var device = logits.Device;
        if (Launch.Cooperative(device))
        {
            var backward = device.Kernel("cross_entropy.bwd", acc => acc.LoadStreamKernel<
                FloatView, ArrayView<int>, ArrayView<float>, ArrayView<float>, FloatView, int, int, float, float, float>(BackwardKernel));
            backward(Launch.PerRow(device, rows), FloatView.Of(logits), targets.I32, rowLse.F32, dloss.F32, FloatView.Of(dlogits),
                vocab, ignoreIndex, 1f - labelSmoothing, labelSmoothing / vocab, 1f / count);
            return;
        }
        var serial = device.Kernel("cross_entropy.bwd_thread_per_row", acc => acc.LoadStreamKernel<
            FloatView, ArrayView<int>, ArrayView<float>, ArrayView<float>, FloatView, int, int, int, float, float, float>(BackwardRowKernel));
        serial(Launch.ThreadPerRow(device, rows), FloatView.Of(logits), targets.I32, rowLse.F32, dloss.F32, FloatView.Of(dlogits),
            rows, vocab, ignoreIndex, 1f - labelSmoothing, labelSmoothing / vocab, 1f / count);
    }

    private static void CheckInputs(Tensor logits, Tensor targets, float labelSmoothing)
    {
        Check.Float(Op, logits, "logits");
        Check.DType(Op, targets, DType.I32, "targets");
        Check.SameDevice(Op, logits, targets);
        Check.That(logits.Shape.Rank >= 2, Op, $"logits {logits.Shape} need a row axis and a class axis");
        var rowDims = logits.Shape.Dims.Take(logits.Shape.Rank - 1);
        Check.That(targets.Shape.Dims.SequenceEqual(rowDims), Op,
            $"targets {targets.Shape} must have the logits' shape without the class axis: logits {logits.Shape}, expected targets {Shape.Format(rowDims)}");
        Check.That(logits.Shape.Rows <= int.MaxValue, Op, $"logits {logits.Shape} have more than 2^31-1 rows");
        Check.That(labelSmoothing >= 0f && labelSmoothing <= 1f, Op, $"label smoothing {labelSmoothing} is not in [0, 1]");
    }

    /// <summary>Only on the error path: finds the first offending row on the host for the message.</summary>
    private static ShapeException OutOfRange(Tensor logits, Tensor targets, int ignoreIndex, int bad) =>
        OutOfRange(logits.Shape.Last, $"logits {logits.Shape}, targets {targets.Shape}", targets, ignoreIndex, bad);

    private static ShapeException OutOfRange(int vocab, string shapes, Tensor targets, int ignoreIndex, int bad)
    {
        var t = targets.ToIntArray();
        int row = Array.FindIndex(t, v => v != ignoreIndex && (v < 0 || v >= vocab));
        string first = row >= 0 ? $"first at row {row}: {t[row]}" : "";
        return new ShapeException(Op, $"{bad} target(s) outside [0, {vocab}) that are not the ignore index {ignoreIndex} ({first}; {shapes})");
    }

    private static void CountKernel(ArrayView<int> targets, ArrayView<int> status, int n, int vocab, int ignoreIndex)
    {
        int stride = Grid.DimX * Group.DimX;
        int valid = 0, bad = 0;
        for (int i = Grid.GlobalIndex.X; i < n; i += stride)
        {
            int t = targets[i];
            if (t == ignoreIndex) continue;
            if (t < 0 || t >= vocab) bad++;
            else valid++;
        }
        if (valid != 0) Atomic.Add(ref status[0], valid);
        if (bad != 0) Atomic.Add(ref status[1], bad);
    }

    /// <summary>A thread's running max m, Σ exp(x − m) and Σ x over the logits it has read (one read of each).</summary>
    private readonly struct OnlineSum(float m, float e, float sumX)
    {
        public static OnlineSum Empty => new(float.NegativeInfinity, 0f, 0f);
        public readonly float M = m, E = e, SumX = sumX;

        public OnlineSum Add(float x) => x > M
            ? new OnlineSum(x, E * MathF.Exp(M - x) + 1f, SumX + x)
            : new OnlineSum(M, E + MathF.Exp(x - M), SumX + x);

        /// <summary>
        /// Sixteen logits at once (−∞ for the ones past the vocabulary): the block's max first, then one rescale of the
        /// sum and sixteen independent exponentials, summed as a tree.
        /// </summary>
        public OnlineSum AddBlock(MatMul.Quad a, MatMul.Quad b, MatMul.Quad c, MatMul.Quad d)
        {
            float m = MathF.Max(M, MathF.Max(MathF.Max(Max(a), Max(b)), MathF.Max(Max(c), Max(d))));
            if (m == float.NegativeInfinity) return this; // nothing inside the vocabulary yet
            float e = E * MathF.Exp(M - m) + ((ExpSum(a, m) + ExpSum(b, m)) + (ExpSum(c, m) + ExpSum(d, m)));
            return new OnlineSum(m, e, SumX + ((Sum(a) + Sum(b)) + (Sum(c) + Sum(d))));
        }

        private static float Max(MatMul.Quad x) => MathF.Max(MathF.Max(x.X, x.Y), MathF.Max(x.Z, x.W));

        private static float ExpSum(MatMul.Quad x, float m) => (MathF.Exp(x.X - m) + MathF.Exp(x.Y - m)) + (MathF.Exp(x.Z - m) + MathF.Exp(x.W - m));

        /// <summary>The sum of the quad's logits inside the vocabulary (the −∞ past it count 0).</summary>
        private static float Sum(MatMul.Quad x) => (Finite(x.X) + Finite(x.Y)) + (Finite(x.Z) + Finite(x.W));

        private static float Finite(float x) => x == float.NegativeInfinity ? 0f : x;
    }

    /// <summary>
    /// The row's log-sum-exp from every thread's <see cref="OnlineSum"/>, returned to all of the group; thread 0 writes
    /// the row's (smoothed) loss from it and the target's logit it read.
    /// </summary>
    private static float GroupRowLoss(OnlineSum sum, float xTarget, int row, ArrayView<float> rowLoss, ChunkShape s)
    {
        float rowMax = GroupExtensions.AllReduce<float, MaxFloat>(sum.M);
        // A thread that saw no element has m = −∞ and e = 0: its term is 0·0 = 0.
        float lse = rowMax + MathF.Log(GroupExtensions.AllReduce<float, AddFloat>(sum.E * MathF.Exp(sum.M - rowMax)));
        float totalX = s.Smoothing != 0f ? GroupExtensions.Reduce<float, AddFloat>(sum.SumX) : 0f;
        if (Group.IdxX == 0) rowLoss[row] = RowLoss(lse, xTarget, totalX, s);
        return lse;
    }

    private static float RowLoss(float lse, float xTarget, float sumX, ChunkShape s)
    {
        float nll = lse - xTarget;
        return s.Smoothing != 0f ? (1f - s.Smoothing) * nll + s.Smoothing * (lse - sumX / s.Vocab) : nll;
    }

    /// <summary>dloss/dx_j of a counted row: (p_j − smoothed one-hot_j)/count.</summary>
    private static float Gradient(float x, float lse, int j, int target, ChunkShape s) =>
        (MathF.Exp(x - lse) - (j == target ? s.OnTarget + s.Uniform : s.Uniform)) * s.InvCount;

    private static void ChunkKernel(FloatView logits, FloatView bias, int hasBias, ArrayView<int> targets, ArrayView<float> rowLoss,
        int hasGrad, ChunkShape s)
    {
        int row = Grid.IdxX;
        int tid = Group.IdxX;
        int threads = Group.DimX;
        int target = targets[row];
        long start = (long)row * s.Stride;
        if (target == s.IgnoreIndex) // uniform across the group: no barrier is skipped by part of it
        {
            if (tid == 0) rowLoss[row] = 0f;
            if (hasGrad != 0)
                for (int j = tid; j < s.Stride; j += threads) logits.Store(start + j, 0f);
            return;
        }
        // Read before any thread of the group can overwrite it with its gradient (after the reductions' barriers).
        float xTarget = tid == 0 ? logits.Load(start + target) + (hasBias != 0 ? bias.Load(target) : 0f) : 0f;
        var sum = OnlineSum.Empty;
        for (int j = tid; j < s.Vocab; j += threads) sum = sum.Add(logits.Load(start + j) + (hasBias != 0 ? bias.Load(j) : 0f));
        float lse = GroupRowLoss(sum, xTarget, row, rowLoss, s);
        if (hasGrad == 0) return;
        for (int j = tid; j < s.Stride; j += threads)
            logits.Store(start + j, j < s.Vocab ? Gradient(logits.Load(start + j) + (hasBias != 0 ? bias.Load(j) : 0f), lse, j, target, s) : 0f);
    }

    private static void QuadChunk<TQuads>(ComputeDevice device, string key, TQuads quads, Tensor? bias, Tensor logits, int hasBias, Tensor targets,
        Tensor rowLoss, int hasGrad, ChunkShape shape) where TQuads : struct, IQuads
    {
        var k = device.Kernel(key, acc => acc.LoadStreamKernel<TQuads, FloatView, int, ArrayView<int>, ArrayView<float>, int, ChunkShape>(ChunkQuadKernel));
        k(Launch.PerRow(device, shape.Rows, QuadChunkGroup), quads, FloatView.Of(bias ?? logits), hasBias, targets.I32, rowLoss.F32, hasGrad, shape);
    }

    /// <summary>
    /// Threads per row of <see cref="ChunkQuadKernel"/>. On the H100 (bf16 + flash step at b32, 2048 × 50264 chunks;
    /// docs/runs/h100-row-kernels/call2) 512 took 255 µs a chunk, 1024 took 293 and 256 took 280: four groups per
    /// multiprocessor overlap one row's reduction barrier with the others' streaming, and the ~530 rows in flight
    /// (100 KB each) still about fit L2 for the gradient pass's second read.
    /// </summary>
    private const int QuadChunkGroup = 512;

    /// <summary>
    /// The chunk kernel on rows that are whole quads (<see cref="IQuads"/>): the same math, four logits per access.
    /// Each thread issues the loads of <see cref="QuadsInFlight"/> quads before it uses any (unconditional loads, the
    /// index clamped to the row, so that they sit in one basic block; a quad past the row is then masked out), and
    /// folds the 16 logits into its running sum as one block (<see cref="OnlineSum.AddBlock"/>): with one load in
    /// flight per thread, the bf16 kernel streamed ~1.6 TB/s.
    /// </summary>
    private static void ChunkQuadKernel<TQuads>(TQuads logits, FloatView bias, int hasBias, ArrayView<int> targets, ArrayView<float> rowLoss,
        int hasGrad, ChunkShape s) where TQuads : struct, IQuads
    {
        int row = Grid.IdxX;
        int tid = Group.IdxX;
        int threads = Group.DimX;
        int target = targets[row];
        int quads = s.Stride / 4;
        long start = (long)row * quads;
        if (target == s.IgnoreIndex)
        {
            if (tid == 0) rowLoss[row] = 0f;
            if (hasGrad != 0)
                for (int q = tid; q < quads; q += threads) logits.Store(start + q, default);
            return;
        }
        float xTarget = 0f;
        if (tid == 0) xTarget = Quads.Get(logits.Load(start + target / 4), target % 4) + (hasBias != 0 ? bias.Load(target) : 0f);
        var sum = OnlineSum.Empty;
        for (int q0 = tid; q0 < quads; q0 += QuadsInFlight * threads)
        {
            int q1 = q0 + threads, q2 = q1 + threads, q3 = q2 + threads;
            LoadBlock(logits, start, q0, threads, quads, out var x0, out var x1, out var x2, out var x3);
            x0 = Biased(x0, q0, bias, hasBias, s);
            x1 = Biased(x1, q1, bias, hasBias, s);
            x2 = Biased(x2, q2, bias, hasBias, s);
            x3 = Biased(x3, q3, bias, hasBias, s);
            sum = sum.AddBlock(x0, x1, x2, x3);
        }
        float lse = GroupRowLoss(sum, xTarget, row, rowLoss, s);
        if (hasGrad == 0) return;
        for (int q0 = tid; q0 < quads; q0 += QuadsInFlight * threads)
        {
            int q1 = q0 + threads, q2 = q1 + threads, q3 = q2 + threads;
            LoadBlock(logits, start, q0, threads, quads, out var x0, out var x1, out var x2, out var x3);
            logits.Store(start + q0, GradientQuad(x0, q0, lse, target, bias, hasBias, s));
            if (q1 < quads) logits.Store(start + q1, GradientQuad(x1, q1, lse, target, bias, hasBias, s));
            if (q2 < quads) logits.Store(start + q2, GradientQuad(x2, q2, lse, target, bias, hasBias, s));
            if (q3 < quads) logits.Store(start + q3, GradientQuad(x3, q3, lse, target, bias, hasBias, s));
        }
    }

    /// <summary>Quads each thread of <see cref="ChunkQuadKernel"/> loads before using them (the loop body is written out for 4).</summary>
    private const int QuadsInFlight = 4;

    /// <summary>
    /// Quads q0 + i·threads (i &lt; 4) of the row from <paramref name="start"/>, back to back: the indices are clamped to
    /// the row's last quad instead of tested, so the four loads share one basic block and are in flight together (the
    /// caller masks or skips the quads past the row).
    /// </summary>
    private static void LoadBlock<TQuads>(TQuads logits, long start, int q0, int threads, int quads,
        out MatMul.Quad x0, out MatMul.Quad x1, out MatMul.Quad x2, out MatMul.Quad x3) where TQuads : struct, IQuads
    {
        int last = quads - 1;
        x0 = logits.Load(start + q0);
        x1 = logits.Load(start + Math.Min(q0 + threads, last));
        x2 = logits.Load(start + Math.Min(q0 + 2 * threads, last));
        x3 = logits.Load(start + Math.Min(q0 + 3 * threads, last));
    }

    /// <summary>Quad q's logits plus their bias; −∞ past the vocabulary (the padding, and quads past the row), which the sums skip.</summary>
    private static MatMul.Quad Biased(MatMul.Quad x, int q, FloatView bias, int hasBias, ChunkShape s)
    {
        int j = 4 * q;
        if (j + 4 <= s.Vocab)
            return hasBias != 0 ? new MatMul.Quad(x.X + bias.Load(j), x.Y + bias.Load(j + 1), x.Z + bias.Load(j + 2), x.W + bias.Load(j + 3)) : x;
        var r = new MatMul.Quad(float.NegativeInfinity, float.NegativeInfinity, float.NegativeInfinity, float.NegativeInfinity);
        for (int i = 0; i < 4 && j + i < s.Vocab; i++) Quads.Set(ref r, i, Quads.Get(x, i) + (hasBias != 0 ? bias.Load(j + i) : 0f));
        return r;
    }

    /// <summary>The gradient of quad q's logits (0 for the padding past the vocabulary).</summary>
    private static MatMul.Quad GradientQuad(MatMul.Quad x, int q, float lse, int target, FloatView bias, int hasBias, ChunkShape s)
    {
        int j = 4 * q;
        x = Biased(x, q, bias, hasBias, s);
        if (j + 4 <= s.Vocab)
            return new MatMul.Quad(Gradient(x.X, lse, j, target, s), Gradient(x.Y, lse, j + 1, target, s),
                Gradient(x.Z, lse, j + 2, target, s), Gradient(x.W, lse, j + 3, target, s));
        var g = default(MatMul.Quad);
        for (int i = 0; i < 4 && j + i < s.Vocab; i++) Quads.Set(ref g, i, Gradient(Quads.Get(x, i), lse, j + i, target, s));
        return g;
    }

    /// <summary>The portable chunk: thread per row, grid-stride over rows, the forward's blocked sums.</summary>
    private static void ChunkRowKernel(FloatView logits, FloatView bias, int hasBias, ArrayView<int> targets, ArrayView<float> rowLoss,
        int hasGrad, ChunkShape s)
    {
        int stride = Grid.DimX * Group.DimX;
        for (int row = Grid.GlobalIndex.X; row < s.Rows; row += stride)
        {
            int target = targets[row];
            long start = (long)row * s.Stride;
            if (target == s.IgnoreIndex)
            {
                rowLoss[row] = 0f;
                if (hasGrad != 0)
                    for (int j = 0; j < s.Stride; j++) logits.Store(start + j, 0f);
                continue;
            }
            float max = float.NegativeInfinity;
            for (int j = 0; j < s.Vocab; j++) max = MathF.Max(max, logits.Load(start + j) + (hasBias != 0 ? bias.Load(j) : 0f));
            float sum = 0f, sumX = 0f;
            for (int j0 = 0; j0 < s.Vocab; j0 += SumBlock)
            {
                int end = Math.Min(s.Vocab, j0 + SumBlock);
                float part = 0f, partX = 0f;
                for (int j = j0; j < end; j++)
                {
                    float x = logits.Load(start + j) + (hasBias != 0 ? bias.Load(j) : 0f);
                    part += MathF.Exp(x - max);
                    partX += x;
                }
                sum += part;
                sumX += partX;
            }
            float lse = max + MathF.Log(sum);
            rowLoss[row] = RowLoss(lse, logits.Load(start + target) + (hasBias != 0 ? bias.Load(target) : 0f), sumX, s);
            if (hasGrad == 0) continue;
            for (int j = 0; j < s.Stride; j++)
                logits.Store(start + j, j < s.Vocab ? Gradient(logits.Load(start + j) + (hasBias != 0 ? bias.Load(j) : 0f), lse, j, target, s) : 0f);
        }
    }

    private static void ForwardKernel(FloatView logits, ArrayView<int> targets, ArrayView<float> rowLse, ArrayView<float> rowLoss,
        ArrayView<int> status, int vocab, int ignoreIndex, float smoothing)
    {
        int row = Grid.IdxX;
        int tid = Group.IdxX;
        int threads = Group.DimX;
        int target = targets[row];
        // The target is the same for the whole group, so these early returns skip the barriers below uniformly.
        if (target == ignoreIndex || target < 0 || target >= vocab)
        {
            if (tid == 0)
            {
                rowLse[row] = 0f;
                rowLoss[row] = 0f;
                if (target != ignoreIndex) Atomic.Add(ref status[1], 1);
            }
            return;
        }

        long start = (long)row * vocab;
        var sum = OnlineSum.Empty;
        for (int j = tid; j < vocab; j += threads) sum = sum.Add(logits.Load(start + j));
        float xTarget = tid == 0 ? logits.Load(start + target) : 0f;
        float lse = GroupRowLoss(sum, xTarget, row, rowLoss, new ChunkShape(vocab, vocab, ignoreIndex, smoothing, 0f, 0f, 0f, 0));
        if (tid == 0)
        {
            rowLse[row] = lse;
            Atomic.Add(ref status[0], 1);
        }
    }

    /// <summary>One group: loss[0] = scale·Σ rowLoss, in a fixed order (deterministic).</summary>
    private static void MeanKernel(ArrayView<float> rowLoss, int rows, float scale, ArrayView<float> loss)
    {
        float s = Reduce.StridedSum(rowLoss, Group.IdxX, rows, Group.DimX);
        float total = GroupExtensions.Reduce<float, AddFloat>(s);
        if (Group.IdxX == 0) loss[0] = total * scale;
    }

    private static void BackwardKernel(FloatView logits, ArrayView<int> targets, ArrayView<float> rowLse, ArrayView<float> dloss,
        FloatView dlogits, int vocab, int ignoreIndex, float onTarget, float uniform, float invCount)
    {
        int row = Grid.IdxX;
        int tid = Group.IdxX;
        int threads = Group.DimX;
        int target = targets[row];
        if (target == ignoreIndex) return;
        long start = (long)row * vocab;
        float lse = rowLse[row];
        float g = dloss[0] * invCount;
        for (int j = tid; j < vocab; j += threads)
        {
            float p = MathF.Exp(logits.Load(start + j) - lse);
            float want = j == target ? onTarget + uniform : uniform;
            dlogits.Add(start + j, g * (p - want));
        }
    }

    /// <summary>
    /// The portable forward sums serially in blocks of this many elements (a partial per block, then the partials):
    /// float32 error grows like (SumBlock + V/SumBlock)·u rather than V·u.
    /// </summary>
    private const int SumBlock = 32;

    /// <summary>
    /// The portable forward: thread per row, grid-stride over rows. Valid and out-of-range rows are counted per thread
    /// and added to the status once per thread.
    /// </summary>
    private static void ForwardRowKernel(FloatView logits, ArrayView<int> targets, ArrayView<float> rowLse, ArrayView<float> rowLoss,
        ArrayView<int> status, int rows, int vocab, int ignoreIndex, float smoothing)
    {
        int stride = Grid.DimX * Group.DimX;
        int valid = 0, bad = 0;
        for (int row = Grid.GlobalIndex.X; row < rows; row += stride)
        {
            int target = targets[row];
            if (target == ignoreIndex || target < 0 || target >= vocab)
            {
                rowLse[row] = 0f;
                rowLoss[row] = 0f;
                if (target != ignoreIndex) bad++;
                continue;
            }
            long start = (long)row * vocab;
            float max = float.NegativeInfinity;
            for (int j = 0; j < vocab; j++) max = MathF.Max(max, logits.Load(start + j));
            float sum = 0f, sumX = 0f;
            for (int j0 = 0; j0 < vocab; j0 += SumBlock)
            {
                int end = Math.Min(vocab, j0 + SumBlock);
                float part = 0f, partX = 0f;
                for (int j = j0; j < end; j++)
                {
                    float x = logits.Load(start + j);
                    part += MathF.Exp(x - max);
                    partX += x;
                }
                sum += part;
                sumX += partX;
            }
            float lse = max + MathF.Log(sum);
            rowLse[row] = lse;
            float nll = lse - logits.Load(start + target);
            rowLoss[row] = smoothing != 0f ? (1f - smoothing) * nll + smoothing * (lse - sumX / vocab) : nll;
            valid++;
        }
        if (valid != 0) Atomic.Add(ref status[0], valid);
        if (bad != 0) Atomic.Add(ref status[1], bad);
    }

    /// <summary>The portable mean: global thread 0 adds the row losses in order; every other thread returns.</summary>
    private static void MeanSingleThreadKernel(ArrayView<float> rowLoss, int rows, float scale, ArrayView<float> loss)
    {
        if (Grid.GlobalIndex.X != 0) return;
        float total = 0f;
        for (int r0 = 0; r0 < rows; r0 += SumBlock)
        {
            int end = Math.Min(rows, r0 + SumBlock);
            float part = 0f;
            for (int r = r0; r < end; r++) part += rowLoss[r];
            total += part;
        }
        loss[0] = total * scale;
    }

    /// <summary>The portable backward: thread per row, grid-stride over rows.</summary>
    private static void BackwardRowKernel(FloatView logits, ArrayView<int> targets, ArrayView<float> rowLse, ArrayView<float> dloss,
        FloatView dlogits, int rows, int vocab, int ignoreIndex, float onTarget, float uniform, float invCount)
    {
        int stride = Grid.DimX * Group.DimX;
        float g = dloss[0] * invCount;
        for (int row = Grid.GlobalIndex.X; row < rows; row += stride)
        {
            int target = targets[row];
            if (target == ignoreIndex) continue;
            long start = (long)row * vocab;
            float lse = rowLse[row];
            for (int j = 0; j < vocab; j++)
            {
                float p = MathF.Exp(logits.Load(start + j) - lse);
                float want = j == target ? onTarget + uniform : uniform;
                dlogits.Add(start + j, g * (p - want));
            }
        }
    }

    /// <summary>Float64 CPU references (row-major logits [rows, vocab]).</summary>
    public static class Reference
    {
        public static double Forward(double[] logits, int[] targets, int vocab, int ignoreIndex, double smoothing, out int count)
        {
            double total = 0;
            count = 0;
            for (int r = 0; r < targets.Length; r++)
            {
                if (targets[r] == ignoreIndex) continue;
                double lse = LogSumExp(logits, r, vocab), sumX = 0;
                for (int j = 0; j < vocab; j++) sumX += logits[(long)r * vocab + j];
                double nll = lse - logits[(long)r * vocab + targets[r]];
                total += (1 - smoothing) * nll + smoothing * (lse - sumX / vocab);
                count++;
            }
            return count > 0 ? total / count : 0;
        }

        /// <summary>d(mean loss)/d(logits) for dloss = 1.</summary>
        public static double[] Gradient(double[] logits, int[] targets, int vocab, int ignoreIndex, double smoothing)
        {
            var grad = new double[logits.Length];
            int count = targets.Count(t => t != ignoreIndex);
            if (count == 0) return grad;
            for (int r = 0; r < targets.Length; r++)
            {
                if (targets[r] == ignoreIndex) continue;
                double lse = LogSumExp(logits, r, vocab);
                for (int j = 0; j < vocab; j++)
                {
                    long i = (long)r * vocab + j;
                    double want = (j == targets[r] ? 1 - smoothing : 0) + smoothing / vocab;
                    grad[i] = (Math.Exp(logits[i] - lse) - want) / count;
                }
            }
            return grad;
        }

        private static double LogSumExp(double[] logits, int row, int vocab)
        {
            double max = double.NegativeInfinity, sum = 0;
            for (int j = 0; j < vocab; j++) max = Math.Max(max, logits[(long)row * vocab + j]);
            for (int j = 0; j < vocab; j++) sum += Math.Exp(logits[(long)row * vocab + j] - max);
            return max + Math.Log(sum);
        }
    }
}
