using FsCheck;
using FsCheck.Xunit;
using Memopt.Autograd;
using Memopt.Autograd.Optim;
using Memopt.Kernels;
using Memopt.Tensors;
using Memopt.Tests.Harness;

namespace Memopt.Tests.Kernels;

public class GradNormTests
{
    // Σx² of ≤ 5·4099 positive terms in float32: each thread adds ≤ ~1300 terms in sequence and the groups and partials
    // are added in trees, so the worst-case relative error is ~1300·6e-8 ≈ 8e-5 and the typical one (random-walk)
    // ~√1300·6e-8 ≈ 2e-6; the square root halves both. 2e-5 sits far above typical, below the rigorous worst case,
    // which needs every rounding to go the same way.
    private const double NormTolerance = 2e-5;

    private static readonly int[] Sizes = [1, 2, 3, 16, 17, 100, 257, 1000, 4099];

    private static Parameter NewParameter(ComputeDevice dev, float[] grad, string name)
    {
        var p = new Parameter(Tensor.Zeros(dev, new Shape(grad.Length), DType.F32, MemoryCategory.Parameters, name), name);
        p.Grad!.CopyFrom(grad);
        return p;
    }

    private static (Parameter[] Params, float[][] Grads) RandomParameters(int count, int sizeSeed, Random rng)
    {
        var dev = TestDevice.Get();
        var grads = Enumerable.Range(0, count)
            .Select(i => GradCheck.RandomValues(rng, Sizes[(sizeSeed + 7 * i) % Sizes.Length], scale: Math.Pow(10, rng.Next(-2, 2))))
            .ToArray();
        return (grads.Select((g, i) => NewParameter(dev, g, $"p{i}")).ToArray(), grads);
    }

    private static double Reference(float[][] grads) => GradNorm.Reference.Global(grads.Select(g => g.Select(v => (double)v).ToArray()));

    [Property(MaxTest = 20)]
    public void Norm_matches_float64_over_tensors_of_different_sizes(PositiveInt count, PositiveInt sizeSeed, int seed)
    {
        KernelPaths.ForEach(() =>
        {
            var (ps, grads) = RandomParameters(count.Get % 5 + 1, sizeSeed.Get, new Random(seed));
            try
            {
                double want = Reference(grads);
                double got = GradClip.GlobalNorm(ps);
                Assert.True(Math.Abs(got - want) <= NormTolerance * want, $"norm {got} vs {want}");
            }
            finally
            {
                foreach (var p in ps) p.Dispose();
            }
        });
    }

    [Property(MaxTest = 20)]
    public void Clipping_scales_every_gradient_exactly_when_above_and_not_at_all_below(PositiveInt count, PositiveInt sizeSeed, bool above, int seed)
    {
        KernelPaths.ForEach(() =>
        {
            var (ps, grads) = RandomParameters(count.Get % 4 + 1, sizeSeed.Get, new Random(seed));
            try
            {
                double want = Reference(grads);
                float maxNorm = (float)(above ? want * 0.3 : want * 1.5);
                float norm = GradClip.ClipGradNorm(ps, maxNorm);
                Assert.True(Math.Abs(norm - want) <= NormTolerance * want, $"returned pre-clip norm {norm} vs {want}");
                // The scale is maxNorm/(norm + 1e-6) in float32 and each element is one float32 multiply: bitwise equal.
                float coefficient = above ? maxNorm / (norm + 1e-6f) : 1f;
                for (int i = 0; i < ps.Length; i++)
                {
                    var got = ps[i].Grad!.ToFloatArray();
                    for (int j = 0; j < got.Length; j++)
                        Assert.True(got[j] == grads[i][j] * coefficient, $"grad {i}[{j}] = {got[j]}, want {grads[i][j] * coefficient}");
                }
                if (above)
                {
                    double after = GradClip.GlobalNorm(ps);
                    Assert.True(Math.Abs(after - maxNorm) <= NormTolerance * maxNorm + 1e-6, $"norm after clipping {after}, max {maxNorm}");
                }
            }
            finally
            {
                foreach (var p in ps) p.Dispose();
            }
        });
    }

    [Fact]
    public void Portable_sum_is_the_per_tensor_launches_partials_added_in_order()
    {
        // The slots are laid out as one launch per tensor would lay them out (each tensor with its own grid, a partial
        // per thread, tensor after tensor) and added in order. Replayed on the host in float32, which on the CPU
        // accelerator is the kernels' own arithmetic, so the sum matches bit for bit; 40 tensors span three launches.
        var dev = TestDevice.Get();
        Assert.SkipWhen(dev.IsCuda, "a float32 host replay equals only the CPU accelerator's arithmetic bitwise");
        using var scope = Launch.UsePath(KernelPath.Portable);
        var (ps, grads) = RandomParameters(40, 3, new Random(11));
        try
        {
            float want = 0f;
            foreach (var g in grads)
            {
                var config = Launch.Elementwise(dev, g.Length);
                int threads = config.GridDim.X * config.GroupDim.X;
                for (int t = 0; t < threads; t++)
                {
                    float s = 0f;
                    for (long i = t; i < g.Length; i += threads) s += g[i] * g[i];
                    want += s;
                }
            }
            float got = (float)GradNorm.SumOfSquares(ps.Select(p => p.Grad!).ToArray());
            Assert.True(BitConverter.SingleToInt32Bits(want) == BitConverter.SingleToInt32Bits(got), $"sum {got} vs replay {want}");
        }
        finally
        {
            foreach (var p in ps) p.Dispose();
        }
    }

    [Fact]
    public void Zero_gradients_have_norm_zero_and_are_left_alone()
    {
        KernelPaths.ForEach(() =>
        {
            var dev = TestDevice.Get();
            using var p = NewParameter(dev, new float[10], "p");
            Assert.Equal(0f, GradClip.ClipGradNorm([p], 1f));
            Assert.All(p.Grad!.ToFloatArray(), g => Assert.Equal(0f, g));
            Assert.Equal(0f, GradClip.GlobalNorm([]));
        });
    }

    [Fact]
    public void Non_finite_norm_is_returned_and_gradients_are_left_alone()
    {
        KernelPaths.ForEach(() =>
        {
            var dev = TestDevice.Get();
            using var p = NewParameter(dev, [1f, float.PositiveInfinity, 2f], "p");
            float norm = GradClip.ClipGradNorm([p], 1f);
            Assert.False(float.IsFinite(norm));
            Assert.Equal(new[] { 1f, float.PositiveInfinity, 2f }, p.Grad!.ToFloatArray());
        });
    }

    [Fact]
    public void Norm_runs_in_the_optimizer_phase_and_frees_its_workspace()
    {
        var dev = TestDevice.Get();
        using var p = NewParameter(dev, GradCheck.RandomValues(new Random(1), 50), "p");
        long live = dev.Tracker.Live;
        dev.Tracker.RecordTimeline = true;
        dev.Tracker.ClearTimeline();
        try
        {
            GradClip.ClipGradNorm([p], 0.1f);
            Assert.NotEmpty(dev.Tracker.Timeline);
            Assert.All(dev.Tracker.Timeline, e => Assert.Equal(Phase.Optimizer, e.Phase));
        }
        finally
        {
            dev.Tracker.RecordTimeline = false;
            dev.Tracker.ClearTimeline();
        }
        Assert.Equal(live, dev.Tracker.Live);
    }
}
