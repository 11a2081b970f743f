using ILGPU;
using ILGPU.Runtime;
using Memopt.Tensors;

namespace Memopt.Kernels;

/// <summary>
/// GELU, erf form (PyTorch's default): y = x·Φ(x) = ½x(1 + erf(x/√2)).
/// Backward: dx += dy·(Φ(x) + x·φ(x)), with φ the standard normal density; it reads x again rather than keeping Φ(x).
/// Each tensor float32 or bfloat16 (<see cref="FloatView"/>); the math is float32.
/// </summary>
public static class Gelu
{
    public static void Forward(Tensor x, Tensor y)
    {
        Elementwise.CheckPair("gelu", x, y);
        var k = x.Device.Kernel("gelu.fwd", acc => acc.LoadStreamKernel<FloatView, FloatView, long>(ForwardKernel));
        k(Launch.Elementwise(x.Device, x.Numel), FloatView.Of(x), FloatView.Of(y), x.Numel);
    }

    /// <summary>dx += dy·GELU'(x).</summary>
    public static void Backward(Tensor x, Tensor dy, Tensor dx)
    {
        Elementwise.CheckTriple("gelu_backward", x, dy, dx);
        var k = x.Device.Kernel("gelu.bwd", acc => acc.LoadStreamKernel<FloatView, FloatView, FloatView, long>(BackwardKernel));
        k(Launch.Elementwise(x.Device, x.Numel), FloatView.Of(x), FloatView.Of(dy), FloatView.Of(dx), x.Numel);
    }

    public static float Value(float x) => 0.5f * x * (1f + KernelMath.Erf(x * KernelMath.InvSqrt2));

    public static float Derivative(float x) =>
        0.5f * (1f + KernelMath.Erf(x * KernelMath.InvSqrt2)) + x * KernelMath.InvSqrt2Pi * MathF.Exp(-0.5f * x * x);

    private static void ForwardKernel(FloatView x, FloatView y, long n)
    {
        long stride = (long)Grid.DimX * Group.DimX;
        for (long i = Grid.GlobalIndex.X; i < n; i += stride) y.Store(i, Value(x.Load(i)));
    }

    private static void BackwardKernel(FloatView x, FloatView dy, FloatView dx, long n)
    {
        long stride = (long)Grid.DimX * Group.DimX;
        for (long i = Grid.GlobalIndex.X; i < n; i += stride) dx.Add(i, dy.Load(i) * Derivative(x.Load(i)));
    }

    public static class Reference
    {
        public static double[] Forward(double[] x) => x.Select(v => 0.5 * v * (1 + KernelMath.ErfDouble(v / Math.Sqrt(2)))).ToArray();
    }
}
