using ILGPU;
using ILGPU.Algorithms;
using ILGPU.Algorithms.ScanReduceOperations;
using ILGPU.Runtime;
using Memopt.Tensors;

namespace Memopt.Kernels;

/// <summary>
/// Sum reductions. Whole tensor (Sum, Mean → one element), in two deterministic stages with one kernel: stage 1 runs
/// G groups, each thread summing a grid-stride share of x (coalesced) and each group reducing its threads into
/// partial[g]; stage 2 runs that kernel again as one group over the G partials and writes scale·Σ into y. With G = 1
/// (the CPU accelerator) stage 1 writes y directly. Row sums over the last dimension: one group per row.
/// Backward of both is a broadcast: dx += scale·dy (dy one element per tensor, or per row).
/// Those are the cooperative forms (group reductions, CUDA). The portable forms (<see cref="KernelPath"/>, the CPU
/// accelerator, where a group reduction is an OS-level rendezvous) have no reduction: stage 1 gives every thread its
/// own partial slot and stage 2 adds the slots on one thread; row sums give each row to one thread. (Forced onto
/// CUDA they stay correct but not fast: one thread would add a slot per GPU thread of stage 1.)
/// Inputs and outputs may be float32 or bfloat16 (<see cref="FloatView"/>); every sum is float32, partials too.
/// </summary>
public static class Reduce
{
    /// <summary>
    /// values[first] + values[first + stride] + … (indices below <paramref name="count"/>), or the sum of their squares,
    /// added in index order, for kernels where one thread walks a strided share. Four loads are in flight together
    /// (clamped indices, one basic block); a masked one adds +0, which changes no float32 sum, so the result is the
    /// one-at-a-time loop's bit for bit. One dependent load at a time held the grad norm's partials to ~1 TB/s and its
    /// single-group finish, like the cross-entropy mean over 8192 rows, to 16–32 µs on the H100.
    /// </summary>
    public static float StridedSum(ArrayView<float> values, long first, long count, long stride, bool squares = false)
    {
        long last = count - 1;
        float s = 0f;
        for (long i = first; i < count; i += 4 * stride)
        {
            float v0 = values[i], v1 = values[Math.Min(i + stride, last)], v2 = values[Math.Min(i + 2 * stride, last)], v3 = values[Math.Min(i + 3 * stride, last)];
            if (squares)
            {
                v0 *= v0; v1 *= v1; v2 *= v2; v3 *= v3;
            }
            s += v0;
            s += i + stride < count ? v1 : 0f;
            s += i + 2 * stride < count ? v2 : 0f;
            s += i + 3 * stride < count ? v3 : 0f;
        }
        return s;
    }

    /// <summary>y[0] = Σ x. <paramref name="partialGroups"/> overrides stage 1's group count (tests use it for the two-stage path).</summary>
    public static void Sum(Tensor x, Tensor y, int? partialGroups = null) => Total("sum", x, y, 1f, partialGroups);

    /// <summary>y[0] = Σ x / n.</summary>
    public static void Mean(Tensor x, Tensor y, int? partialGroups = null) => Total("mean", x, y, 1f / x.Numel, partialGroups);

    /// <summary>dx += scale·dy[0] for every element (the backward of Sum with scale 1 and of Mean with scale 1/n).</summary>
    public static void BroadcastAdd(Tensor dy, Tensor dx, float scale)
    {
        Check.Float("reduce_backward", dy);
        Check.Float("reduce_backward", dx, "gradient");
        Check.That(dy.Numel == 1, "reduce_backward", $"the gradient of a total must have one element, got {dy.Shape} for {dx.Shape}");
        var k = dx.Device.Kernel("reduce.broadcast_add", acc => acc.LoadStreamKernel<FloatView, FloatView, float, long>(BroadcastAddKernel));
        k(Launch.Elementwise(dx.Device, dx.Numel), FloatView.Of(dy), FloatView.Of(dx), scale, dx.Numel);
    }

    /// <summary>y[r] = Σ_c x[r, c] over the last dimension; y holds one element per row (any shape).</summary>
    public static void RowSum(Tensor x, Tensor y)
    {
        CheckRows("row_sum", x, y);
        var device = x.Device;
        if (Launch.Cooperative(device))
        {
            var k = device.Kernel("reduce.row_sum", acc => acc.LoadStreamKernel<FloatView, FloatView, int>(RowSumKernel));
            k(Launch.PerRow(device, x.Shape.Rows), FloatView.Of(x), FloatView.Of(y), x.Shape.Last);
            return;
        }
        var serial = device.Kernel("reduce.row_sum_thread_per_row", acc => acc.LoadStreamKernel<FloatView, FloatView, int, int>(RowSumRowKernel));
        serial(Launch.ThreadPerRow(device, x.Shape.Rows), FloatView.Of(x), FloatView.Of(y), (int)x.Shape.Rows, x.Shape.Last);
    }

    /// <summary>dx[r, c] += dy[r]: the backward of <see cref="RowSum"/>.</summary>
    public static void RowSumBackward(Tensor dy, Tensor dx)
    {
        CheckRows("row_sum_backward", dx, dy);
        var k = dx.Device.Kernel("reduce.row_broadcast_add", acc => acc.LoadStreamKernel<FloatView, FloatView, long, int>(RowBroadcastAddKernel));
        k(Launch.Elementwise(dx.Device, dx.Numel), FloatView.Of(dy), FloatView.Of(dx), dx.Numel, dx.Shape.Last);
    }

    private static void Total(string op, Tensor x, Tensor y, float scale, int? partialGroups)
    {
        Check.Float(op, x);
        Check.Float(op, y, "output");
        Check.SameDevice(op, x, y);
        Check.That(y.Numel == 1, op, $"output {y.Shape} must have one element (input {x.Shape})");
        var device = x.Device;
        int group = Launch.GroupSize(device, 256);
        int groups = partialGroups ?? Launch.Elementwise(device, x.Numel).GridDim.X;
        if (groups < 1) throw new ArgumentOutOfRangeException(nameof(partialGroups), partialGroups, "need at least one group");
        if (!Launch.Cooperative(device))
        {
            var config = new KernelConfig(groups, group);
            using var slots = Tensor.Empty(device, new Shape(groups * group), DType.F32, MemoryCategory.Workspace, op);
            var partials = device.Kernel("reduce.total_per_thread", acc => acc.LoadStreamKernel<FloatView, ArrayView<float>, long>(ThreadPartialKernel));
            partials(config, FloatView.Of(x), slots.F32, x.Numel);
            var finish = device.Kernel("reduce.total_single_thread", acc => acc.LoadStreamKernel<ArrayView<float>, FloatView, int, float>(SingleThreadSumKernel));
            finish(Launch.SingleThread(device), slots.F32, FloatView.Of(y), groups * group, scale);
            return;
        }
        var stage = device.Kernel("reduce.total", acc => acc.LoadStreamKernel<FloatView, FloatView, long, float>(TotalKernel));
        if (groups == 1)
        {
            stage(new KernelConfig(1, group), FloatView.Of(x), FloatView.Of(y), x.Numel, scale);
            return;
        }
        using var partial = Tensor.Empty(device, new Shape(groups), DType.F32, MemoryCategory.Workspace, op);
        stage(new KernelConfig(groups, group), FloatView.Of(x), FloatView.Of(partial), x.Numel, 1f);
        stage(new KernelConfig(1, group), FloatView.Of(partial), FloatView.Of(y), groups, scale);
    }

    private static void CheckRows(string op, Tensor x, Tensor perRow)
    {
        Check.Float(op, x);
        Check.Float(op, perRow, "row values");
        Check.SameDevice(op, x, perRow);
        Check.That(perRow.Numel == x.Shape.Rows, op, $"{x.Shape} has {x.Shape.Rows} rows, the per-row tensor {perRow.Shape} has {perRow.Numel} elements");
    }

    /// <summary>output[group] = scale · Σ over this group's grid-stride share of x[0..n).</summary>
    private static void TotalKernel(FloatView x, FloatView output, long n, float scale)
    {
        long stride = (long)Grid.DimX * Group.DimX;
        int group = Grid.IdxX;
        bool first = Group.IsFirstThread;
        float s = 0;
        for (long i = Grid.GlobalIndex.X; i < n; i += stride) s += x.Load(i);
        float total = GroupExtensions.Reduce<float, AddFloat>(s);
        if (first) output.Store(group, scale * total);
    }

    /// <summary>The portable stage 1: slots[thread] = Σ over this thread's grid-stride share of x[0..n).</summary>
    private static void ThreadPartialKernel(FloatView x, ArrayView<float> slots, long n)
    {
        long stride = (long)Grid.DimX * Group.DimX;
        int thread = Grid.GlobalIndex.X;
        float s = 0;
        for (long i = thread; i < n; i += stride) s += x.Load(i);
        slots[thread] = s;
    }

    /// <summary>The portable stage 2: global thread 0 writes scale·Σ slots, added in order; every other thread returns.</summary>
    private static void SingleThreadSumKernel(ArrayView<float> slots, FloatView output, int count, float scale)
    {
        if (Grid.GlobalIndex.X != 0) return;
        float s = 0;
        for (int i = 0; i < count; i++) s += slots[i];
        output.Store(0, scale * s);
    }

    private static void BroadcastAddKernel(FloatView dy, FloatView dx, float scale, long n)
    {
        long stride = (long)Grid.DimX * Group.DimX;
        float g = scale * dy.Load(0);
        for (long i = Grid.GlobalIndex.X; i < n; i += stride) dx.Add(i, g);
    }

    private static void RowSumKernel(FloatView x, FloatView y, int cols)
    {
        int tid = Group.IdxX;
        int groupSize = Group.DimX;
        long row = Grid.IdxX;
        long rowBase = row * cols;
        float s = 0;
        for (int c = tid; c < cols; c += groupSize) s += x.Load(rowBase + c);
        float total = GroupExtensions.Reduce<float, AddFloat>(s);
        if (tid == 0) y.Store(row, total);
    }

    /// <summary>The portable row sum: thread per row, grid-stride over rows, summed in blocks of 32 (error ~(32 + C/32)·u).</summary>
    private static void RowSumRowKernel(FloatView x, FloatView y, int rows, int cols)
    {
        int stride = Grid.DimX * Group.DimX;
        for (int row = Grid.GlobalIndex.X; row < rows; row += stride)
        {
            long rowBase = (long)row * cols;
            float s = 0;
            for (int c0 = 0; c0 < cols; c0 += 32)
            {
                int end = Math.Min(cols, c0 + 32);
                float part = 0;
                for (int c = c0; c < end; c++) part += x.Load(rowBase + c);
                s += part;
            }
            y.Store(row, s);
        }
    }

    private static void RowBroadcastAddKernel(FloatView dy, FloatView dx, long n, int cols)
    {
        long stride = (long)Grid.DimX * Group.DimX;
        long start = Grid.GlobalIndex.X;
        // Row and column advance by stride's quotient and remainder: no 64-bit division per element.
        long row = start / cols, rowStep = stride / cols;
        int column = (int)(start % cols), columnStep = (int)(stride % cols);
        for (long i = start; i < n; i += stride)
        {
            dx.Add(i, dy.Load(row));
            row += rowStep;
            column += columnStep;
            if (column >= cols) { column -= cols; row++; }
        }
    }

    /// <summary>Float64 CPU references.</summary>
    public static class Reference
    {
        public static double Sum(double[] x) => x.Sum();
        public static double Mean(double[] x) => x.Sum() / x.Length;

        public static double[] RowSum(double[] x, int cols)
        {
            var y = new double[x.Length / cols];
            for (int i = 0; i < x.Length; i++) y[i / cols] += x[i];
            return y;
        }
    }
}
