using FsCheck;
using FsCheck.Xunit;
using Memopt.Kernels;
using Memopt.Tensors;
using Memopt.Tests.Harness;

namespace Memopt.Tests.Kernels;

public class BiasAddTests
{
    // Forward: one float32 add per element, correctly rounded: within u = 2^-24 of |x + b|.
    // Backward: db[c] is a float32 sum of R values (plus the existing db) in some order; any order is within
    // R·u·Σ_r|dy[r, c]| of the exact sum (Higham §4.2), however much the terms cancel.
    private const double UnitRoundoff = 1.0 / (1 << 24);

    private static readonly int[] Columns = [1, 2, 3, 7, 16, 17, 33, 100, 257];

    [Property(MaxTest = 25)]
    public void Forward_adds_the_bias_to_every_row_in_place_or_not(PositiveInt rows, PositiveInt cols, PositiveInt lead, bool inPlace, int seed)
    {
        int R = rows.Get % 40 + 1, C = Columns[cols.Get % Columns.Length], L = lead.Get % 3;
        var shape = L == 0 ? new Shape(R, C) : new Shape(L, R, C);
        var rng = new Random(seed);
        float[] x = GradCheck.RandomValues(rng, shape.Numel), b = GradCheck.RandomValues(rng, C);
        var dev = TestDevice.Get();
        using var xt = Tensor.FromHost(dev, x, shape, MemoryCategory.Data, "x");
        using var bt = Tensor.FromHost(dev, b, new Shape(C), MemoryCategory.Data, "b");
        using var separate = Tensor.Empty(dev, shape, DType.F32, MemoryCategory.Data, "y");
        var yt = inPlace ? xt : separate;
        BiasAdd.Forward(xt, bt, yt);
        double[] want = BiasAdd.Reference.Forward(MatMulTests.D(x), MatMulTests.D(b));
        float[] got = yt.ToFloatArray();
        for (int i = 0; i < got.Length; i++)
            Assert.True(Math.Abs(got[i] - want[i]) <= UnitRoundoff * Math.Abs(want[i]), $"{shape} element {i}: {got[i]} vs {want[i]}");
    }

    /// <summary>The column sum, through one row block (adds straight into db) and through several (partials, then a second pass).</summary>
    [Property(MaxTest = 30)]
    public void Backward_accumulates_column_sums_with_any_number_of_row_blocks(PositiveInt rows, PositiveInt cols, PositiveInt blocks, int seed)
    {
        KernelPaths.ForEach(() =>
        {
            int R = rows.Get % 200 + 1, C = Columns[cols.Get % Columns.Length];
            int? rowBlocks = (blocks.Get % 4) switch { 0 => null, 1 => 1, 2 => Math.Min(R, 3), _ => R };
            var rng = new Random(seed);
            float[] dy = GradCheck.RandomValues(rng, (long)R * C), db0 = GradCheck.RandomValues(rng, C);
            var dev = TestDevice.Get();
            using var dyt = Tensor.FromHost(dev, dy, new Shape(R, C), MemoryCategory.Data, "dy");
            using var dbt = Tensor.FromHost(dev, db0, new Shape(C), MemoryCategory.Data, "db");
            BiasAdd.Backward(dyt, dbt, rowBlocks);

            double[] sums = BiasAdd.Reference.Backward(MatMulTests.D(dy), C);
            double[] magnitudes = BiasAdd.Reference.Backward(MatMulTests.Abs(dy), C);
            float[] got = dbt.ToFloatArray();
            for (int c = 0; c < C; c++)
            {
                double want = db0[c] + sums[c];
                double tolerance = (R + 2) * UnitRoundoff * (Math.Abs(db0[c]) + magnitudes[c]);
                Assert.True(Math.Abs(got[c] - want) <= tolerance,
                    $"[{R}, {C}] with {rowBlocks?.ToString() ?? "default"} row blocks, column {c}: {got[c]} vs {want} (tolerance {tolerance:E2})");
            }
        });
    }

    /// <summary>Widths that are multiples of 4 (the four-column pass 1): one quad, a few, and ones that leave chunks partly empty.</summary>
    private static readonly int[] QuadColumns = [4, 8, 12, 20, 36, 64, 100, 260];

    /// <summary>
    /// The cooperative four-column pass 1 in each of its read forms — bf16 words and float32 quads for aligned dy, four
    /// scalar reads for a dy that starts one element into its storage — through one row block (adding into db) and
    /// several (partials, then the second pass): within the reference's bound, and bitwise the same in every form and
    /// dtype, since the order of the sums depends only on the layout.
    /// </summary>
    [Property(MaxTest = 20)]
    public void Backward_sums_four_columns_per_thread_in_every_read_form_and_row_blocking(PositiveInt rows, PositiveInt cols, PositiveInt blocks, int seed)
    {
        int R = rows.Get % 150 + 1, C = QuadColumns[cols.Get % QuadColumns.Length];
        int? rowBlocks = (blocks.Get % 4) switch { 0 => null, 1 => 1, 2 => Math.Min(R, 3), _ => R };
        var rng = new Random(seed);
        // bf16-representable dy, so both dtypes hold the same values.
        float[] dy = GradCheck.RandomValues(rng, (long)R * C).Select(BFloat16.Round).ToArray(), db0 = GradCheck.RandomValues(rng, C);
        var dev = TestDevice.Get();
        float[] Sum(DType dtype, int offset)
        {
            using var view = OffsetTensor.FromHost(dev, dy, new Shape(R, C), offset, dtype, "dy");
            using var db = Tensor.FromHost(dev, db0, new Shape(C), MemoryCategory.Data, "db");
            using (Launch.UsePath(KernelPath.Cooperative)) BiasAdd.Backward(view, db, rowBlocks);
            return db.ToFloatArray();
        }

        float[] words = Sum(DType.BF16, 0);
        string what = $"[{R}, {C}] with {rowBlocks?.ToString() ?? "default"} row blocks";
        double[] sums = BiasAdd.Reference.Backward(MatMulTests.D(dy), C);
        double[] magnitudes = BiasAdd.Reference.Backward(MatMulTests.Abs(dy), C);
        for (int c = 0; c < C; c++)
        {
            double want = db0[c] + sums[c];
            double tolerance = (R + 2) * UnitRoundoff * (Math.Abs(db0[c]) + magnitudes[c]);
            Assert.True(Math.Abs(words[c] - want) <= tolerance, $"{what}, column {c}: {words[c]} vs {want} (tolerance {tolerance:E2})");
        }
        Assert.Equal(words, Sum(DType.F32, 0));
        Assert.Equal(words, Sum(DType.BF16, 1));
        Assert.Equal(words, Sum(DType.F32, 1));
    }

    [Fact]
    public void Bias_that_does_not_match_the_last_dimension_names_the_op_and_shapes()
    {
        var dev = TestDevice.Get();
        using var x = Tensor.Zeros(dev, new Shape(2, 5), DType.F32, MemoryCategory.Data, "x");
        using var b = Tensor.Zeros(dev, new Shape(4), DType.F32, MemoryCategory.Data, "b");
        var e = Assert.Throws<ShapeException>(() => BiasAdd.Forward(x, b, x));
        Assert.Contains("bias_add", e.Message);
        Assert.Contains("[2, 5]", e.Message);
        Assert.Contains("[4]", e.Message);
        Assert.Throws<ShapeException>(() => BiasAdd.Backward(x, b));
    }
}
