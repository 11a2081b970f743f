using ILGPU;
using ILGPU.Runtime;
using Memopt.Tensors;

namespace Memopt.Kernels;

/// <summary>
/// Elementwise kernels: residual add (y = a + b), scale (y = s·x) and accumulate (y += s·x, the
/// gradient-accumulation primitive every backward uses; s a host float or a device scalar). One pass, each input read once, output written once.
/// Every tensor may be float32 or bfloat16 independently (<see cref="FloatView"/>): the arithmetic is float32 and a
/// bf16 output is rounded once, when stored (so y += s·x into bf16 adds in float32, then rounds).
/// Where every tensor is bf16 8-byte aligned, or every one float32 16-byte aligned, and the count is a multiple of four,
/// the kernels move four values per access (<see cref="IQuads"/>), with the same math and so the same bits.
/// </summary>
public static class Elementwise
{
    /// <summary>y = a + b.</summary>
    public static void Add(Tensor a, Tensor b, Tensor y)
    {
        CheckTriple("add", a, b, y);
        switch (Quads.KindOf(a, b, y))
        {
            case QuadKind.Bf16: AddQuads(a.Device, "elementwise.add_bf16x4", Bf16Quads.Of(a), Bf16Quads.Of(b), Bf16Quads.Of(y), a.Numel / 4); return;
            case QuadKind.F32: AddQuads(a.Device, "elementwise.add_f32x4", F32Quads.Of(a), F32Quads.Of(b), F32Quads.Of(y), a.Numel / 4); return;
        }
        var k = a.Device.Kernel("elementwise.add", acc => acc.LoadStreamKernel<FloatView, FloatView, FloatView, long>(AddKernel));
        k(Launch.Elementwise(a.Device, a.Numel), FloatView.Of(a), FloatView.Of(b), FloatView.Of(y), a.Numel);
    }

    /// <summary>y = s·x (y may be x).</summary>
    public static void Scale(Tensor x, float s, Tensor y)
    {
        CheckPair("scale", x, y);
        switch (Quads.KindOf(x, y))
        {
            case QuadKind.Bf16: ScaleQuads(x.Device, "elementwise.scale_bf16x4", Bf16Quads.Of(x), s, Bf16Quads.Of(y), x.Numel / 4); return;
            case QuadKind.F32: ScaleQuads(x.Device, "elementwise.scale_f32x4", F32Quads.Of(x), s, F32Quads.Of(y), x.Numel / 4); return;
        }
        var k = x.Device.Kernel("elementwise.scale", acc => acc.LoadStreamKernel<FloatView, float, FloatView, long>(ScaleKernel));
        k(Launch.Elementwise(x.Device, x.Numel), FloatView.Of(x), s, FloatView.Of(y), x.Numel);
    }

    /// <summary>y += s·x.</summary>
    public static void AddInto(Tensor x, Tensor y, float s)
    {
        CheckPair("add_into", x, y);
        switch (Quads.KindOf(x, y))
        {
            case QuadKind.Bf16: AddIntoQuads(x.Device, "elementwise.add_into_bf16x4", Bf16Quads.Of(x), Bf16Quads.Of(y), s, x.Numel / 4); return;
            case QuadKind.F32: AddIntoQuads(x.Device, "elementwise.add_into_f32x4", F32Quads.Of(x), F32Quads.Of(y), s, x.Numel / 4); return;
        }
        var k = x.Device.Kernel("elementwise.add_into", acc => acc.LoadStreamKernel<FloatView, FloatView, float, long>(AddIntoKernel));
        k(Launch.Elementwise(x.Device, x.Numel), FloatView.Of(x), FloatView.Of(y), s, x.Numel);
    }

    /// <summary>y += s[0]·x, the scale read on the device (a loss gradient that never comes back to the host).</summary>
    public static void AddInto(Tensor x, Tensor y, Tensor s)
    {
        CheckPair("add_into", x, y);
        Check.That(s.DType == DType.F32 && s.Numel == 1, "add_into", $"scale {s.Shape} {s.DType.Name()} must be one float32");
        Check.SameDevice("add_into", x, s);
        // The scale is one float read once per thread, so only x and y decide the access width.
        switch (Quads.KindOf(x, y))
        {
            case QuadKind.Bf16: AddIntoScaledQuads(x.Device, "elementwise.add_into_scaled_bf16x4", Bf16Quads.Of(x), Bf16Quads.Of(y), s.F32, x.Numel / 4); return;
            case QuadKind.F32: AddIntoScaledQuads(x.Device, "elementwise.add_into_scaled_f32x4", F32Quads.Of(x), F32Quads.Of(y), s.F32, x.Numel / 4); return;
        }
        var k = x.Device.Kernel("elementwise.add_into_scaled", acc => acc.LoadStreamKernel<FloatView, FloatView, ArrayView<float>, long>(AddIntoScaledKernel));
        k(Launch.Elementwise(x.Device, x.Numel), FloatView.Of(x), FloatView.Of(y), s.F32, x.Numel);
    }

    private static void AddQuads<TQuads>(ComputeDevice device, string key, TQuads a, TQuads b, TQuads y, long quads) where TQuads : struct, IQuads
    {
        var k = device.Kernel(key, acc => acc.LoadStreamKernel<TQuads, TQuads, TQuads, long>(AddQuadKernel));
        k(Launch.Elementwise(device, quads), a, b, y, quads);
    }

    private static void ScaleQuads<TQuads>(ComputeDevice device, string key, TQuads x, float s, TQuads y, long quads) where TQuads : struct, IQuads
    {
        var k = device.Kernel(key, acc => acc.LoadStreamKernel<TQuads, float, TQuads, long>(ScaleQuadKernel));
        k(Launch.Elementwise(device, quads), x, s, y, quads);
    }

    private static void AddIntoQuads<TQuads>(ComputeDevice device, string key, TQuads x, TQuads y, float s, long quads) where TQuads : struct, IQuads
    {
        var k = device.Kernel(key, acc => acc.LoadStreamKernel<TQuads, TQuads, float, long>(AddIntoQuadKernel));
        k(Launch.Elementwise(device, quads), x, y, s, quads);
    }

    private static void AddIntoScaledQuads<TQuads>(ComputeDevice device, string key, TQuads x, TQuads y, ArrayView<float> s, long quads) where TQuads : struct, IQuads
    {
        var k = device.Kernel(key, acc => acc.LoadStreamKernel<TQuads, TQuads, ArrayView<float>, long>(AddIntoScaledQuadKernel));
        k(Launch.Elementwise(device, quads), x, y, s, quads);
    }

    // The quad kernels spell out the scalar kernels' expressions per element (y + s·x is FloatView.Add's Load + v),
    // so both round identically.
    private static void AddQuadKernel<TQuads>(TQuads a, TQuads b, TQuads y, long quads) where TQuads : struct, IQuads
    {
        long stride = (long)Grid.DimX * Group.DimX;
        for (long q = Grid.GlobalIndex.X; q < quads; q += stride)
        {
            y.Store(q, a.Load(q) + b.Load(q));
        }
    }

    private static void ScaleQuadKernel<TQuads>(TQuads x, float s, TQuads y, long quads) where TQuads : struct, IQuads
    {
        long stride = (long)Grid.DimX * Group.DimX;
        for (long q = Grid.GlobalIndex.X; q < quads; q += stride)
        {
            var v = x.Load(q);
            y.Store(q, new MatMul.Quad(s * v.X, s * v.Y, s * v.Z, s * v.W));
        }
    }

    private static void AddIntoQuadKernel<TQuads>(TQuads x, TQuads y, float s, long quads) where TQuads : struct, IQuads
    {
        long stride = (long)Grid.DimX * Group.DimX;
        for (long q = Grid.GlobalIndex.X; q < quads; q += stride) y.Store(q, AddScaled(y.Load(q), s, x.Load(q)));
    }

    private static void AddIntoScaledQuadKernel<TQuads>(TQuads x, TQuads y, ArrayView<float> s, long quads) where TQuads : struct, IQuads
    {
        float scale = s[0];
        long stride = (long)Grid.DimX * Group.DimX;
        for (long q = Grid.GlobalIndex.X; q < quads; q += stride) y.Store(q, AddScaled(y.Load(q), scale, x.Load(q)));
    }

    private static MatMul.Quad AddScaled(MatMul.Quad y, float s, MatMul.Quad x) =>
        new(y.X + s * x.X, y.Y + s * x.Y, y.Z + s * x.Z, y.W + s * x.W);

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
