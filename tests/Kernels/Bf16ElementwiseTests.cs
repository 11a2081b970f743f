using FsCheck;
using FsCheck.Xunit;
using Memopt.Autograd;
using Memopt.Kernels;
using Memopt.Tensors;
using Memopt.Tests.Harness;
using static Memopt.Tests.Harness.Bf16Check;

namespace Memopt.Tests.Kernels;

/// <summary>
/// The elementwise families on bf16 storage (add, scale, add-into, GELU, bias add, positions, reductions, dropout, head
/// permutes, embedding): forward against float64, gradients against the float32 path (<see cref="Bf16Check"/>).
/// Both runs see identical (bf16-representable) inputs and seed, and every kernel computes in float32, so in each of
/// these ops the bf16 result is the float32 result rounded once when stored: the error is at most u = 2^-8 of the
/// element (so of the tensor's scale), exact where nothing is rounded (copies, a gradient that is dy itself).
/// </summary>
public class Bf16ElementwiseTests
{
    /// <summary>One rounding of each element (≤ u of it), plus float32 slack for the reference comparison (≤ 1e-6).</summary>
    private const double OneRounding = U + 1e-6;
    /// <summary>Nothing rounded (copies, dy passed through into a zeroed buffer): equal up to float64 noise.</summary>
    private const double Exact = 1e-12;

    private static Input Act(float[] v, Shape s) => new(v, s, DType.BF16);
    private static Input F32(float[] v, Shape s) => new(v, s, DType.F32);

    private static void AssertResult(Bf16Check.Result r, double forward, double[] gradients, string what)
    {
        Assert.True(r.OutputDType == DType.BF16, $"{what}: output is {r.OutputDType.Name()}, expected bfloat16 ({r})");
        Assert.True(r.ForwardError <= forward, $"{what}: {r}");
        for (int i = 0; i < gradients.Length; i++)
            Assert.True(r.GradientErrors[i] <= gradients[i], $"{what}: gradient {i}: {r}");
    }

    [Property(MaxTest = 10)]
    public void Add_scale_and_gelu_round_once(PositiveInt rows, PositiveInt cols, NormalFloat s, int seed)
    {
        var shape = new Shape(rows.Get % 7 + 1, cols.Get % 37 + 1);
        var rng = new Random(seed);
        var dev = TestDevice.Get();
        float factor = (float)Math.Clamp(s.Get, -10, 10);
        // Add: y = round(a + b); da = db = dy, copied into zeroed bf16 buffers: exact.
        var add = Run(dev, [Act(GradCheck.RandomValues(rng, shape.Numel), shape), Act(GradCheck.RandomValues(rng, shape.Numel), shape)],
            v => Ops.Add(v[0], v[1]), x => Elementwise.Reference.Add(x[0], x[1]), seed);
        AssertResult(add, OneRounding, [Exact, Exact], $"add {shape}");
        Assert.All(add.GradientDTypes, d => Assert.Equal(DType.BF16, d));
        // Scale: y = round(s·x); dx = round(s·dy).
        var scale = Run(dev, [Act(GradCheck.RandomValues(rng, shape.Numel), shape)],
            v => Ops.Scale(v[0], factor), x => Elementwise.Reference.Scale(x[0], factor), seed);
        AssertResult(scale, OneRounding, [OneRounding], $"scale {factor} {shape}");
        // GELU: the float32 erf carries ~1.2e-7 absolute error (ElementwiseTests allows 1e-5), then one rounding.
        var gelu = Run(dev, [Act(GradCheck.RandomValues(rng, shape.Numel, scale: 6), shape)],
            v => Ops.Gelu(v[0]), x => Gelu.Reference.Forward(x[0]), seed);
        AssertResult(gelu, U + 1e-5, [OneRounding], $"gelu {shape}");
    }

    [Fact]
    public void Add_into_mixes_dtypes_and_rounds_the_float32_sum_once()
    {
        // y (bf16) += s·x (float32): the sum is formed in float32 and rounded once, so it equals Round(y + s·x).
        var dev = TestDevice.Get();
        var rng = new Random(3);
        var x = GradCheck.RandomValues(rng, 301);
        var y0 = RoundToBf16(GradCheck.RandomValues(rng, 301));
        using var xt = Tensor.FromHost(dev, x, new Shape(301), MemoryCategory.Data, "x");
        using var yt = Tensor.FromHost(dev, y0, new Shape(301), MemoryCategory.Data, "y", DType.BF16);
        Elementwise.AddInto(xt, yt, 0.37f);
        var got = yt.ToFloatArray();
        // On CUDA y + s·x is one fused multiply-add: the float32 sum before the bf16 rounding differs from the host's by
        // at most the host's rounding of s·x (2⁻²⁴·|s·x|), which can move it across a bf16 rounding boundary. There the
        // two results are one bf16 step apart (2⁻⁷ of the value at most: 8 significant bits), plus that 2⁻²⁴·|s·x|.
        // Seen on the H100: −4.2021275e-6 vs −4.23193e-6, exactly one step (2⁻²⁵) apart.
        bool exact = !dev.IsCuda;
        for (int i = 0; i < x.Length; i++)
        {
            float product = 0.37f * x[i];
            float want = BFloat16.Round(y0[i] + product);
            if (exact) Assert.Equal(want, got[i]);
            else
            {
                double bound = Math.Max(Math.Abs(want), Math.Abs(got[i])) / 128.0 + Math.Abs(product) / (1 << 24);
                Assert.True(Math.Abs(want - got[i]) <= bound, $"element {i}: {got[i]} vs {want} (bound {bound})");
            }
        }
    }

    [Theory]
    [InlineData(37, 50)]   // n mod 4 = 2: the tail after the 8-byte words
    [InlineData(5, 3)]     // columns fewer than the four elements of a word
    [InlineData(9, 50257)] // the LM head's width (odd: words straddle rows)
    public void Bias_add_in_place_on_bf16_rounds_each_float32_sum_once(int rows, int cols)
    {
        var dev = TestDevice.Get();
        var rng = new Random(rows * 31 + cols);
        var x = RoundToBf16(GradCheck.RandomValues(rng, (long)rows * cols));
        var b = GradCheck.RandomValues(rng, cols);
        using var xt = Tensor.FromHost(dev, x, new Shape(rows, cols), MemoryCategory.Data, "x", DType.BF16);
        using var bt = Tensor.FromHost(dev, b, new Shape(cols), MemoryCategory.Data, "b");
        BiasAdd.Forward(xt, bt, xt);
        var y = xt.ToFloatArray();
        for (int i = 0; i < y.Length; i++) Assert.Equal(BFloat16.Round(x[i] + b[i % cols]), y[i]);
    }

    private static readonly int[] Columns = [1, 2, 3, 7, 16, 17, 33, 100];

    [Property(MaxTest = 10)]
    public void Bias_add_reads_bf16_rows_and_float32_bias_and_sums_bf16_dy_in_float32(PositiveInt rows, PositiveInt cols, PositiveInt blocks, int seed)
    {
        KernelPaths.ForEach(() =>
        {
            int r = rows.Get % 70 + 1, c = Columns[cols.Get % Columns.Length];
            int? rowBlocks = (blocks.Get % 3) switch { 0 => null, 1 => Math.Min(r, 3), _ => r };
            var rng = new Random(seed);
            var dev = TestDevice.Get();
            var x = RoundToBf16(GradCheck.RandomValues(rng, (long)r * c));
            var b = GradCheck.RandomValues(rng, c);
            using var xt = Tensor.FromHost(dev, x, new Shape(r, c), MemoryCategory.Data, "x", DType.BF16);
            using var bt = Tensor.FromHost(dev, b, new Shape(c), MemoryCategory.Data, "b");
            using var yt = Tensor.Empty(dev, new Shape(r, c), DType.BF16, MemoryCategory.Data, "y");
            BiasAdd.Forward(xt, bt, yt);
            // x + b in float32 (exact to 2^-24), then one rounding: equal to rounding the float32 sum.
            var y = yt.ToFloatArray();
            for (int i = 0; i < y.Length; i++) Assert.Equal(BFloat16.Round(x[i] + b[i % c]), y[i]);

            // The column sum of bf16 dy into a float32 gradient: the same float32 additions in the same order as
            // the float32 path on the same values, so bitwise equal to it.
            using var db16 = Tensor.Zeros(dev, new Shape(c), DType.F32, MemoryCategory.Data, "db16");
            using var db32 = Tensor.Zeros(dev, new Shape(c), DType.F32, MemoryCategory.Data, "db32");
            using var dy32 = Tensor.FromHost(dev, x, new Shape(r, c), MemoryCategory.Data, "dy32");
            BiasAdd.Backward(xt, db16, rowBlocks);
            BiasAdd.Backward(dy32, db32, rowBlocks);
            Assert.Equal(db32.ToFloatArray(), db16.ToFloatArray());
        });
    }

    [Property(MaxTest = 10)]
    public void Learned_positions_add_in_float32_and_give_the_float32_table_gradient(PositiveInt b, PositiveInt t, PositiveInt c, int seed)
    {
        int nb = b.Get % 3 + 1, nt = t.Get % 6 + 1, nc = c.Get % 9 + 1;
        var rng = new Random(seed);
        var x = new Shape(nb, nt, nc);
        var table = new Shape(nt, nc);
        var r = Run(TestDevice.Get(), [Act(GradCheck.RandomValues(rng, x.Numel), x), F32(GradCheck.RandomValues(rng, table.Numel), table)],
            v => Ops.AddPositions(v[0], v[1]),
            v => BiasAdd.Reference.Forward(v[0], v[1]), seed);
        // y = round(x + table); dx = dy (exact); dtable = column sums of the same dy values in float32 (tiny slack).
        AssertResult(r, OneRounding, [Exact, 1e-6], $"positions {x}");
        Assert.Equal(DType.F32, r.GradientDTypes[1]);
    }

    [Property(MaxTest = 10)]
    public void Sum_and_mean_of_bf16_are_float32_and_broadcast_back_in_bf16(PositiveInt n, int seed)
    {
        KernelPaths.ForEach(() =>
        {
            var shape = new Shape(n.Get % 500 + 1);
            var rng = new Random(seed);
            var dev = TestDevice.Get();
            var x = RoundToBf16(GradCheck.RandomValues(rng, shape.Numel));
            // The totals are float32 sums of the same values as the float32 path's: like any float32 sum of n terms
            // they are within (n − 1)·2^-24·Σ|x| of the exact sum (ReduceTests' bound), here relative to |Σx|.
            double sumAbs = x.Sum(v => Math.Abs((double)v)), exact = x.Sum(v => (double)v);
            double bound = (x.Length - 1) / (double)(1 << 24) * sumAbs / (Math.Abs(exact) + 1e-6) + 1e-12;
            var sum = Run(dev, [Act(x, shape)], v => Ops.Sum(v[0]), v => [Reduce.Reference.Sum(v[0])], seed);
            Assert.Equal(DType.F32, sum.OutputDType);
            Assert.True(sum.ForwardError <= bound && sum.GradientErrors[0] <= Exact, $"{sum} (bound {bound:E2})"); // dx = 1·dy: exact
            var mean = Run(dev, [Act(x, shape)], v => Ops.Mean(v[0]), v => [Reduce.Reference.Mean(v[0])], seed);
            Assert.True(mean.ForwardError <= bound + 1e-7 && mean.GradientErrors[0] <= OneRounding, $"{mean} (bound {bound:E2})"); // dx = round(dy/n)
        });
    }

    [Property(MaxTest = 10)]
    public void Dropout_applies_the_same_mask_to_bf16_and_rounds_once(PositiveInt n, PositiveInt pPick, int seed)
    {
        var shape = new Shape(n.Get % 400 + 1);
        float p = new[] { 0.1f, 0.5f, 0.9f }[pPick.Get % 3];
        var rng = new Random(seed);
        var r = Run(TestDevice.Get(), [Act(GradCheck.RandomValues(rng, shape.Numel), shape)],
            v => Ops.Dropout(v[0], p, (ulong)seed, 17), x => Dropout.Reference.Forward(x[0], p, (ulong)seed, 17), seed);
        AssertResult(r, OneRounding, [OneRounding], $"dropout p={p} {shape}");
    }

    [Property(MaxTest = 10)]
    public void Head_select_and_merge_copy_bf16_exactly(PositiveInt b, PositiveInt t, PositiveInt h, PositiveInt hd, PositiveInt which, int seed)
    {
        int nb = b.Get % 3 + 1, nt = t.Get % 6 + 1, nh = h.Get % 3 + 1, nd = hd.Get % 5 + 1, part = which.Get % 3;
        var rng = new Random(seed);
        var dev = TestDevice.Get();
        // Copies, and backward scatters of dy into a zeroed bf16 buffer (each element receives one value): exact.
        var qkv = new Shape(nb, nt, 3 * nh * nd);
        var select = Run(dev, [Act(GradCheck.RandomValues(rng, qkv.Numel), qkv)],
            v => Ops.SelectHeads(v[0], nh, part), x => HeadPermute.Reference.Select(x[0], nb, nt, nh, part), seed);
        AssertResult(select, Exact, [Exact], $"select part {part} of {qkv}");
        var heads = new Shape(nb, nh, nt, nd);
        var merge = Run(dev, [Act(GradCheck.RandomValues(rng, heads.Numel), heads)],
            v => Ops.MergeHeads(v[0]), x => HeadPermute.Reference.Merge(x[0], nb, nh, nt, nd), seed);
        AssertResult(merge, Exact, [Exact], $"merge {heads}");
    }

    [Property(MaxTest = 10)]
    public void Embedding_reads_a_float32_table_into_bf16_and_scatters_bf16_dy_into_float32(PositiveInt b, PositiveInt t, PositiveInt vocab, PositiveInt cols, int seed)
    {
        int nb = b.Get % 4 + 1, nt = t.Get % 6 + 1, v = vocab.Get % 9 + 1, c = cols.Get % 9 + 1;
        var rng = new Random(seed);
        var dev = TestDevice.Get();
        var ids = Enumerable.Range(0, nb * nt).Select(_ => rng.Next(v)).ToArray();
        var table = GradCheck.RandomValues(rng, (long)v * c);
        using var idVar = new Var(Tensor.FromHost(dev, ids, new Shape(nb, nt), MemoryCategory.Data, "ids"));
        using var tableVar = new Var(Tensor.FromHost(dev, table, new Shape(v, c), MemoryCategory.Data, "table"), requiresGrad: true);
        using var tape = new Tape();
        using var y = Ops.Embedding(idVar, tableVar, dtype: DType.BF16);
        Assert.Equal(DType.BF16, y.Value.DType);
        // The lookup rounds the float32 row to bf16: bitwise Round(table[id]).
        var got = y.Value.ToFloatArray();
        for (int i = 0; i < got.Length; i++) Assert.Equal(BFloat16.Round(table[ids[i / c] * c + i % c]), got[i]);
        // Backward: float32 atomic adds of the bf16 dy values: the float32 sums of the same values (in some order).
        var dy = RoundToBf16(GradCheck.RandomValues(rng, got.Length));
        using var seedGrad = Tensor.FromHost(dev, dy, y.Shape, MemoryCategory.Data, "dy", DType.BF16);
        tape.Backward(y, seedGrad);
        Assert.Equal(DType.F32, tableVar.Grad!.DType);
        var want = new double[table.Length];
        for (int i = 0; i < dy.Length; i++) want[ids[i / c] * c + i % c] += dy[i];
        // ≤ B·T = 24 float32 additions of values in [-1, 1]: ≤ 24·2^-24·24 ≈ 3.4e-5 absolute in the worst order.
        var grad = tableVar.Grad.ToFloatArray();
        for (int i = 0; i < grad.Length; i++) Assert.True(Math.Abs(grad[i] - want[i]) <= 4e-5, $"table gradient {i}: {grad[i]} vs {want[i]}");
        tableVar.Grad.Dispose();
    }

    [Fact]
    public void Ops_name_themselves_when_activations_of_different_dtypes_meet()
    {
        var dev = TestDevice.Get();
        using var a = new Var(Tensor.Zeros(dev, new Shape(2, 3), DType.F32, MemoryCategory.Data, "a"));
        using var b = new Var(Tensor.Zeros(dev, new Shape(2, 3), DType.BF16, MemoryCategory.Data, "b"));
        using var ints = new Var(Tensor.Zeros(dev, new Shape(2, 3), DType.I32, MemoryCategory.Data, "i"));
        var e = Assert.Throws<ShapeException>(() => Ops.Add(a, b, "residual1"));
        Assert.Contains("residual1", e.Message);
        Assert.Contains("float32", e.Message);
        Assert.Contains("bfloat16", e.Message);
        e = Assert.Throws<ShapeException>(() => Ops.MatMul(a, b, transB: true, op: "attn.scores"));
        Assert.Contains("attn.scores", e.Message);
        e = Assert.Throws<ShapeException>(() => Ops.Gelu(ints, "mlp.gelu"));
        Assert.Contains("mlp.gelu", e.Message);
        Assert.Contains("int32, expected float32 or bfloat16", e.Message);
        Assert.Contains("gelu", Assert.Throws<ShapeException>(() => Gelu.Forward(ints.Value, b.Value)).Message);
    }
}
