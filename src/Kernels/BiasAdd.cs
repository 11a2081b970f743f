using ILGPU;
using ILGPU.Runtime;
using Memopt.Tensors;

namespace Memopt.Kernels;

/// <summary>
/// Bias add over the last dimension: y[r, c] = x[r, c] + bias[c] for x of any rank seen as [rows, cols]
/// (y may be x: in place). One pass, x read once, y written once, bias read from cache; bf16 x and y (8-byte aligned)
/// move four elements per access.
/// Backward: dbias[c] += Σ_r dy[r, c], a column sum done in two deterministic passes (no atomics):
/// pass 1 gives each group a chunk of columns × a block of rows; its threads cover the chunk's columns (adjacent
/// threads read adjacent columns of one row: coalesced) in several row lanes when the chunk is narrower than the group,
/// each thread sums its column down its lanes' rows, and the lanes are combined through shared memory into
/// partial[rowBlock, c]. Pass 2 sums each column's partials into dbias in block order. With a single row block,
/// pass 1 adds straight into dbias. When cols is a multiple of 4 (every model width), pass 1 gives each thread four
/// adjacent columns instead, read with one access per row where dy allows it (8 bytes of bf16, 16 of float32; a
/// two-byte bf16 read per thread left the kernel at ~1.6 ms of a 20 ms bf16 H100 step), with the same groups, row
/// blocks and partials; the summation order depends only on the layout, so bf16 and float32 dy of the same values
/// give bitwise the same sums. That is the cooperative form (CUDA). The portable form (<see cref="KernelPath"/>,
/// the CPU accelerator, where a barrier is an OS-level rendezvous) gives each column to one thread, which sums it
/// down all rows and adds into dbias: one pass, no shared memory, no barrier.
/// The dx of a bias add is dy itself (the caller adds it).
/// x, y, dy and the bias may each be float32 or bfloat16 (<see cref="FloatView"/>: a bf16 activation plus a float32
/// bias under mixed precision); sums are float32 and the bias gradient is float32 in the model (any float dtype works).
/// </summary>
public static class BiasAdd
{
    private const int MaxGroup = 1024;
    /// <summary>Rows a group sums at least before another row block is worth a second pass.</summary>
    private const int MinRowsPerBlock = 64;

    /// <summary>y = x + bias broadcast over the rows (bias over the last dimension); y may be x.</summary>
    public static void Forward(Tensor x, Tensor bias, Tensor y)
    {
        CheckBias("bias_add", x, bias);
        Elementwise.CheckPair("bias_add", x, y);
        long quads = x.Numel / 4;
        if (quads > 0 && Bf16Quads.Fits(x) && Bf16Quads.Fits(y))
        {
            // Mixed precision's case (a bf16 activation, e.g. the B·T×V logits): four bf16 per 8-byte access. Two-byte
            // accesses left the kernel at about a quarter of the H100's bandwidth (2.9 ms of a 22 ms bf16 step).
            var q = x.Device.Kernel("bias_add.fwd_bf16x4",
                acc => acc.LoadStreamKernel<ArrayView<ulong>, ArrayView<ushort>, FloatView, ArrayView<ulong>, ArrayView<ushort>, long, int>(ForwardBf16QuadKernel));
            q(Launch.Elementwise(x.Device, quads), x.Raw.SubView(0, quads * 8).Cast<ulong>(), x.BF16, FloatView.Of(bias),
              y.Raw.SubView(0, quads * 8).Cast<ulong>(), y.BF16, x.Numel, x.Shape.Last);
            return;
        }
        var k = x.Device.Kernel("bias_add.fwd", acc => acc.LoadStreamKernel<FloatView, FloatView, FloatView, long, int>(ForwardKernel));
        k(Launch.Elementwise(x.Device, x.Numel), FloatView.Of(x), FloatView.Of(bias), FloatView.Of(y), x.Numel, x.Shape.Last);
    }


    /// <summary>
    /// dbias[c] += Σ_r dy[r, c]. <paramref name="rowBlocks"/> overrides how many row blocks the cooperative pass 1
    /// splits the rows into (tests use it to exercise the two-pass path on the one-group CPU accelerator); by default
    /// enough to fill the device. The portable path has no row blocks and ignores it.
    /// </summary>
    public static void Backward(Tensor dy, Tensor dbias, int? rowBlocks = null)
    {
        CheckBias("bias_add_backward", dy, dbias);
        var device = dy.Device;
        long rows = dy.Shape.Rows;
        int cols = dy.Shape.Last;
        if (rowBlocks is < 1 || rowBlocks > rows) throw new ArgumentOutOfRangeException(nameof(rowBlocks), rowBlocks, $"row blocks must be in 1..{rows}");
        if (!Launch.Cooperative(device))
        {
            var columns = device.Kernel("bias_add.colsum_thread_per_column",
                acc => acc.LoadStreamKernel<FloatView, FloatView, long, int>(ColumnPerThreadKernel));
            columns(Launch.Elementwise(device, cols), FloatView.Of(dy), FloatView.Of(dbias), rows, cols);
            return;
        }
        int group = Launch.GroupSize(device, 256);
        // Chunk width: the group's threads span min(group, cols rounded up to a power of two) columns, the rest are row lanes.
        int width = 1;
        while (width < cols && width < group) width *= 2;
        int chunks = (cols + width - 1) / width;
        long maxBlocks = Math.Max(1, (rows + MinRowsPerBlock - 1) / MinRowsPerBlock);
        long wantGroups = device.IsCuda ? device.Multiprocessors * 8L : Math.Max(1, device.Multiprocessors);
        long blocks = rowBlocks ?? Math.Clamp(wantGroups / chunks, 1, maxBlocks);
        if (blocks < 1 || blocks > rows) throw new ArgumentOutOfRangeException(nameof(rowBlocks), rowBlocks, $"row blocks must be in 1..{rows}");
        if (blocks * chunks > int.MaxValue) blocks = int.MaxValue / chunks;
        long rowsPerBlock = (rows + blocks - 1) / blocks;
        blocks = (rows + rowsPerBlock - 1) / rowsPerBlock;

        // The groups, row blocks and partials above are the memory model's (WorkspaceShape.BiasBackwardPartials); only
        // how a group's threads share its columns and rows differs between the two forms of pass 1.
        var config = new KernelConfig((int)(blocks * chunks), group);
        var pass1 = cols % 4 == 0 ? QuadPass1(dy, device) : ScalarPass1(dy, device);
        if (blocks == 1)
        {
            pass1(config, FloatView.Of(dbias), rows, cols, width, rowsPerBlock, 1);
            return;
        }
        using var partial = Tensor.Empty(device, new Shape((int)blocks, cols), DType.F32, MemoryCategory.Workspace, "bias_add_backward");
        pass1(config, FloatView.Of(partial), rows, cols, width, rowsPerBlock, 0);
        var pass2 = device.Kernel("bias_add.colsum_final",
            acc => acc.LoadStreamKernel<ArrayView<float>, FloatView, int, int, int>(ColumnFinalKernel));
        int columnsPerGroup = Math.Min(FinalColumns, group);
        pass2(new KernelConfig((cols + columnsPerGroup - 1) / columnsPerGroup, group), partial.F32, FloatView.Of(dbias), (int)blocks, cols, columnsPerGroup);
    }

    /// <summary>Pass 1 with dy bound: (config, output, rows, cols, width, rowsPerBlock, addIntoOutput).</summary>
    private delegate void Pass1(KernelConfig config, FloatView output, long rows, int cols, int width, long rowsPerBlock, int addIntoOutput);

    private static Pass1 ScalarPass1(Tensor dy, ComputeDevice device)
    {
        var kernel = device.Kernel("bias_add.colsum_partial",
            acc => acc.LoadStreamKernel<FloatView, FloatView, long, int, int, long, int>(ColumnPartialKernel));
        var view = FloatView.Of(dy);
        return (config, output, rows, cols, width, rowsPerBlock, add) => kernel(config, view, output, rows, cols, width, rowsPerBlock, add);
    }

    /// <summary>The four-column pass 1 with dy's widest access: bf16 words (8-byte aligned), float4s (16-byte aligned), else four scalar reads.</summary>
    private static Pass1 QuadPass1(Tensor dy, ComputeDevice device)
    {
        // cols % 4 == 0: a whole number of 8-byte (bf16) or 16-byte (float32) quads
        if (Bf16Quads.Fits(dy))
            return QuadPass(device, "bias_add.colsum_partial_bf16x4", Bf16Quads.Of(dy));
        if (F32Quads.Fits(dy))
            return QuadPass(device, "bias_add.colsum_partial_f32x4", F32Quads.Of(dy));
        return QuadPass(device, "bias_add.colsum_partial_x4", new ScalarQuads(FloatView.Of(dy)));
    }

    private static Pass1 QuadPass<TQuads>(ComputeDevice device, string key, TQuads source) where TQuads : struct, IQuads
    {
        var kernel = device.Kernel(key,
            acc => acc.LoadStreamKernel<TQuads, FloatView, long, int, int, long, int>(ColumnPartialQuadKernel));
        return (config, output, rows, cols, width, rowsPerBlock, add) => kernel(config, source, output, rows, cols, width, rowsPerBlock, add);
    }

    private static void CheckBias(string op, Tensor x, Tensor bias)
    {
        Check.Float(op, x);
        Check.Float(op, bias, "bias");
        Check.SameDevice(op, x, bias);
        if (bias.Shape.Rank != 1 || bias.Shape[0] != x.Shape.Last)
            throw new ShapeException(op, $"bias {bias.Shape} must be [{x.Shape.Last}], the last dimension of {x.Shape}");
    }

    private static void ForwardKernel(FloatView x, FloatView bias, FloatView y, long n, int cols)
    {
        long stride = (long)Grid.DimX * Group.DimX;
        long start = Grid.GlobalIndex.X;
        // The column advances by stride mod cols per step: one 64-bit division per thread, not one per element.
        int column = (int)(start % cols);
        int step = (int)(stride % cols);
        for (long i = start; i < n; i += stride)
        {
            y.Store(i, x.Load(i) + bias.Load(column));
            column += step;
            if (column >= cols) column -= cols;
        }
    }

    /// <summary>
    /// The bf16 → bf16 forward, four elements (one 8-byte word, element j in bits 16j..16j+15) per access; each sum is
    /// float32 rounded once, exactly as <see cref="ForwardKernel"/> rounds it. Global thread 0 also does the last n mod 4
    /// elements through the two-byte views.
    /// </summary>
    private static void ForwardBf16QuadKernel(ArrayView<ulong> x, ArrayView<ushort> xTail, FloatView bias, ArrayView<ulong> y, ArrayView<ushort> yTail, long n, int cols)
    {
        long quads = n / 4;
        long stride = (long)Grid.DimX * Group.DimX;
        long start = Grid.GlobalIndex.X;
        int column = (int)(start * 4 % cols);
        int step = (int)(stride * 4 % cols);
        for (long q = start; q < quads; q += stride)
        {
            ulong word = x[q], sum = 0;
            int c = column;
            for (int j = 0; j < 4; j++)
            {
                float v = BFloat16.ToFloat((ushort)(word >> (16 * j))) + bias.Load(c);
                sum |= (ulong)BFloat16.FromFloat(v) << (16 * j);
                c++;
                if (c >= cols) c -= cols; // c ≤ cols before: one subtraction suffices even for cols < 4
            }
            y[q] = sum;
            column += step;
            if (column >= cols) column -= cols;
        }
        if (start == 0)
            for (long i = quads * 4; i < n; i++)
                yTail[i] = BFloat16.FromFloat(BFloat16.ToFloat(xTail[i]) + bias.Load((int)(i % cols)));
    }

    /// <summary>
    /// Group g sums column chunk g % chunks over row block g / chunks. Thread t owns column chunk·width + t % width
    /// and row lane t / width; lanes step through the block's rows by the number of lanes.
    /// </summary>
    private static void ColumnPartialKernel(FloatView dy, FloatView output, long rows, int cols, int width, long rowsPerBlock, int addIntoOutput)
    {
        int tid = Group.IdxX;
        int groupSize = Group.DimX;
        int g = Grid.IdxX;
        var shared = SharedMemory.Allocate<float>(MaxGroup);
        int chunks = (cols + width - 1) / width;
        int chunk = g % chunks;
        long block = g / chunks;
        int column = chunk * width + tid % width;
        int lane = tid / width;
        int lanes = groupSize / width;
        long rowStart = block * rowsPerBlock;
        long rowEnd = rowStart + rowsPerBlock < rows ? rowStart + rowsPerBlock : rows;

        float s = 0;
        if (column < cols && lane < lanes)
            for (long r = rowStart + lane; r < rowEnd; r += lanes) s += dy.Load(r * cols + column);
        shared[tid] = s;
        Group.Barrier();
        CombineLanes(shared, output, tid, lanes, width, chunk * width + tid, cols, block, addIntoOutput);
    }

    /// <summary>
    /// <see cref="ColumnPartialKernel"/> with four adjacent columns per thread (cols % 4 == 0), one
    /// <typeparamref name="TQuads"/> read per row: thread t owns columns chunk·width + 4·(t mod width/4) .. +3 and row
    /// lane t / (width/4), four times the lanes of the scalar form over the same chunk and row block. It puts its four
    /// sums at shared[4t ..], which is [lane][width] as the scalar form lays out its one sum per thread, so the lanes
    /// are combined the same way.
    /// </summary>
    private static void ColumnPartialQuadKernel<TQuads>(TQuads dy, FloatView output, long rows, int cols, int width, long rowsPerBlock, int addIntoOutput)
        where TQuads : struct, IQuads
    {
        int tid = Group.IdxX;
        int groupSize = Group.DimX;
        int g = Grid.IdxX;
        var shared = SharedMemory.Allocate<float>(4 * MaxGroup);
        int chunks = (cols + width - 1) / width;
        int chunk = g % chunks;
        long block = g / chunks;
        int quadsWide = width >> 2, quadsPerRow = cols >> 2;
        int quad = chunk * quadsWide + tid % quadsWide;
        int lane = tid / quadsWide;
        int lanes = groupSize / quadsWide;
        long rowStart = block * rowsPerBlock;
        long rowEnd = rowStart + rowsPerBlock < rows ? rowStart + rowsPerBlock : rows;

        float s0 = 0, s1 = 0, s2 = 0, s3 = 0;
        if (quad < quadsPerRow && lane < lanes)
            for (long r = rowStart + lane; r < rowEnd; r += lanes)
            {
                var v = dy.Load(r * quadsPerRow + quad);
                s0 += v.X;
                s1 += v.Y;
                s2 += v.Z;
                s3 += v.W;
            }
        shared[4 * tid] = s0;
        shared[4 * tid + 1] = s1;
        shared[4 * tid + 2] = s2;
        shared[4 * tid + 3] = s3;
        Group.Barrier();
        CombineLanes(shared, output, tid, lanes, width, chunk * width + tid, cols, block, addIntoOutput);
    }

    /// <summary>
    /// Pass 1's end: thread t &lt; width sums column t of the chunk over the lanes' sums in shared[lane·width + t], in
    /// lane order, and adds the total into dbias (one row block) or stores it as partial[block, column].
    /// </summary>
    private static void CombineLanes(ArrayView<float> shared, FloatView output, int tid, int lanes, int width, int column, int cols, long block, int addIntoOutput)
    {
        if (tid < width && column < cols)
        {
            float total = 0;
            for (int l = 0; l < lanes; l++) total += shared[l * width + tid];
            if (addIntoOutput != 0) output.Add(column, total);
            else output.Store(block * cols + column, total);
        }
    }

    /// <summary>The portable column sum: dbias[c] += Σ_r dy[r, c], one thread per column, grid-stride over columns.</summary>
    private static void ColumnPerThreadKernel(FloatView dy, FloatView dbias, long rows, int cols)
    {
        int stride = Grid.DimX * Group.DimX;
        for (int c = Grid.GlobalIndex.X; c < cols; c += stride)
        {
            float s = 0;
            for (long r = 0; r < rows; r++) s += dy.Load(r * cols + c);
            dbias.Add(c, s);
        }
    }

    /// <summary>Columns per group in pass 2: a warp's width, so each row of partials is read 128 bytes at a time.</summary>
    private const int FinalColumns = 32;

    /// <summary>
    /// Pass 2: a group owns <paramref name="columnsPerGroup"/> columns; its threads form row lanes that each sum every
    /// lanes-th block of a column, and lane 0 adds the lanes' sums in lane order (fixed: deterministic). One thread per
    /// column walking all the blocks (264–512 at rtx5090's shapes) took 86 µs per call on the H100.
    /// </summary>
    private static void ColumnFinalKernel(ArrayView<float> partial, FloatView dbias, int blocks, int cols, int columnsPerGroup)
    {
        var sums = SharedMemory.Allocate<float>(MaxGroup);
        int tid = Group.IdxX;
        int lanes = Group.DimX / columnsPerGroup;
        int lane = tid / columnsPerGroup, local = tid - lane * columnsPerGroup;
        int c = Grid.IdxX * columnsPerGroup + local;
        float s = 0f;
        if (lane < lanes && c < cols)
            for (int b = lane; b < blocks; b += lanes) s += partial[(long)b * cols + c];
        sums[tid] = s;
        Group.Barrier();
        if (lane != 0 || c >= cols) return;
        float total = 0f;
        for (int l = 0; l < lanes; l++) total += sums[l * columnsPerGroup + local];
        dbias.Add(c, total);
    }

    /// <summary>Float64 CPU references.</summary>
    public static class Reference
    {
        public static double[] Forward(double[] x, double[] bias) => x.Select((v, i) => v + bias[i % bias.Length]).ToArray();

        public static double[] Backward(double[] dy, int cols)
        {
            var db = new double[cols];
            for (int i = 0; i < dy.Length; i++) db[i % cols] += dy[i];
            return db;
        }
    }
}
