using FsCheck;
using FsCheck.Xunit;
using ILGPU;
using ILGPU.Runtime;
using Memopt.Autograd;
using Memopt.Kernels;
using Memopt.Tensors;
using Memopt.Tests.Harness;

namespace Memopt.Tests.Kernels;

public class ReduceTests
{
    // A float32 sum of n terms in any order (per-thread runs, then a tree) is within (n − 1)·u·Σ|x| of the exact sum
    // (Higham §4.2), u = 2^-24; the mean's 1/n scale adds two roundings. The bound holds however much the terms cancel,
    // which is why the forward is checked here rather than with GradCheck's relative error (a sum near 0 has none).
    private const double UnitRoundoff = 1.0 / (1 << 24);
    // Gradients: dx = dy (or dy/n) broadcast is one float32 multiply at most: exact to ~1e-7 relative; the float64
    // finite differences of a linear function are exact to ~1e-10.
    private const double BroadcastGradientTolerance = 1e-6;

    /// <summary>
    /// <see cref="Reduce.StridedSum"/> (four loads in flight, masked ones adding +0) is the one-at-a-time strided loop
    /// bit for bit, of the values or their squares, for shares that end inside and past a block of four, signed values
    /// included, run as a kernel.
    /// </summary>
    [Property(MaxTest = 30)]
    public void Strided_sum_is_the_one_at_a_time_loop_bit_for_bit(PositiveInt countPick, PositiveInt stridePick, PositiveInt firstPick, bool squares, int seed)
    {
        int count = countPick.Get % 300 + 1, stride = stridePick.Get % 17 + 1, first = firstPick.Get % (stride + 3);
        var values = GradCheck.RandomValues(new Random(seed), count, 1e3);
        float want = 0f;
        for (int i = first; i < count; i += stride) want += squares ? values[i] * values[i] : values[i];
        var dev = TestDevice.Get();
        using var x = Tensor.FromHost(dev, values, new Shape(count), MemoryCategory.Data, "x");
        using var y = Tensor.Zeros(dev, new Shape(1), DType.F32, MemoryCategory.Data, "y");
        var kernel = dev.Accelerator.LoadAutoGroupedStreamKernel<Index1D, ArrayView<float>, ArrayView<float>, int, int, int, int>(StridedSumKernel);
        kernel(1, x.F32, y.F32, first, count, stride, squares ? 1 : 0);
        dev.Synchronize();
        Assert.Equal(BitConverter.SingleToInt32Bits(want), BitConverter.SingleToInt32Bits(y.ToFloatArray()[0]));
    }

    private static void StridedSumKernel(Index1D i, ArrayView<float> x, ArrayView<float> y, int first, int count, int stride, int squares) =>
        y[0] = Reduce.StridedSum(x, first, count, stride, squares != 0);

    [Property(MaxTest = 30)]
    public void Sum_and_mean_are_within_the_summation_bound_for_any_group_count(PositiveInt n, PositiveInt groups, bool mean, int seed)
    {
        KernelPaths.ForEach(() =>
        {
            int count = n.Get % 2000 + 1;
            int? partialGroups = (groups.Get % 4) switch { 0 => null, 1 => 1, 2 => 3, _ => 17 };
            var rng = new Random(seed);
            float[] x = GradCheck.RandomValues(rng, count);
            var dev = TestDevice.Get();
            using var xt = Tensor.FromHost(dev, x, new Shape(count), MemoryCategory.Data, "x");
            using var yt = Tensor.Empty(dev, new Shape(1), DType.F32, MemoryCategory.Data, "y");
            if (mean) Reduce.Mean(xt, yt, partialGroups); else Reduce.Sum(xt, yt, partialGroups);

            double[] x64 = MatMulTests.D(x);
            double want = mean ? Reduce.Reference.Mean(x64) : Reduce.Reference.Sum(x64);
            double magnitude = x64.Sum(Math.Abs) / (mean ? count : 1);
            double tolerance = (count + 2) * UnitRoundoff * magnitude;
            float got = yt.ToFloatArray()[0];
            Assert.True(Math.Abs(got - want) <= tolerance, $"n {count}, {partialGroups?.ToString() ?? "default"} groups: {got} vs {want} (tolerance {tolerance:E2})");
        });
    }

    [Property(MaxTest = 20)]
    public void Sum_and_mean_gradients_match_finite_differences(PositiveInt a, PositiveInt b, bool mean, int seed)
    {
        KernelPaths.ForEach(() =>
        {
            var shape = new Shape(a.Get % 7 + 1, b.Get % 41 + 1);
            var rng = new Random(seed);
            var r = GradCheck.Run(TestDevice.Get(), [(GradCheck.RandomValues(rng, shape.Numel), shape)], [true],
                v => mean ? Ops.Mean(v[0]) : Ops.Sum(v[0]),
                x => [mean ? Reduce.Reference.Mean(x[0]) : Reduce.Reference.Sum(x[0])], seed);
            Assert.True(r.GradientErrors[0] <= BroadcastGradientTolerance, $"{shape} {(mean ? "mean" : "sum")}: {r}");
        });
    }

    [Property(MaxTest = 20)]
    public void Row_sum_and_its_backward_match_the_reference(PositiveInt rows, PositiveInt cols, int seed)
    {
        KernelPaths.ForEach(() =>
        {
            int R = rows.Get % 20 + 1, C = cols.Get % 300 + 1;
            var rng = new Random(seed);
            float[] x = GradCheck.RandomValues(rng, (long)R * C), dy = GradCheck.RandomValues(rng, R), dx0 = GradCheck.RandomValues(rng, (long)R * C);
            var dev = TestDevice.Get();
            using var xt = Tensor.FromHost(dev, x, new Shape(R, C), MemoryCategory.Data, "x");
            using var yt = Tensor.Empty(dev, new Shape(R), DType.F32, MemoryCategory.Data, "y");
            Reduce.RowSum(xt, yt);
            double[] want = Reduce.Reference.RowSum(MatMulTests.D(x), C), magnitude = Reduce.Reference.RowSum(MatMulTests.Abs(x), C);
            float[] got = yt.ToFloatArray();
            for (int r = 0; r < R; r++)
                Assert.True(Math.Abs(got[r] - want[r]) <= C * UnitRoundoff * magnitude[r], $"[{R}, {C}] row {r}: {got[r]} vs {want[r]}");

            // Backward: dx[r, c] += dy[r] is one float32 add per element.
            using var dyt = Tensor.FromHost(dev, dy, new Shape(R), MemoryCategory.Data, "dy");
            using var dxt = Tensor.FromHost(dev, dx0, new Shape(R, C), MemoryCategory.Data, "dx");
            Reduce.RowSumBackward(dyt, dxt);
            float[] dx = dxt.ToFloatArray();
            for (int i = 0; i < dx.Length; i++)
            {
                double expect = (double)dx0[i] + dy[i / C];
                Assert.True(Math.Abs(dx[i] - expect) <= UnitRoundoff * Math.Abs(expect), $"[{R}, {C}] dx element {i}: {dx[i]} vs {expect}");
            }
        });
    }

    [Fact]
    public void Outputs_of_the_wrong_size_name_the_op_and_shapes()
    {
        var dev = TestDevice.Get();
        using var x = Tensor.Zeros(dev, new Shape(3, 4), DType.F32, MemoryCategory.Data, "x");
        using var two = Tensor.Zeros(dev, new Shape(2), DType.F32, MemoryCategory.Data, "y");
        var e = Assert.Throws<ShapeException>(() => Reduce.Sum(x, two));
        Assert.Contains("sum", e.Message);
        Assert.Contains("[3, 4]", e.Message);
        Assert.Contains("[2]", e.Message);
        var e2 = Assert.Throws<ShapeException>(() => Reduce.RowSum(x, two));
        Assert.Contains("row_sum", e2.Message);
        Assert.Contains("[2]", e2.Message);
    }
}
