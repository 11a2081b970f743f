using ILGPU;
using ILGPU.Runtime;
using Memopt.Tensors;

namespace Memopt.Kernels;

/// <summary>
/// Inverted dropout: y = x·m/(1−p), with m = 1 where the element's uniform draw u ≥ p and 0 otherwise.
/// The mask is never stored: u comes from <see cref="CounterRng"/> at (seed, offset, element index), so backward
/// (dx += dy·m/(1−p)) and a gradient-checkpointing recompute regenerate it bit for bit. Memory: one read of x (or dy)
/// and one write of y (or read-modify-write of dx) per element; each thread draws one Philox block for four
/// consecutive elements. x, y, dy and dx may each be float32 or bfloat16 (<see cref="FloatView"/>): the mask does not
/// depend on the dtype, the multiply is float32 and a bf16 result is rounded once.
/// </summary>
public static class Dropout
{
    /// <summary>Throws a <see cref="ShapeException"/> naming dropout unless 0 ≤ p &lt; 1.</summary>
    public static void CheckProbability(float p, Shape shape)
    {
        Check.That(p >= 0f && p < 1f, "dropout", $"p = {p} must be in [0, 1) (input {shape})");
    }

    /// <summary>The factor kept elements are multiplied by, 1/(1−p), as the kernels use it.</summary>
    public static float KeepScale(float p) => 1f / (1f - p);

    /// <summary>Whether an element with these random bits is kept (host and device use the same test).</summary>
    public static bool Keeps(uint bits, float p) => CounterRng.ToUniform(bits) >= p;

    /// <summary>y = dropout(x) with the mask of stream (seed, offset).</summary>
    public static void Forward(Tensor x, Tensor y, float p, ulong seed, ulong offset)
    {
        Elementwise.CheckPair("dropout", x, y);
        CheckProbability(p, x.Shape);
        var k = x.Device.Kernel("dropout.apply", acc => acc.LoadStreamKernel<FloatView, FloatView, long, float, float, ulong, ulong>(ApplyKernel));
        k(Launch.Elementwise(x.Device, (x.Numel + 3) / 4), FloatView.Of(x), FloatView.Of(y), x.Numel, p, KeepScale(p), seed, offset);
    }

    /// <summary>dx += dy·m/(1−p), regenerating the forward mask from (seed, offset).</summary>
    public static void Backward(Tensor dy, Tensor dx, float p, ulong seed, ulong offset)
    {
        Elementwise.CheckPair("dropout_backward", dy, dx);
        CheckProbability(p, dy.Shape);
        var k = dy.Device.Kernel("dropout.accumulate", acc => acc.LoadStreamKernel<FloatView, FloatView, long, float, float, ulong, ulong>(AccumulateKernel));
        k(Launch.Elementwise(dy.Device, (dy.Numel + 3) / 4), FloatView.Of(dy), FloatView.Of(dx), dy.Numel, p, KeepScale(p), seed, offset);
    }

    private static float Factor(uint bits, float p, float scale) => Keeps(bits, p) ? scale : 0f;

    /// <summary>y[i] = x[i]·factor(i); one Philox block per four elements.</summary>
    private static void ApplyKernel(FloatView x, FloatView y, long n, float p, float scale, ulong seed, ulong offset)
    {
        long stride = (long)Grid.DimX * Group.DimX;
        long blocks = (n + 3) / 4;
        for (long b = Grid.GlobalIndex.X; b < blocks; b += stride)
        {
            var r = CounterRng.BlockAt(seed, offset, b);
            long i = b * 4;
            y.Store(i, x.Load(i) * Factor(r.X0, p, scale));
            if (i + 1 < n) y.Store(i + 1, x.Load(i + 1) * Factor(r.X1, p, scale));
            if (i + 2 < n) y.Store(i + 2, x.Load(i + 2) * Factor(r.X2, p, scale));
            if (i + 3 < n) y.Store(i + 3, x.Load(i + 3) * Factor(r.X3, p, scale));
        }
    }

    /// <summary>dx[i] += dy[i]·factor(i).</summary>
    private static void AccumulateKernel(FloatView dy, FloatView dx, long n, float p, float scale, ulong seed, ulong offset)
    {
        long stride = (long)Grid.DimX * Group.DimX;
        long blocks = (n + 3) / 4;
        for (long b = Grid.GlobalIndex.X; b < blocks; b += stride)
        {
            var r = CounterRng.BlockAt(seed, offset, b);
            long i = b * 4;
            dx.Add(i, dy.Load(i) * Factor(r.X0, p, scale));
            if (i + 1 < n) dx.Add(i + 1, dy.Load(i + 1) * Factor(r.X1, p, scale));
            if (i + 2 < n) dx.Add(i + 2, dy.Load(i + 2) * Factor(r.X2, p, scale));
            if (i + 3 < n) dx.Add(i + 3, dy.Load(i + 3) * Factor(r.X3, p, scale));
        }
    }

    /// <summary>Float64 references that regenerate the mask on the host with the same generator.</summary>
    public static class Reference
    {
        public static double[] Mask(long n, float p, ulong seed, ulong offset)
        {
            var m = new double[n];
            double scale = KeepScale(p);
            for (long i = 0; i < n; i++) m[i] = Keeps(CounterRng.Bits(seed, offset, i), p) ? scale : 0.0;
            return m;
        }

        public static double[] Forward(double[] x, float p, ulong seed, ulong offset)
        {
            var m = Mask(x.Length, p, seed, offset);
            return x.Select((v, i) => v * m[i]).ToArray();
        }
    }
}
