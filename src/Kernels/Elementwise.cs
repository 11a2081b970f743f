using ILGPU;
using ILGPU.Runtime;
using Memopt.Tensors;

namespace Memopt.Kernels;

/// <summary>
/// Elementwise float32 kernels: residual add (y = a + b), scale (y = s·x) and accumulate (y += s·x, the
/// gradient-accumulation primitive every backward uses). One pass, each input read once, output written once.
/// </summary>
public static class Elementwise
{
    /// <summary>y = a + b.</summary>
    public static void Add(Tensor a, Tensor b, Tensor y)
    {
        CheckTriple("add", a, b, y);
        var k = a.Device.Kernel("elementwise.add", acc => acc.LoadStreamKernel<ArrayView<float>, ArrayView<float>, ArrayView<float>, long>(AddKernel));
        k(Launch.Elementwise(a.Device, a.Numel), a.F32, b.F32, y.F32, a.Numel);
    }

    /// <summary>y = s·x (y may be x).</summary>
    public static void Scale(Tensor x, float s, Tensor y)
    {
        CheckPair("scale", x, y);
        var k = x.Device.Kernel("elementwise.scale", acc => acc.LoadStreamKernel<ArrayView<float>, float, ArrayView<float>, long>(ScaleKernel));
        k(Launch.Elementwise(x.Device, x.Numel), x.F32, s, y.F32, x.Numel);
    }

    /// <summary>y += s·x.</summary>
    public static void AddInto(Tensor x, Tensor y, float s)
    {
        CheckPair("add_into", x, y);
        var k = x.Device.Kernel("elementwise.add_into", acc => acc.LoadStreamKernel<ArrayView<float>, ArrayView<float>, float, long>(AddIntoKernel));
        k(Launch.Elementwise(x.Device, x.Numel), x.F32, y.F32, s, x.Numel);
    }

    private static void AddKernel(ArrayView<float> a, ArrayView<float> b, ArrayView<float> y, long n)
    {
        long stride = (long)Grid.DimX * Group.DimX;
        for (long i = Grid.GlobalIndex.X; i < n; i += stride) y[i] = a[i] + b[i];
    }

    private static void ScaleKernel(ArrayView<float> x, float s, ArrayView<float> y, long n)
    {
        long stride = (long)Grid.DimX * Group.DimX;
        for (long i = Grid.GlobalIndex.X; i < n; i += stride) y[i] = s * x[i];
    }

    private static void AddIntoKernel(ArrayView<float> x, ArrayView<float> y, float s, long n)
    {
        long stride = (long)Grid.DimX * Group.DimX;
        for (long i = Grid.GlobalIndex.X; i < n; i += stride) y[i] += s * x[i];
    }

    internal static void CheckPair(string op, Tensor x, Tensor y)
    {
        Check.DType(op, x, DType.F32);
        Check.DType(op, y, DType.F32, "output");
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
