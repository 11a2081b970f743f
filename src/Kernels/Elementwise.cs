using ILGPU;
using ILGPU.Runtime;
using Memopt.Tensors;

namespace Memopt.Kernels;

/// <summary>
/// Elementwise kernels: residual add (y = a + b), scale (y = s·x) and accumulate (y += s·x, the
/// gradient-accumulation primitive every backward uses; s a host float or a device scalar). One pass, each input read once, output written once.
/// Every tensor may be float32 or bfloat16 independently (<see cref="FloatView"/>): the arithmetic is float32 and a
/// bf16 output is rounded once, when stored (so y += s·x into bf16 adds in float32, then rounds).
/// </summary>
public static class Elementwise
{
    /// <summary>y = a + b.</summary>
    public static void Add(Tensor a, Tensor b, Tensor y)
    {
        CheckTriple("add", a, b, y);
        var k = a.Device.Kernel("elementwise.add", acc => acc.LoadStreamKernel<FloatView, FloatView, FloatView, long>(AddKernel));
        k(Launch.Elementwise(a.Device, a.Numel), FloatView.Of(a), FloatView.Of(b), FloatView.Of(y), a.Numel);
    }

    /// <summary>y = s·x (y may be x).</summary>
    public static void Scale(Tensor x, float s, Tensor y)
    {
        CheckPair("scale", x, y);
        var k = x.Device.Kernel("elementwise.scale", acc => acc.LoadStreamKernel<FloatView, float, FloatView, long>(ScaleKernel));
        k(Launch.Elementwise(x.Device, x.Numel), FloatView.Of(x), s, FloatView.Of(y), x.Numel);
    }

    /// <summary>y += s·x.</summary>
    public static void AddInto(Tensor x, Tensor y, float s)
    {
        CheckPair("add_into", x, y);
        var k = x.Device.Kernel("elementwise.add_into", acc => acc.LoadStreamKernel<FloatView, FloatView, float, long>(AddIntoKernel));
        k(Launch.Elementwise(x.Device, x.Numel), FloatView.Of(x), FloatView.Of(y), s, x.Numel);
    }

    /// <summary>y += s[0]·x, the scale read on the device (a loss gradient that never comes back to the host).</summary>
    public static void AddInto(Tensor x, Tensor y, Tensor s)
    {
        CheckPair("add_into", x, y);
        Check.That(s.DType == DType.F32 && s.Numel == 1, "add_into", $"scale {s.Shape} {s.DType.Name()} must be one float32");
        Check.SameDevice("add_into", x, s);
        var k = x.Device.Kernel("elementwise.add_into_scaled", acc => acc.LoadStreamKernel<FloatView, FloatView, ArrayView<float>, long>(AddIntoScaledKernel));
        k(Launch.Elementwise(x.Device, x.Numel), FloatView.Of(x), FloatView.Of(y), s.F32, x.Numel);
    }

    private static void AddIntoScaledKernel(FloatView x, FloatView y, ArrayView<float> s, long n)
    {
        float scale = s[0];
        long stride = (long)Grid.DimX * Group.DimX;
        for (long i = Grid.GlobalIndex.X; i < n; i += stride) y.Add(i, scale * x.Load(i));
    }

    private static void AddKernel(FloatView a, FloatView b, FloatView y, long n)
    {
        long stride = (long)Grid.DimX * Group.DimX;
        for (long i = Grid.GlobalIndex.X; i < n; i += stride) y.Store(i, a.Load(i) + b.Load(i));
    }

    private static void ScaleKernel(FloatView x, float s, FloatView y, long n)
    {
        long stride = (long)Grid.DimX * Group.DimX;
        for (long i = Grid.GlobalIndex.X; i < n; i += stride) y.Store(i, s * x.Load(i));
    }

    private static void AddIntoKernel(FloatView x, FloatView y, float s, long n)
    {
        long stride = (long)Grid.DimX * Group.DimX;
        for (long i = Grid.GlobalIndex.X; i < n; i += stride) y.Add(i, s * x.Load(i));
    }

    /// <summary>x and y float32 or bfloat16 (each on its own), same shape.</summary>
    internal static void CheckPair(string op, Tensor x, Tensor y)
    {
        Check.Float(op, x);
        Check.Float(op, y, "output");
        Check.SameShape(op, x, y);
    }

    internal static void CheckTriple(string op, Tensor a, Tensor b, Tensor y)
    {
        CheckPair(op, a, b);
        CheckPair(op, a, y);
    }

    /// <summary>Float64 CPU references.</summary>
    public static class Reference
    {
        public static double[] Add(double[] a, double[] b) => a.Select((v, i) => v + b[i]).ToArray();
        public static double[] Scale(double[] x, double s) => x.Select(v => s * v).ToArray();
    }
}
