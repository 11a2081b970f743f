using FsCheck;
using FsCheck.Xunit;
using Memopt.Kernels;
using Memopt.Tensors;
using Memopt.Tests.Harness;

namespace Memopt.Tests.Kernels;

public class NonFiniteTests
{
    // Values that must count (NaN, ±Inf) and values that must not (the extremes of the finite range, subnormals, ±0).
    private static readonly float[] Bad = [float.NaN, float.PositiveInfinity, float.NegativeInfinity, BitConverter.UInt32BitsToSingle(0xFFC00001)];
    private static readonly float[] Edge = [float.MaxValue, float.MinValue, float.Epsilon, -float.Epsilon, 0f, -0f, 1e-40f];

    private static float[] Values(Random rng, int n, double badFraction)
    {
        var v = new float[n];
        for (int i = 0; i < n; i++)
        {
            double r = rng.NextDouble();
            v[i] = r < badFraction ? Bad[rng.Next(Bad.Length)] : r < 2 * badFraction ? Edge[rng.Next(Edge.Length)] : (float)(rng.NextDouble() * 2e3 - 1e3);
        }
        return v;
    }

    [Property(MaxTest = 40)]
    public void Count_over_several_float32_tensors_matches_the_reference(PositiveInt tensors, PositiveInt size, int seed)
    {
        var rng = new Random(seed);
        var dev = TestDevice.Get();
        var host = Enumerable.Range(0, tensors.Get % 4 + 1)
            .Select(_ => Values(rng, (size.Get * 37 + rng.Next(97)) % 1201 + 1, rng.NextDouble() * 0.05)).ToList();
        var device = host.Select(h => Tensor.FromHost(dev, h, new Shape(h.Length), MemoryCategory.Workspace, "test")).ToList();
        try
        {
            long expected = host.Sum(h => NonFinite.Reference.Count(h));
            Assert.Equal(expected, NonFinite.Count(device));
            Assert.Equal(expected > 0, NonFinite.Any(device));
            for (int i = 0; i < host.Count; i++) Assert.Equal(NonFinite.Reference.Count(host[i]), NonFinite.Count(device[i]));
        }
        finally
        {
            foreach (var t in device) t.Dispose();
        }
    }

    [Property(MaxTest = 25)]
    public void Count_of_bfloat16_matches_the_reference_of_the_converted_values(PositiveInt size, int seed)
    {
        var rng = new Random(seed);
        var values = Values(rng, size.Get % 700 + 1, 0.03);
        var words = values.Select(BFloat16.FromFloat).ToArray();
        using var t = Tensor.Empty(TestDevice.Get(), new Shape(words.Length), DType.BF16, MemoryCategory.Workspace, "test");
        t.CopyFrom(words);
        // float.MaxValue rounds to bf16 +Inf (round to nearest even), so the reference is over the converted values.
        Assert.Equal(NonFinite.Reference.Count(words.Select(BFloat16.ToFloat)), NonFinite.Count(t));
    }

    [Fact]
    public void A_single_bad_value_is_found_at_either_end_and_none_in_a_clean_tensor()
    {
        var dev = TestDevice.Get();
        var v = new float[1000];
        using var t = Tensor.FromHost(dev, v, new Shape(1000), MemoryCategory.Workspace, "test");
        Assert.Equal(0, NonFinite.Count(t));
        foreach (int at in new[] { 0, 999 })
        {
            v[at] = float.NaN;
            t.CopyFrom(v);
            Assert.Equal(1, NonFinite.Count(t));
            v[at] = 0f;
        }
        Assert.Equal(0, NonFinite.Count([]));
    }

    [Fact]
    public void Integer_tensors_are_refused_naming_the_op_and_shape()
    {
        using var t = Tensor.Zeros(TestDevice.Get(), new Shape(3, 5), DType.I32, MemoryCategory.Workspace, "test");
        var e = Assert.Throws<ShapeException>(() => NonFinite.Count(t));
        Assert.Contains("non_finite", e.Message);
        Assert.Contains("[3, 5]", e.Message);
    }
}
