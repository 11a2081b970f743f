using ILGPU;
using ILGPU.Runtime;
using Memopt.Tensors;

namespace Memopt.Kernels;

/// <summary>
/// Token embedding lookup: y[..., :] = table[ids[...], :] for int32 ids and a table [V, C].
/// Forward walks y in order (coalesced writes, C-long contiguous reads of table rows), four values per access where
/// C is a multiple of 4 and both tensors are quad-aligned.
/// Backward scatter-adds dy into dtable rows with float atomics, since ids repeat (the summation order of repeated
/// ids therefore varies from run to run on the GPU, within float rounding).
/// An id outside 0..V−1 never reads or writes out of bounds: the kernels give it a zero row and drop its gradient.
/// Catching such ids is a host-side check (<see cref="CheckIds"/>) because it needs the ids on the host.
/// Dtypes: the table and y may each be float32 or bfloat16 (<see cref="FloatView"/>; under mixed precision a float32
/// table gives bf16 activations, each value rounded once), dy too; the table's gradient is float32, because the
/// scatter-add is a float atomic.
/// </summary>
public static class Embedding
{
    /// <summary>Validates ids (int32, any shape) and table [V, C] (float32 or bf16); returns the output shape ids.Shape + [C].</summary>
    public static Shape OutputShape(Tensor ids, Tensor table)
    {
        const string op = "embedding";
        Check.DType(op, ids, DType.I32, "ids");
        Check.Float(op, table, "table");
        Check.SameDevice(op, ids, table);
        Check.That(table.Shape.Rank == 2, op, $"table {table.Shape} must be [vocab, C] (ids {ids.Shape})");
        return new Shape([.. ids.Shape.Dims, table.Shape[1]]);
    }

    /// <summary>Copies the ids to the host and throws a <see cref="ShapeException"/> naming the first id outside 0..vocab−1.</summary>
    public static void CheckIds(Tensor ids, int vocab)
    {
        Check.DType("embedding", ids, DType.I32, "ids");
        var values = ids.ToIntArray();
        for (int i = 0; i < values.Length; i++)
            Check.That(values[i] >= 0 && values[i] < vocab, "embedding",
                $"id {values[i]} at flat position {i} of ids {ids.Shape} is outside the vocabulary 0..{vocab - 1}");
    }

    /// <summary>y = table[ids].</summary>
    public static void Forward(Tensor ids, Tensor table, Tensor y)
    {
        var shape = OutputShape(ids, table);
        Check.Float("embedding", y, "output");
        Check.That(y.Shape.Equals(shape), "embedding", $"output {y.Shape} must be {shape} for ids {ids.Shape} and table {table.Shape}");
        int cols = table.Shape[1];
        if (cols % 4 == 0 && y.Numel <= int.MaxValue)
        {
            if (F32Quads.Fits(table) && Bf16Quads.Fits(y)) { QuadForward(ids, "embedding.fwd_f32_to_bf16x4", F32Quads.Of(table), Bf16Quads.Of(y), table, y); return; }
            if (F32Quads.Fits(table) && F32Quads.Fits(y)) { QuadForward(ids, "embedding.fwd_f32x4", F32Quads.Of(table), F32Quads.Of(y), table, y); return; }
            if (Bf16Quads.Fits(table) && Bf16Quads.Fits(y)) { QuadForward(ids, "embedding.fwd_bf16x4", Bf16Quads.Of(table), Bf16Quads.Of(y), table, y); return; }
        }
        var k = table.Device.Kernel("embedding.fwd", acc => acc.LoadStreamKernel<ArrayView<int>, FloatView, FloatView, int, int, long>(ForwardKernel));
        k(Launch.Elementwise(table.Device, y.Numel), ids.I32, FloatView.Of(table), FloatView.Of(y), table.Shape[0], cols, y.Numel);
    }

    // Four values per access and 32-bit index math where the row length is a multiple of 4 and y has under 2^31
    // elements: the scalar kernel's 64-bit division per element held an 8192×256 lookup to ~40 µs on the H100.
    private static void QuadForward<TTable, TY>(Tensor ids, string key, TTable table, TY y, Tensor tableTensor, Tensor yTensor)
        where TTable : struct, IQuads where TY : struct, IQuads
    {
        var device = tableTensor.Device;
        int quads = (int)(yTensor.Numel / 4);
        var k = device.Kernel(key, acc => acc.LoadStreamKernel<ArrayView<int>, TTable, TY, int, int, int>(ForwardQuadKernel));
        k(Launch.Elementwise(device, quads), ids.I32, table, y, tableTensor.Shape[0], tableTensor.Shape[1] / 4, quads);
    }

    private static void ForwardQuadKernel<TTable, TY>(ArrayView<int> ids, TTable table, TY y, int vocab, int quadsPerRow, int quads)
        where TTable : struct, IQuads where TY : struct, IQuads
    {
        int stride = Grid.DimX * Group.DimX;
        for (int q = Grid.GlobalIndex.X; q < quads; q += stride)
        {
            int row = q / quadsPerRow;
            int id = ids[row];
            y.Store(q, (uint)id < (uint)vocab ? table.Load((long)id * quadsPerRow + (q - row * quadsPerRow)) : default);
        }
    }

    /// <summary>dtable[ids[i], :] += dy[i, :] (atomic float32 adds; dy float32 or bf16).</summary>
    public static void Backward(Tensor ids, Tensor dy, Tensor dtable)
    {
        var shape = OutputShape(ids, dtable);
        Check.Float("embedding_backward", dy, "dy");
        Check.DType("embedding_backward", dtable, DType.F32, "table gradient (atomic adds)");
        Check.That(dy.Shape.Equals(shape), "embedding_backward", $"dy {dy.Shape} must be {shape} for ids {ids.Shape} and table {dtable.Shape}");
        if (dy.Numel <= int.MaxValue)
        {
            // 32-bit index math (a 64-bit division per element dominated the kernel)
            var narrow = dtable.Device.Kernel("embedding.bwd_i32", acc => acc.LoadStreamKernel<ArrayView<int>, FloatView, ArrayView<float>, int, int, int>(BackwardNarrowKernel));
            narrow(Launch.Elementwise(dtable.Device, dy.Numel), ids.I32, FloatView.Of(dy), dtable.F32, dtable.Shape[0], dtable.Shape[1], (int)dy.Numel);
            return;
        }
        var k = dtable.Device.Kernel("embedding.bwd", acc => acc.LoadStreamKernel<ArrayView<int>, FloatView, ArrayView<float>, int, int, long>(BackwardKernel));
        k(Launch.Elementwise(dtable.Device, dy.Numel), ids.I32, FloatView.Of(dy), dtable.F32, dtable.Shape[0], dtable.Shape[1], dy.Numel);
    }

    private static void BackwardNarrowKernel(ArrayView<int> ids, FloatView dy, ArrayView<float> dtable, int vocab, int cols, int n)
    {
        int stride = Grid.DimX * Group.DimX;
        for (int i = Grid.GlobalIndex.X; i < n; i += stride)
        {
            int row = i / cols;
            int id = ids[row];
            if ((uint)id < (uint)vocab) Atomic.Add(ref dtable[(long)id * cols + (i - row * cols)], dy.Load(i));
        }
    }

    private static void ForwardKernel(ArrayView<int> ids, FloatView table, FloatView y, int vocab, int cols, long n)
    {
        long stride = (long)Grid.DimX * Group.DimX;
        for (long i = Grid.GlobalIndex.X; i < n; i += stride)
        {
            long row = i / cols;
            long c = i - row * cols;
            int id = ids[row];
            y.Store(i, (uint)id < (uint)vocab ? table.Load((long)id * cols + c) : 0f);
        }
    }

    private static void BackwardKernel(ArrayView<int> ids, FloatView dy, ArrayView<float> dtable, int vocab, int cols, long n)
    {
        long stride = (long)Grid.DimX * Group.DimX;
        for (long i = Grid.GlobalIndex.X; i < n; i += stride)
        {
            long row = i / cols;
            long c = i - row * cols;
            int id = ids[row];
            if ((uint)id < (uint)vocab) Atomic.Add(ref dtable[(long)id * cols + c], dy.Load(i));
        }
    }

    public static class Reference
    {
        public static double[] Forward(int[] ids, double[] table, int cols)
        {
            var y = new double[ids.Length * cols];
            for (int r = 0; r < ids.Length; r++)
                Array.Copy(table, (long)ids[r] * cols, y, (long)r * cols, cols);
            return y;
        }
    }
}
