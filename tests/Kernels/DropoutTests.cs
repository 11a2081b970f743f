using FsCheck;
using FsCheck.Xunit;
using Memopt.Autograd;
using Memopt.Kernels;
using Memopt.Tensors;
using Memopt.Tests.Harness;

namespace Memopt.Tests.Kernels;

public class DropoutTests
{
    // y = x·m/(1−p) is one float32 multiply (half an ulp, 6e-8 relative); the mask is the same on host and device.
    // Finite differences of this linear map are exact to ~1e-10. 1e-6 fails on a single flipped mask bit (O(1)).
    private const double Tolerance = 1e-6;

    private static readonly float[] Probabilities = [0f, 0.1f, 0.5f, 0.9f];

    [Property(MaxTest = 30)]
    public void Dropout_matches_host_mask_reference_and_finite_differences(PositiveInt n, PositiveInt pPick, int seed, int offset)
    {
        var shape = new Shape(n.Get % 300 + 1);
        var rng = new Random(seed);
        float p = pPick.Get % 5 < 4 ? Probabilities[pPick.Get % 5] : (float)rng.NextDouble() * 0.99f;
        ulong s = (ulong)seed * 0x9E3779B97F4A7C15UL, o = (ulong)(uint)offset;
        var r = GradCheck.Run(TestDevice.Get(), [(GradCheck.RandomValues(rng, shape.Numel), shape)], [true],
            v => Ops.Dropout(v[0], p, s, o),
            x => Dropout.Reference.Forward(x[0], p, s, o), seed);
        Assert.True(r.ForwardError <= Tolerance && r.GradientErrors[0] <= Tolerance, $"n={shape.Numel} p={p}: {r}");
    }

    [Fact]
    public void Same_seed_and_offset_replay_the_mask_bit_for_bit_and_backward_uses_it()
    {
        var dev = TestDevice.Get();
        const int n = 1001;
        const float p = 0.3f;
        var shape = new Shape(7, 11, 13);
        using var x = Tensor.FromHost(dev, Enumerable.Range(0, n).Select(i => 1f + i % 5).ToArray(), shape, MemoryCategory.Data, "x");
        using var y1 = Tensor.Empty(dev, shape, DType.F32, MemoryCategory.Data, "y1");
        using var y2 = Tensor.Empty(dev, shape, DType.F32, MemoryCategory.Data, "y2");
        using var y3 = Tensor.Empty(dev, shape, DType.F32, MemoryCategory.Data, "y3");
        Dropout.Forward(x, y1, p, 42, 7);
        Dropout.Forward(x, y2, p, 42, 7);
        Dropout.Forward(x, y3, p, 42, 8);
        Assert.Equal(y1.ToRawArray(), y2.ToRawArray());
        var a = y1.ToFloatArray();
        var c = y3.ToFloatArray();
        int differ = Enumerable.Range(0, n).Count(i => (a[i] == 0) != (c[i] == 0));
        Assert.True(differ > n / 10, $"offset 8 should draw a fresh mask, yet only {differ} of {n} positions differ");

        // Backward with dy = 1 gives dx = m/(1−p): zero exactly where the forward dropped.
        using var dy = Tensor.FromHost(dev, Enumerable.Repeat(1f, n).ToArray(), shape, MemoryCategory.Data, "dy");
        using var dx = Tensor.Zeros(dev, shape, DType.F32, MemoryCategory.Data, "dx");
        Dropout.Backward(dy, dx, p, 42, 7);
        var g = dx.ToFloatArray();
        float scale = Dropout.KeepScale(p);
        for (int i = 0; i < n; i++) Assert.Equal(a[i] == 0 ? 0f : scale, g[i]);
        // And the device mask is the host generator's, bit for bit.
        var x0 = x.ToFloatArray();
        var host = Dropout.Reference.Forward(x0.Select(v => (double)v).ToArray(), p, 42, 7);
        for (int i = 0; i < n; i++) Assert.Equal((float)host[i], a[i]);
    }

    [Fact]
    public void Keep_rate_is_within_five_sigma_of_one_minus_p()
    {
        var dev = TestDevice.Get();
        const int n = 1 << 18;
        using var x = Tensor.FromHost(dev, Enumerable.Repeat(1f, n).ToArray(), new Shape(n), MemoryCategory.Data, "x");
        using var y = Tensor.Empty(dev, x.Shape, DType.F32, MemoryCategory.Data, "y");
        foreach (float p in new[] { 0.1f, 0.5f, 0.8f })
        {
            Dropout.Forward(x, y, p, 2024, 3);
            int kept = y.ToFloatArray().Count(v => v != 0);
            double expect = n * (1 - p), sigma = Math.Sqrt(n * p * (1 - p));
            Assert.True(Math.Abs(kept - expect) <= 5 * sigma, $"p={p}: kept {kept} of {n}, expected {expect:F0} ± {5 * sigma:F0}");
        }
    }

    [Fact]
    public void Zero_probability_passes_input_and_gradient_through_without_new_memory()
    {
        var dev = TestDevice.Get();
        var values = GradCheck.RandomValues(new Random(4), 50);
        using var x = new Var(Tensor.FromHost(dev, values, new Shape(5, 10), MemoryCategory.Data, "x"), requiresGrad: true);
        using var tape = new Tape();
        long live = dev.Tracker.Live;
        using var y = Ops.Dropout(x, 0f, 1, 2);
        Assert.Equal(live, dev.Tracker.Live);
        Assert.Equal(values, y.Value.ToFloatArray());
        using var seed = Tensor.FromHost(dev, values, y.Shape, MemoryCategory.Data, "seed");
        tape.Backward(y, seed);
        Assert.Equal(values, x.Grad!.ToFloatArray());
        x.Grad.Dispose();
    }

    [Theory]
    [InlineData(-0.1f)]
    [InlineData(1f)]
    [InlineData(1.5f)]
    [InlineData(float.NaN)]
    public void Probability_outside_zero_to_one_is_rejected_naming_dropout(float p)
    {
        var dev = TestDevice.Get();
        using var x = new Var(Tensor.Zeros(dev, new Shape(3, 4), DType.F32, MemoryCategory.Data, "x"));
        var e = Assert.Throws<ShapeException>(() => Ops.Dropout(x, p, 1, 1));
        Assert.Contains("dropout", e.Message);
        Assert.Contains("[3, 4]", e.Message);
    }

    [Fact]
    public void Philox_matches_the_Random123_known_answers()
    {
        // Random123 tests/kat_vectors, "philox4x32 10": counter[4] key[2] -> result[4].
        Check(CounterRng.Philox(0, 0, 0, 0, 0, 0), 0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8);
        Check(CounterRng.Philox(~0u, ~0u, ~0u, ~0u, ~0u, ~0u), 0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd);
        Check(CounterRng.Philox(0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344, 0xa4093822, 0x299f31d0),
            0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1);

        static void Check(CounterRng.Block b, uint x0, uint x1, uint x2, uint x3) =>
            Assert.Equal([x0, x1, x2, x3], new[] { b.X0, b.X1, b.X2, b.X3 });
    }

    [Theory]
    [InlineData(0UL, 0UL)]
    [InlineData(12345UL, 0UL)]
    [InlineData(12345UL, 1UL)]
    [InlineData(ulong.MaxValue, 1UL << 40)]
    public void Uniform_outputs_pass_a_chi_square_test(ulong seed, ulong offset)
    {
        // 100 equal bins, 200 000 draws: the statistic is χ² with 99 degrees of freedom (mean 99, sd 14); 99.99% of
        // samples from a uniform source fall below 160. The draws are deterministic, so this cannot flake.
        const int bins = 100, draws = 200_000;
        var counts = new int[bins];
        for (long i = 0; i < draws; i++)
        {
            float u = CounterRng.Uniform(seed, offset, i);
            Assert.True(u >= 0f && u < 1f);
            counts[(int)(u * bins)]++;
        }
        double expected = (double)draws / bins;
        double chi2 = counts.Sum(c => (c - expected) * (c - expected) / expected);
        Assert.True(chi2 < 160, $"chi-square {chi2:F1} with 99 degrees of freedom");
    }
}
