using ILGPU;
using ILGPU.Algorithms;
using ILGPU.Algorithms.ScanReduceOperations;
using ILGPU.Runtime;
using Memopt.Tensors;

namespace Memopt.Kernels;

/// <summary>
/// LayerNorm over the last dimension C (PyTorch semantics, biased variance):
///   μ = mean(x), σ² = mean((x − μ)²), r = 1/√(σ² + eps), x̂ = (x − μ)·r, y = x̂·w + b.
/// Forward: two-pass statistics (the mean of x shifted by the row's first element, then the centred sum of squares)
/// in float32; it writes y and the per-row μ and r (float32 [rows]), which is all backward needs besides x and w:
/// x̂ is recomputed, never stored.
/// Backward, with g = dy·w:
///   dx += r·(g − mean(g) − x̂·mean(g·x̂))      two sums over the row;
///   dw += Σ_rows dy·x̂,  db += Σ_rows dy      column sums in two deterministic passes: each thread owns one column of
///   a chunk of rows and writes its partial sums to a [2, chunks, C] workspace (coalesced over columns), then one
///   thread per column adds the chunk partials in a fixed order. No atomics, so the sums are run-to-run identical.
///   (The portable path does both passes in one launch: a thread per column sums the same chunks in the same order.)
/// The row kernels (forward, dx) come in two forms (<see cref="KernelPath"/>): cooperative (CUDA), a warp per row with
/// shuffle reductions and four elements per access where C is a multiple of 4 and the row tensors are quad-aligned
/// (one group per row with group reductions otherwise), and portable, one thread per row that walks its row serially
/// with the same math, no barriers (the CPU accelerator, where each group and each group reduction costs an
/// OS-level rendezvous). The column-sum pass reads four columns per thread on the same condition, in the same order.
/// Dtypes: x, y, dy, dx, the weight, the bias and their gradients may each be float32 or bfloat16 (<see cref="FloatView"/>);
/// the statistics μ and r are always float32, and so is every sum: under mixed precision a bf16 x is widened on load,
/// normalized in float32 and y rounded once when stored.
/// </summary>
public static class LayerNorm
{
    public const float DefaultEps = 1e-5f;

    /// <summary>Checks x [..., C], weight [C], bias [C] (float32 or bf16, same device) and eps &gt; 0; names the op and shapes on failure.</summary>
    public static void CheckArguments(Tensor x, Tensor weight, Tensor bias, float eps = DefaultEps)
    {
        const string op = "layernorm";
        Check.Float(op, x);
        Check.Float(op, weight, "weight");
        Check.Float(op, bias, "bias");
        Check.SameDevice(op, x, weight);
        Check.SameDevice(op, x, bias);
        int c = x.Shape.Last;
        Check.That(weight.Shape.Rank == 1 && weight.Shape[0] == c, op, $"weight {weight.Shape} must be [{c}] for input {x.Shape}");
        Check.That(bias.Shape.Rank == 1 && bias.Shape[0] == c, op, $"bias {bias.Shape} must be [{c}] for input {x.Shape}");
        Check.That(x.Shape.Rows <= int.MaxValue, op, $"input {x.Shape} has more than 2^31-1 rows");
        Check.That(eps > 0f && float.IsFinite(eps), op, $"eps = {eps} must be positive and finite (input {x.Shape})");
    }

    /// <summary>The shape of the per-row statistics (mean and rstd) for input shape <paramref name="x"/>.</summary>
    public static Shape StatsShape(Shape x) => new((int)x.Rows);

    /// <summary>y = LayerNorm(x)·w + b; writes the row means and reciprocal standard deviations.</summary>
    public static void Forward(Tensor x, Tensor weight, Tensor bias, Tensor y, Tensor mean, Tensor rstd, float eps = DefaultEps)
    {
        const string op = "layernorm";
        CheckArguments(x, weight, bias, eps);
        Elementwise.CheckPair(op, x, y);
        CheckStats(op, x, mean, rstd);
        var device = x.Device;
        int rows = (int)x.Shape.Rows, cols = x.Shape.Last;
        switch (QuadRows(device, cols, x, y))
        {
            case QuadKind.Bf16: ForwardWarp(device, "layernorm.fwd_bf16x4", Bf16Quads.Of(x), weight, bias, Bf16Quads.Of(y), mean, rstd, rows, cols, eps); return;
            case QuadKind.F32: ForwardWarp(device, "layernorm.fwd_f32x4", F32Quads.Of(x), weight, bias, F32Quads.Of(y), mean, rstd, rows, cols, eps); return;
        }
        if (Launch.Cooperative(device))
        {
            var k = device.Kernel("layernorm.fwd", acc => acc.LoadStreamKernel<FloatView, FloatView, FloatView, FloatView, ArrayView<float>, ArrayView<float>, int, float>(ForwardKernel));
            k(Launch.Row(device, rows, cols), FloatView.Of(x), FloatView.Of(weight), FloatView.Of(bias), FloatView.Of(y), mean.F32, rstd.F32, cols, eps);
            return;
        }
        var serial = device.Kernel("layernorm.fwd_thread_per_row", acc => acc.LoadStreamKernel<FloatView, FloatView, FloatView, FloatView, ArrayView<float>, ArrayView<float>, int, int, float>(ForwardRowKernel));
        serial(Launch.ThreadPerRow(device, rows), FloatView.Of(x), FloatView.Of(weight), FloatView.Of(bias), FloatView.Of(y), mean.F32, rstd.F32, rows, cols, eps);
    }

    /// <summary>
    /// s = a + b, then y = LayerNorm(s)·w + bias with s's row statistics: a residual add and the LayerNorm after it. Where
    /// the warp-per-row forward runs (cooperative path, C a multiple of 4, a, b, s and y quad-aligned in one dtype) one
    /// kernel writes s and y, each lane reading back only the sums it stored (one pass over a and b instead of the add's
    /// pass and LayerNorm's re-read of s); elsewhere it is <see cref="Elementwise.Add"/> then <see cref="Forward"/>.
    /// Either way s, y and the statistics are bitwise those two ops'.
    /// </summary>
    public static void ForwardResidual(Tensor a, Tensor b, Tensor s, Tensor weight, Tensor bias, Tensor y, Tensor mean, Tensor rstd, float eps = DefaultEps)
    {
        const string op = "add_layernorm";
        Elementwise.CheckTriple(op, a, b, s);
        CheckArguments(s, weight, bias, eps);
        Elementwise.CheckPair(op, s, y);
        CheckStats(op, s, mean, rstd);
        var device = s.Device;
        int rows = (int)s.Shape.Rows, cols = s.Shape.Last;
        switch (QuadRows(device, cols, a, b, s, y))
        {
            case QuadKind.Bf16:
                ForwardResidualWarp(device, "layernorm.fwd_residual_bf16x4", Bf16Quads.Of(a), Bf16Quads.Of(b), Bf16Quads.Of(s), weight, bias, Bf16Quads.Of(y), mean, rstd, rows, cols, eps);
                return;
            case QuadKind.F32:
                ForwardResidualWarp(device, "layernorm.fwd_residual_f32x4", F32Quads.Of(a), F32Quads.Of(b), F32Quads.Of(s), weight, bias, F32Quads.Of(y), mean, rstd, rows, cols, eps);
                return;
        }
        Elementwise.Add(a, b, s);
        Forward(s, weight, bias, y, mean, rstd, eps);
    }

    /// <summary>The quad accessor the cooperative quad kernels (warp-per-row forward and dx, four-column partials) take for these row tensors (C a multiple of 4), or Scalar for the other forms.</summary>
    private static QuadKind QuadRows(ComputeDevice device, int cols, params ReadOnlySpan<Tensor> tensors) =>
        Launch.Cooperative(device) && cols % 4 == 0 ? Quads.KindOf(tensors) : QuadKind.Scalar;

    /// <summary>
    /// Accumulates the gradients that are not null: dx += ∂L/∂x, dweight += Σ dy·x̂, dbias += Σ dy.
    /// x, weight, mean and rstd are the forward's input, weight and statistics.
    /// </summary>
    public static void Backward(Tensor x, Tensor weight, Tensor mean, Tensor rstd, Tensor dy, Tensor? dx, Tensor? dweight, Tensor? dbias)
    {
        const string op = "layernorm_backward";
        Check.Float(op, x);
        Check.Float(op, weight, "weight");
        Check.That(weight.Shape.Rank == 1 && weight.Shape[0] == x.Shape.Last, op, $"weight {weight.Shape} must be [{x.Shape.Last}] for input {x.Shape}");
        Elementwise.CheckPair(op, x, dy);
        CheckStats(op, x, mean, rstd);
        if (dx is not null) Elementwise.CheckPair(op, x, dx);
        if (dweight is not null) Elementwise.CheckPair(op, weight, dweight);
        if (dbias is not null) Elementwise.CheckPair(op, weight, dbias);

        var device = x.Device;
        int rows = (int)x.Shape.Rows, cols = x.Shape.Last;
        var dxRows = dx is null ? QuadKind.Scalar : QuadRows(device, cols, x, dy, dx);
        if (dxRows == QuadKind.Bf16)
            BackwardInputWarp(device, "layernorm.bwd_input_bf16x4", Bf16Quads.Of(x), weight, mean, rstd, Bf16Quads.Of(dy), Bf16Quads.Of(dx!), rows, cols);
        else if (dxRows == QuadKind.F32)
            BackwardInputWarp(device, "layernorm.bwd_input_f32x4", F32Quads.Of(x), weight, mean, rstd, F32Quads.Of(dy), F32Quads.Of(dx!), rows, cols);
        else if (dx is not null && Launch.Cooperative(device))
        {
            var k = device.Kernel("layernorm.bwd_input", acc => acc.LoadStreamKernel<FloatView, FloatView, ArrayView<float>, ArrayView<float>, FloatView, FloatView, int>(BackwardInputKernel));
            k(Launch.Row(device, rows, cols), FloatView.Of(x), FloatView.Of(weight), mean.F32, rstd.F32, FloatView.Of(dy), FloatView.Of(dx), cols);
        }
        else if (dx is not null)
        {
            var k = device.Kernel("layernorm.bwd_input_thread_per_row", acc => acc.LoadStreamKernel<FloatView, FloatView, ArrayView<float>, ArrayView<float>, FloatView, FloatView, int, int>(BackwardInputRowKernel));
            k(Launch.ThreadPerRow(device, rows), FloatView.Of(x), FloatView.Of(weight), mean.F32, rstd.F32, FloatView.Of(dy), FloatView.Of(dx), rows, cols);
        }
        if (dweight is null && dbias is null) return;

        int rowsPerChunk = RowsPerChunk(rows);
        if (!Launch.Cooperative(device))
        {
            // A gradient that is not wanted gets the other one as a stand-in view and a 0 flag: the kernel never writes it.
            var columns = device.Kernel("layernorm.bwd_param_thread_per_column", acc => acc.LoadStreamKernel<FloatView, ArrayView<float>, ArrayView<float>, FloatView, FloatView, FloatView, int, int, int, int, int>(ParamColumnKernel));
            var standIn = (dweight ?? dbias)!;
            columns(Launch.Elementwise(device, cols), FloatView.Of(x), mean.F32, rstd.F32, FloatView.Of(dy), FloatView.Of(dweight ?? standIn), FloatView.Of(dbias ?? standIn),
                rows, cols, rowsPerChunk, dweight is null ? 0 : 1, dbias is null ? 0 : 1);
            return;
        }
        int chunks = (rows + rowsPerChunk - 1) / rowsPerChunk;
        using var partials = Tensor.Empty(device, new Shape(2, chunks, cols), DType.F32, MemoryCategory.Workspace, op);
        var partialRows = QuadRows(device, cols, x, dy);
        if (partialRows == QuadKind.Bf16)
            ParamPartialsQuads(device, "layernorm.bwd_param_partials_bf16x4", Bf16Quads.Of(x), mean, rstd, Bf16Quads.Of(dy), partials, rows, cols, rowsPerChunk);
        else if (partialRows == QuadKind.F32)
            ParamPartialsQuads(device, "layernorm.bwd_param_partials_f32x4", F32Quads.Of(x), mean, rstd, F32Quads.Of(dy), partials, rows, cols, rowsPerChunk);
        else
        {
            var partial = device.Kernel("layernorm.bwd_param_partials", acc => acc.LoadStreamKernel<FloatView, ArrayView<float>, ArrayView<float>, FloatView, ArrayView<float>, int, int, int>(ParamPartialsKernel));
            partial(Launch.Elementwise(device, (long)chunks * cols), FloatView.Of(x), mean.F32, rstd.F32, FloatView.Of(dy), partials.F32, rows, cols, rowsPerChunk);
        }
        var sum = device.Kernel("layernorm.bwd_param_sum", acc => acc.LoadStreamKernel<ArrayView<float>, FloatView, FloatView, int, int, int, int>(ParamSumKernel));
        // A gradient that is not wanted gets the workspace as a stand-in view and a 0 flag: the kernel never writes it.
        int sumGroup = Launch.GroupSize(device), columnsPerGroup = sumGroup / SumLanes;
        if (columnsPerGroup < 1 || sumGroup % SumLanes != 0)
            throw new InvalidOperationException($"{op}: the device's group size {sumGroup} is not a multiple of {SumLanes} (the parameter sums' lanes)");
        sum(new KernelConfig((cols + columnsPerGroup - 1) / columnsPerGroup, sumGroup), partials.F32, FloatView.Of(dweight ?? partials), FloatView.Of(dbias ?? partials),
            chunks, cols, dweight is null ? 0 : 1, dbias is null ? 0 : 1);
    }

    /// <summary>
    /// Rows summed by one thread in the column-sum pass: at least 32 (so each thread does real work) and enough that
    /// there are at most 256 chunks (the workspace stays 2·256·C floats however many rows there are).
    /// </summary>
    internal static int RowsPerChunk(int rows) => Math.Max(32, (rows + 255) / 256);

    private static void CheckStats(string op, Tensor x, Tensor mean, Tensor rstd)
    {
        var want = StatsShape(x.Shape);
        Check.DType(op, mean, DType.F32, "mean");
        Check.DType(op, rstd, DType.F32, "rstd");
        Check.That(mean.Shape.Equals(want) && rstd.Shape.Equals(want), op,
            $"mean {mean.Shape} and rstd {rstd.Shape} must be {want} for input {x.Shape}");
    }

    private static void ForwardKernel(FloatView x, FloatView w, FloatView b, FloatView y,
        ArrayView<float> mean, ArrayView<float> rstd, int cols, float eps)
    {
        int row = Grid.IdxX;
        int tid = Group.IdxX;
        int threads = Group.DimX;
        long start = (long)row * cols;

        // Sum x − x[0] rather than x: a row's common offset then costs no precision in the mean (the differences
        // of nearby floats are exact), which matters because r amplifies any error in μ.
        float shift = x.Load(start);
        float sum = 0f;
        for (int c = tid; c < cols; c += threads) sum += x.Load(start + c) - shift;
        float mu = shift + GroupExtensions.AllReduce<float, AddFloat>(sum) / cols;

        float squares = 0f;
        for (int c = tid; c < cols; c += threads)
        {
            float d = x.Load(start + c) - mu;
            squares += d * d;
        }
        float variance = GroupExtensions.AllReduce<float, AddFloat>(squares) / cols;
        float r = 1f / MathF.Sqrt(variance + eps);

        for (int c = tid; c < cols; c += threads) y.Store(start + c, (x.Load(start + c) - mu) * r * w.Load(c) + b.Load(c));
        if (tid == 0)
        {
            mean[row] = mu;
            rstd[row] = r;
        }
    }

    private static void BackwardInputKernel(FloatView x, FloatView w, ArrayView<float> mean, ArrayView<float> rstd,
        FloatView dy, FloatView dx, int cols)
    {
        int row = Grid.IdxX;
        int tid = Group.IdxX;
        int threads = Group.DimX;
        long start = (long)row * cols;
        float mu = mean[row];
        float r = rstd[row];

        float sumG = 0f, sumGx = 0f;
        for (int c = tid; c < cols; c += threads)
        {
            float g = dy.Load(start + c) * w.Load(c);
            sumG += g;
            sumGx += g * (x.Load(start + c) - mu) * r;
        }
        float meanG = GroupExtensions.AllReduce<float, AddFloat>(sumG) / cols;
        float meanGx = GroupExtensions.AllReduce<float, AddFloat>(sumGx) / cols;

        for (int c = tid; c < cols; c += threads)
        {
            float g = dy.Load(start + c) * w.Load(c);
            float xhat = (x.Load(start + c) - mu) * r;
            dx.Add(start + c, r * (g - meanG - xhat * meanGx));
        }
    }

    // The warp-per-row forms (cooperative path; C a multiple of 4 and every row tensor quad-aligned): a warp owns a
    // row, its lanes take interleaved quads, and both reductions are warp shuffles, with no shared memory and no group
    // barrier. One group per row with two group reductions held an 8192×256 bf16 LayerNorm to ~23 µs a call on the
    // H100, about a fifth of its bandwidth; x is read once from memory, the second and third passes hit L1.

    private static void ForwardWarp<TQuads>(ComputeDevice device, string key, TQuads x, Tensor weight, Tensor bias, TQuads y,
        Tensor mean, Tensor rstd, int rows, int cols, float eps) where TQuads : struct, IQuads
    {
        var k = device.Kernel(key, acc => acc.LoadStreamKernel<TQuads, FloatView, FloatView, TQuads, ArrayView<float>, ArrayView<float>, int, int, float>(ForwardWarpKernel));
        k(Launch.WarpPerRow(device, rows), x, FloatView.Of(weight), FloatView.Of(bias), y, mean.F32, rstd.F32, rows, cols / 4, eps);
    }

    /// <summary><see cref="ForwardKernel"/>'s shifted two-pass statistics, a warp per row, four elements per access.</summary>
    private static void ForwardWarpKernel<TQuads>(TQuads x, FloatView w, FloatView b, TQuads y,
        ArrayView<float> mean, ArrayView<float> rstd, int rows, int quadsPerRow, float eps) where TQuads : struct, IQuads
    {
        int lanes = Warp.WarpSize, warpsPerGroup = Group.DimX / lanes;
        for (int row = Grid.IdxX * warpsPerGroup + Group.IdxX / lanes; row < rows; row += Grid.DimX * warpsPerGroup)
            NormalizeRow(x, w, b, y, mean, rstd, row, quadsPerRow, eps, x.Load((long)row * quadsPerRow).X);
    }

    /// <summary>
    /// s = a + b, then y = LayerNorm(s) from s as stored: the forward of a residual add and the LayerNorm after it in one
    /// pass. Each lane reads back only the quads it wrote itself, and lane 0 its own first element for the shift, so the
    /// statistics and y are <see cref="ForwardWarpKernel"/>'s on the stored s, bit for bit.
    /// </summary>
    private static void ForwardResidualWarpKernel<TQuads>(TQuads a, TQuads b, TQuads s, FloatView w, FloatView bias, TQuads y,
        ArrayView<float> mean, ArrayView<float> rstd, int rows, int quadsPerRow, float eps) where TQuads : struct, IQuads
    {
        int lanes = Warp.WarpSize, lane = Warp.LaneIdx, warpsPerGroup = Group.DimX / lanes;
        for (int row = Grid.IdxX * warpsPerGroup + Group.IdxX / lanes; row < rows; row += Grid.DimX * warpsPerGroup)
        {
            long q0 = (long)row * quadsPerRow;
            for (int q = lane; q < quadsPerRow; q += lanes) s.Store(q0 + q, a.Load(q0 + q) + b.Load(q0 + q));
            float first = lane == 0 ? s.Load(q0).X : 0f;
            NormalizeRow(s, w, bias, y, mean, rstd, row, quadsPerRow, eps, Warp.Shuffle(first, 0));
        }
    }

    /// <summary>One row's statistics (x shifted by <paramref name="shift"/>, its first element) and y, by the warp whose lanes call it.</summary>
    private static void NormalizeRow<TQuads>(TQuads x, FloatView w, FloatView b, TQuads y, ArrayView<float> mean, ArrayView<float> rstd,
        int row, int quadsPerRow, float eps, float shift) where TQuads : struct, IQuads
    {
        int lanes = Warp.WarpSize, lane = Warp.LaneIdx, cols = 4 * quadsPerRow;
        long q0 = (long)row * quadsPerRow;
        float sum = 0f;
        for (int q = lane; q < quadsPerRow; q += lanes)
        {
            var v = x.Load(q0 + q);
            sum += (v.X - shift) + (v.Y - shift) + (v.Z - shift) + (v.W - shift);
        }
        float mu = shift + WarpReduce.Sum(sum, lanes) / cols;

        float squares = 0f;
        for (int q = lane; q < quadsPerRow; q += lanes)
        {
            var v = x.Load(q0 + q);
            float d0 = v.X - mu, d1 = v.Y - mu, d2 = v.Z - mu, d3 = v.W - mu;
            squares += d0 * d0 + d1 * d1 + d2 * d2 + d3 * d3;
        }
        float r = 1f / MathF.Sqrt(WarpReduce.Sum(squares, lanes) / cols + eps);

        for (int q = lane; q < quadsPerRow; q += lanes)
        {
            var v = x.Load(q0 + q);
            int c = 4 * q;
            y.Store(q0 + q, new MatMul.Quad((v.X - mu) * r * w.Load(c) + b.Load(c), (v.Y - mu) * r * w.Load(c + 1) + b.Load(c + 1),
                (v.Z - mu) * r * w.Load(c + 2) + b.Load(c + 2), (v.W - mu) * r * w.Load(c + 3) + b.Load(c + 3)));
        }
        if (lane == 0)
        {
            mean[row] = mu;
            rstd[row] = r;
        }
    }

    private static void ForwardResidualWarp<TQuads>(ComputeDevice device, string key, TQuads a, TQuads b, TQuads s, Tensor weight, Tensor bias, TQuads y,
        Tensor mean, Tensor rstd, int rows, int cols, float eps) where TQuads : struct, IQuads
    {
        var k = device.Kernel(key, acc => acc.LoadStreamKernel<TQuads, TQuads, TQuads, FloatView, FloatView, TQuads, ArrayView<float>, ArrayView<float>, int, int, float>(ForwardResidualWarpKernel));
        k(Launch.WarpPerRow(device, rows), a, b, s, FloatView.Of(weight), FloatView.Of(bias), y, mean.F32, rstd.F32, rows, cols / 4, eps);
    }

    private static void BackwardInputWarp<TQuads>(ComputeDevice device, string key, TQuads x, Tensor weight, Tensor mean, Tensor rstd,
        TQuads dy, TQuads dx, int rows, int cols) where TQuads : struct, IQuads
    {
        var k = device.Kernel(key, acc => acc.LoadStreamKernel<TQuads, FloatView, ArrayView<float>, ArrayView<float>, TQuads, TQuads, int, int>(BackwardInputWarpKernel));
        k(Launch.WarpPerRow(device, rows), x, FloatView.Of(weight), mean.F32, rstd.F32, dy, dx, rows, cols / 4);
    }

    /// <summary><see cref="BackwardInputKernel"/>'s two row sums and accumulating write, a warp per row, four elements per access.</summary>
    private static void BackwardInputWarpKernel<TQuads>(TQuads x, FloatView w, ArrayView<float> mean, ArrayView<float> rstd,
        TQuads dy, TQuads dx, int rows, int quadsPerRow) where TQuads : struct, IQuads
    {
        int lanes = Warp.WarpSize, lane = Warp.LaneIdx;
        int warpsPerGroup = Group.DimX / lanes;
        int stride = Grid.DimX * warpsPerGroup, cols = 4 * quadsPerRow;
        for (int row = Grid.IdxX * warpsPerGroup + Group.IdxX / lanes; row < rows; row += stride)
        {
            long q0 = (long)row * quadsPerRow;
            float mu = mean[row];
            float r = rstd[row];
            float sumG = 0f, sumGx = 0f;
            for (int q = lane; q < quadsPerRow; q += lanes)
            {
                var g = Weighted(dy.Load(q0 + q), w, 4 * q);
                var v = x.Load(q0 + q);
                sumG += g.X + g.Y + g.Z + g.W;
                sumGx += g.X * (v.X - mu) * r + g.Y * (v.Y - mu) * r + g.Z * (v.Z - mu) * r + g.W * (v.W - mu) * r;
            }
            float meanG = WarpReduce.Sum(sumG, lanes) / cols;
            float meanGx = WarpReduce.Sum(sumGx, lanes) / cols;

            for (int q = lane; q < quadsPerRow; q += lanes)
            {
                var g = Weighted(dy.Load(q0 + q), w, 4 * q);
                var v = x.Load(q0 + q);
                var d = dx.Load(q0 + q);
                dx.Store(q0 + q, new MatMul.Quad(d.X + r * (g.X - meanG - (v.X - mu) * r * meanGx), d.Y + r * (g.Y - meanG - (v.Y - mu) * r * meanGx),
                    d.Z + r * (g.Z - meanG - (v.Z - mu) * r * meanGx), d.W + r * (g.W - meanG - (v.W - mu) * r * meanGx)));
            }
        }
    }

    /// <summary>dy·w for the quad at column c.</summary>
    private static MatMul.Quad Weighted(MatMul.Quad dy, FloatView w, int c) =>
        new(dy.X * w.Load(c), dy.Y * w.Load(c + 1), dy.Z * w.Load(c + 2), dy.W * w.Load(c + 3));


    /// <summary>
    /// The portable row kernels sum serially in blocks of this many elements (a partial per block, then the partials):
    /// float32 error grows like (SumBlock + C/SumBlock)·u rather than C·u, about what the cooperative form's
    /// per-thread strides followed by a tree give.
    /// </summary>
    private const int SumBlock = 32;

    /// <summary>The portable forward: thread per row, grid-stride over rows; the same shifted two-pass statistics.</summary>
    private static void ForwardRowKernel(FloatView x, FloatView w, FloatView b, FloatView y,
        ArrayView<float> mean, ArrayView<float> rstd, int rows, int cols, float eps)
    {
        int stride = Grid.DimX * Group.DimX;
        for (int row = Grid.GlobalIndex.X; row < rows; row += stride)
        {
            long start = (long)row * cols;
            float shift = x.Load(start);
            float sum = 0f;
            for (int c0 = 0; c0 < cols; c0 += SumBlock)
            {
                int end = Math.Min(cols, c0 + SumBlock);
                float part = 0f;
                for (int c = c0; c < end; c++) part += x.Load(start + c) - shift;
                sum += part;
            }
            float mu = shift + sum / cols;

            float squares = 0f;
            for (int c0 = 0; c0 < cols; c0 += SumBlock)
            {
                int end = Math.Min(cols, c0 + SumBlock);
                float part = 0f;
                for (int c = c0; c < end; c++)
                {
                    float d = x.Load(start + c) - mu;
                    part += d * d;
                }
                squares += part;
            }
            float r = 1f / MathF.Sqrt(squares / cols + eps);

            for (int c = 0; c < cols; c++) y.Store(start + c, (x.Load(start + c) - mu) * r * w.Load(c) + b.Load(c));
            mean[row] = mu;
            rstd[row] = r;
        }
    }

    /// <summary>The portable dx: thread per row, both row sums in one serial pass, then the write pass.</summary>
    private static void BackwardInputRowKernel(FloatView x, FloatView w, ArrayView<float> mean, ArrayView<float> rstd,
        FloatView dy, FloatView dx, int rows, int cols)
    {
        int stride = Grid.DimX * Group.DimX;
        for (int row = Grid.GlobalIndex.X; row < rows; row += stride)
        {
            long start = (long)row * cols;
            float mu = mean[row];
            float r = rstd[row];
            float sumG = 0f, sumGx = 0f;
            for (int c0 = 0; c0 < cols; c0 += SumBlock)
            {
                int end = Math.Min(cols, c0 + SumBlock);
                float partG = 0f, partGx = 0f;
                for (int c = c0; c < end; c++)
                {
                    float g = dy.Load(start + c) * w.Load(c);
                    partG += g;
                    partGx += g * (x.Load(start + c) - mu) * r;
                }
                sumG += partG;
                sumGx += partGx;
            }
            float meanG = sumG / cols;
            float meanGx = sumGx / cols;
            for (int c = 0; c < cols; c++)
            {
                float g = dy.Load(start + c) * w.Load(c);
                float xhat = (x.Load(start + c) - mu) * r;
                dx.Add(start + c, r * (g - meanG - xhat * meanGx));
            }
        }
    }

    /// <summary>
    /// The portable dweight/dbias: one thread per column walks all rows in the same chunks as the two cooperative
    /// passes and adds the chunk sums in the same order, so both paths give bitwise the same sums; one launch, no workspace.
    /// </summary>
    private static void ParamColumnKernel(FloatView x, ArrayView<float> mean, ArrayView<float> rstd, FloatView dy,
        FloatView dweight, FloatView dbias, int rows, int cols, int rowsPerChunk, int wantWeight, int wantBias)
    {
        int stride = Grid.DimX * Group.DimX;
        for (int c = Grid.GlobalIndex.X; c < cols; c += stride)
        {
            // The chunks' partials summed in the cooperative path's order (SumLanes interleaved lanes, then the lanes
            // in order), so both paths give bitwise-equal gradients.
            int chunks = (rows + rowsPerChunk - 1) / rowsPerChunk;
            float sw = 0f, sb = 0f;
            for (int lane = 0; lane < SumLanes; lane++)
            {
                float lw = 0f, lb = 0f;
                for (int k = lane; k < chunks; k += SumLanes)
                {
                    var part = ChunkSums(x, mean, rstd, dy, k * rowsPerChunk, Math.Min(rows, (k + 1) * rowsPerChunk), cols, c);
                    lw += part.W;
                    lb += part.B;
                }
                sw += lw;
                sb += lb;
            }
            if (wantWeight != 0) dweight.Add(c, sw);
            if (wantBias != 0) dbias.Add(c, sb);
        }
    }

    /// <summary>Column c's Σ dy·x̂ (W) and Σ dy (B) over rows r0..r1−1, in row order: one chunk's partial, on either path.</summary>
    private static ParamSums ChunkSums(FloatView x, ArrayView<float> mean, ArrayView<float> rstd, FloatView dy, int r0, int r1, int cols, int c)
    {
        float w = 0f, b = 0f;
        for (int r = r0; r < r1; r++)
        {
            long at = (long)r * cols + c;
            float g = dy.Load(at);
            w += g * (x.Load(at) - mean[r]) * rstd[r];
            b += g;
        }
        return new ParamSums(w, b);
    }

    private readonly record struct ParamSums(float W, float B);

    /// <summary>partials[0, chunk, c] = Σ_{rows in chunk} dy·x̂, partials[1, chunk, c] = Σ dy.</summary>
    private static void ParamPartialsKernel(FloatView x, ArrayView<float> mean, ArrayView<float> rstd, FloatView dy,
        ArrayView<float> partials, int rows, int cols, int rowsPerChunk)
    {
        long stride = (long)Grid.DimX * Group.DimX;
        int chunks = (rows + rowsPerChunk - 1) / rowsPerChunk;
        long items = (long)chunks * cols;
        for (long i = Grid.GlobalIndex.X; i < items; i += stride)
        {
            int chunk = (int)(i / cols);
            int c = (int)(i - (long)chunk * cols);
            var part = ChunkSums(x, mean, rstd, dy, chunk * rowsPerChunk, Math.Min(rows, (chunk + 1) * rowsPerChunk), cols, c);
            partials[i] = part.W;
            partials[items + i] = part.B;
        }
    }

    private static void ParamPartialsQuads<TQuads>(ComputeDevice device, string key, TQuads x, Tensor mean, Tensor rstd, TQuads dy,
        Tensor partials, int rows, int cols, int rowsPerChunk) where TQuads : struct, IQuads
    {
        int chunks = (rows + rowsPerChunk - 1) / rowsPerChunk, quadsPerRow = cols / 4;
        var k = device.Kernel(key, acc => acc.LoadStreamKernel<TQuads, ArrayView<float>, ArrayView<float>, TQuads, ArrayView<float>, int, int, int>(ParamPartialsQuadKernel));
        k(Launch.Elementwise(device, (long)chunks * quadsPerRow), x, mean.F32, rstd.F32, dy, partials.F32, rows, quadsPerRow, rowsPerChunk);
    }

    /// <summary>
    /// <see cref="ParamPartialsKernel"/> for four adjacent columns per thread (C a multiple of 4): each column's terms in
    /// the same row order, so the same partials bit for bit. With a quarter of the threads, each issues four rows' loads
    /// before it adds any of them (one basic block), to keep as many loads in flight as the scalar form.
    /// </summary>
    private static void ParamPartialsQuadKernel<TQuads>(TQuads x, ArrayView<float> mean, ArrayView<float> rstd, TQuads dy,
        ArrayView<float> partials, int rows, int quadsPerRow, int rowsPerChunk) where TQuads : struct, IQuads
    {
        long stride = (long)Grid.DimX * Group.DimX;
        int chunks = (rows + rowsPerChunk - 1) / rowsPerChunk;
        long items = (long)chunks * quadsPerRow, floats = 4 * items;
        for (long i = Grid.GlobalIndex.X; i < items; i += stride)
        {
            int chunk = (int)(i / quadsPerRow);
            int q = (int)(i - (long)chunk * quadsPerRow);
            int r = chunk * rowsPerChunk, end = Math.Min(rows, r + rowsPerChunk);
            var w = new MatMul.Quad(0f, 0f, 0f, 0f);
            var b = new MatMul.Quad(0f, 0f, 0f, 0f);
            for (; r + 4 <= end; r += 4)
            {
                long at = (long)r * quadsPerRow + q;
                var x0 = x.Load(at);
                var x1 = x.Load(at + quadsPerRow);
                var x2 = x.Load(at + 2 * quadsPerRow);
                var x3 = x.Load(at + 3 * quadsPerRow);
                var g0 = dy.Load(at);
                var g1 = dy.Load(at + quadsPerRow);
                var g2 = dy.Load(at + 2 * quadsPerRow);
                var g3 = dy.Load(at + 3 * quadsPerRow);
                float m0 = mean[r], m1 = mean[r + 1], m2 = mean[r + 2], m3 = mean[r + 3];
                float s0 = rstd[r], s1 = rstd[r + 1], s2 = rstd[r + 2], s3 = rstd[r + 3];
                AddTerms(ref w, ref b, x0, g0, m0, s0);
                AddTerms(ref w, ref b, x1, g1, m1, s1);
                AddTerms(ref w, ref b, x2, g2, m2, s2);
                AddTerms(ref w, ref b, x3, g3, m3, s3);
            }
            for (; r < end; r++)
            {
                long at = (long)r * quadsPerRow + q;
                AddTerms(ref w, ref b, x.Load(at), dy.Load(at), mean[r], rstd[r]);
            }
            long o = 4 * i;
            partials[o] = w.X;
            partials[o + 1] = w.Y;
            partials[o + 2] = w.Z;
            partials[o + 3] = w.W;
            partials[floats + o] = b.X;
            partials[floats + o + 1] = b.Y;
            partials[floats + o + 2] = b.Z;
            partials[floats + o + 3] = b.W;
        }
    }

    /// <summary>One row's terms of four columns, as <see cref="ChunkSums"/> adds them: w += dy·(x − μ)·r, b += dy.</summary>
    private static void AddTerms(ref MatMul.Quad w, ref MatMul.Quad b, MatMul.Quad x, MatMul.Quad g, float mu, float r)
    {
        w.X += g.X * (x.X - mu) * r;
        w.Y += g.Y * (x.Y - mu) * r;
        w.Z += g.Z * (x.Z - mu) * r;
        w.W += g.W * (x.W - mu) * r;
        b.X += g.X;
        b.Y += g.Y;
        b.Z += g.Z;
        b.W += g.W;
    }

    /// <summary>Lanes the chunk partials of a column are summed in: lane l takes chunks l, l + SumLanes, …; then the lanes in order.</summary>
    private const int SumLanes = 8;

    /// <summary>
    /// dweight[c] += Σ_chunk partials[0, chunk, c]; dbias[c] += Σ_chunk partials[1, chunk, c] (flags select which).
    /// A group owns Group.DimX / SumLanes columns, each column's SumLanes threads sum interleaved chunks and the first
    /// adds the lanes in order: the portable path's order, bitwise. A thread per column walking all 256 chunks took
    /// 55–62 µs per call on the H100 (one group of 256 threads: one SM).
    /// </summary>
    private static void ParamSumKernel(ArrayView<float> partials, FloatView dweight, FloatView dbias,
        int chunks, int cols, int wantWeight, int wantBias)
    {
        var sw = SharedMemory.Allocate<float>(MaxGroupForSums);
        var sb = SharedMemory.Allocate<float>(MaxGroupForSums);
        int tid = Group.IdxX;
        int columnsPerGroup = Group.DimX / SumLanes;
        int lane = tid / columnsPerGroup, local = tid - lane * columnsPerGroup;
        int c = Grid.IdxX * columnsPerGroup + local;
        long items = (long)chunks * cols;
        float lw = 0f, lb = 0f;
        if (c < cols)
            for (int k = lane; k < chunks; k += SumLanes)
            {
                lw += partials[(long)k * cols + c];
                lb += partials[items + (long)k * cols + c];
            }
        sw[tid] = lw;
        sb[tid] = lb;
        Group.Barrier();
        if (lane != 0 || c >= cols) return;
        float w = 0f, b = 0f;
        for (int l = 0; l < SumLanes; l++)
        {
            w += sw[l * columnsPerGroup + local];
            b += sb[l * columnsPerGroup + local];
        }
        if (wantWeight != 0) dweight.Add(c, w);
        if (wantBias != 0) dbias.Add(c, b);
    }

    private const int MaxGroupForSums = 1024;

    /// <summary>Float64 references: forward, and the statistics PyTorch would save.</summary>
    public static class Reference
    {
        public static double[] Forward(double[] x, double[] w, double[] b, int cols, double eps = DefaultEps)
        {
            var y = new double[x.Length];
            for (int start = 0; start < x.Length; start += cols)
            {
                var (mu, r) = Stats(x, start, cols, eps);
                for (int c = 0; c < cols; c++) y[start + c] = (x[start + c] - mu) * r * w[c] + b[c];
            }
            return y;
        }

        /// <summary>dx, dweight and dbias for upstream dy (each row: dx = r·(g − mean(g) − x̂·mean(g·x̂)), g = dy·w).</summary>
        public static (double[] Dx, double[] Dw, double[] Db) Backward(double[] x, double[] w, double[] dy, int cols, double eps = DefaultEps)
        {
            var dx = new double[x.Length];
            var dw = new double[cols];
            var db = new double[cols];
            for (int start = 0; start < x.Length; start += cols)
            {
                var (mu, r) = Stats(x, start, cols, eps);
                double meanG = 0, meanGx = 0;
                for (int c = 0; c < cols; c++)
                {
                    double g = dy[start + c] * w[c], xhat = (x[start + c] - mu) * r;
                    meanG += g / cols;
                    meanGx += g * xhat / cols;
                    dw[c] += dy[start + c] * xhat;
                    db[c] += dy[start + c];
                }
                for (int c = 0; c < cols; c++)
                    dx[start + c] = r * (dy[start + c] * w[c] - meanG - (x[start + c] - mu) * r * meanGx);
            }
            return (dx, dw, db);
        }

        /// <summary>Mean and 1/√(biased variance + eps) of x[start .. start+cols).</summary>
        public static (double Mean, double Rstd) Stats(double[] x, int start, int cols, double eps = DefaultEps)
        {
            double mu = 0;
            for (int c = 0; c < cols; c++) mu += x[start + c];
            mu /= cols;
            double v = 0;
            for (int c = 0; c < cols; c++) v += (x[start + c] - mu) * (x[start + c] - mu);
            v /= cols;
            return (mu, 1 / Math.Sqrt(v + eps));
        }
    }
}
