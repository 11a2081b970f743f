using ILGPU;
using ILGPU.Runtime;
using Memopt.Tensors;

namespace Memopt.Kernels;

/// <summary>
/// GELU, erf form (PyTorch's default): y = x·Φ(x) = ½x(1 + erf(x/√2)), Φ from erfc below 0 (<see cref="KernelMath.NormalCdf"/>).
/// Backward: dx += dy·(Φ(x) + x·φ(x)), with φ the standard normal density; it reads x again rather than keeping Φ(x).
/// Each tensor float32 or bfloat16 (<see cref="FloatView"/>); the math is float32.
/// </summary>
public static class Gelu
{
    public static void Forward(Tensor x, Tensor y)
    {
        Elementwise.CheckPair("gelu", x, y);
        long quads = x.Numel / 4;
        switch (Quads.KindOf(x, y))
        {
            case QuadKind.Bf16: Quad(x.Device, "gelu.fwd_bf16x4", Bf16Quads.Of(x), Bf16Quads.Of(y), quads); return;
            case QuadKind.F32: Quad(x.Device, "gelu.fwd_f32x4", F32Quads.Of(x), F32Quads.Of(y), quads); return;
        }
        var k = x.Device.Kernel("gelu.fwd", acc => acc.LoadStreamKernel<FloatView, FloatView, long>(ForwardKernel));
        k(Launch.Elementwise(x.Device, x.Numel), FloatView.Of(x), FloatView.Of(y), x.Numel);
    }

    /// <summary>dx += dy·GELU'(x).</summary>
    public static void Backward(Tensor x, Tensor dy, Tensor dx)
    {
        Elementwise.CheckTriple("gelu_backward", x, dy, dx);
        long quads = x.Numel / 4;
        switch (Quads.KindOf(x, dy, dx))
        {
            case QuadKind.Bf16: QuadBackward(x.Device, "gelu.bwd_bf16x4", Bf16Quads.Of(x), Bf16Quads.Of(dy), Bf16Quads.Of(dx), quads); return;
            case QuadKind.F32: QuadBackward(x.Device, "gelu.bwd_f32x4", F32Quads.Of(x), F32Quads.Of(dy), F32Quads.Of(dx), quads); return;
        }
        var k = x.Device.Kernel("gelu.bwd", acc => acc.LoadStreamKernel<FloatView, FloatView, FloatView, long>(BackwardKernel));
        k(Launch.Elementwise(x.Device, x.Numel), FloatView.Of(x), FloatView.Of(dy), FloatView.Of(dx), x.Numel);
    }

    public static float Value(float x) => x * KernelMath.NormalCdf(x);

    public static float Derivative(float x) => KernelMath.NormalCdf(x) + x * KernelMath.InvSqrt2Pi * MathF.Exp(-0.5f * x * x);

    // Four values per access where every tensor is bf16 (8-byte words) or float32 (16-byte float4s): two- and four-byte
    // accesses held both kernels near 1 TB/s. Same math per element, so the same results as the scalar kernels.
    private static void Quad<TQuads>(ComputeDevice device, string key, TQuads x, TQuads y, long quads) where TQuads : struct, IQuads
    {
        var k = device.Kernel(key, acc => acc.LoadStreamKernel<TQuads, TQuads, long>(ForwardQuadKernel));
        k(Launch.Elementwise(device, quads), x, y, quads);
    }

    private static void QuadBackward<TQuads>(ComputeDevice device, string key, TQuads x, TQuads dy, TQuads dx, long quads) where TQuads : struct, IQuads
    {
        var k = device.Kernel(key, acc => acc.LoadStreamKernel<TQuads, TQuads, TQuads, long>(BackwardQuadKernel));
        k(Launch.Elementwise(device, quads), x, dy, dx, quads);
    }

    private static void ForwardQuadKernel<TQuads>(TQuads x, TQuads y, long quads) where TQuads : struct, IQuads
    {
        long stride = (long)Grid.DimX * Group.DimX;
        for (long q = Grid.GlobalIndex.X; q < quads; q += stride)
        {
            var v = x.Load(q);
            y.Store(q, new MatMul.Quad(Value(v.X), Value(v.Y), Value(v.Z), Value(v.W)));
        }
    }

    private static void BackwardQuadKernel<TQuads>(TQuads x, TQuads dy, TQuads dx, long quads) where TQuads : struct, IQuads
    {
        long stride = (long)Grid.DimX * Group.DimX;
        for (long q = Grid.GlobalIndex.X; q < quads; q += stride)
        {
            var v = x.Load(q);
            var g = dy.Load(q);
            var d = dx.Load(q);
            dx.Store(q, new MatMul.Quad(d.X + g.X * Derivative(v.X), d.Y + g.Y * Derivative(v.Y), d.Z + g.Z * Derivative(v.Z), d.W + g.W * Derivative(v.W)));
        }
    }

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
