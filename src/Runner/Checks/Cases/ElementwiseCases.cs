using Memopt.Kernels;
using Memopt.Tensors;
using Conv = Memopt.Kernels.Convert;

namespace Memopt.Runner.Checks.Cases;

/// <summary>Elementwise, GELU and bf16 conversion kernels against their references.</summary>
public static class ElementwiseCases
{
    /// <summary>GPU sizes fill the H100 (64 Mi elements = 256 MiB per float tensor); CPU sizes keep the check quick.</summary>
    internal static int Elements(ComputeDevice d) => d.IsCuda ? 1 << 26 : 1 << 16;

    internal static float[] Random(Random rng, int n, double scale = 1) =>
        Enumerable.Range(0, n).Select(_ => (float)((rng.NextDouble() * 2 - 1) * scale)).ToArray();

    internal static double[] Wide(float[] x) => Array.ConvertAll(x, v => (double)v);

    public static IEnumerable<KernelCase> All()
    {
        yield return new KernelCase("elementwise", "add", 1e-7, (d, rng) =>
        {
            int n = Elements(d);
            var set = new TensorSet();
            float[] ha = Random(rng, n), hb = Random(rng, n);
            var a = set.Add(Tensor.FromHost(d, ha, new Shape(n), MemoryCategory.Data, "a"));
            var b = set.Add(Tensor.FromHost(d, hb, new Shape(n), MemoryCategory.Data, "b"));
            var y = set.Add(Tensor.Empty(d, new Shape(n), DType.F32, MemoryCategory.Activations, "y"));
            return new PreparedCase(() => Elementwise.Add(a, b, y),
                () => KernelCheckRunner.RelativeError(y.ToFloatArray(), Elementwise.Reference.Add(Wide(ha), Wide(hb))),
                3L * n * 4, n, set, $"n={n}");
        });
        yield return new KernelCase("elementwise", "scale", 1e-7, (d, rng) =>
        {
            int n = Elements(d);
            var set = new TensorSet();
            float[] hx = Random(rng, n);
            var x = set.Add(Tensor.FromHost(d, hx, new Shape(n), MemoryCategory.Data, "x"));
            var y = set.Add(Tensor.Empty(d, new Shape(n), DType.F32, MemoryCategory.Activations, "y"));
            return new PreparedCase(() => Elementwise.Scale(x, 0.125f, y),
                () => KernelCheckRunner.RelativeError(y.ToFloatArray(), Elementwise.Reference.Scale(Wide(hx), 0.125)),
                2L * n * 4, n, set, $"n={n}");
        });
        yield return new KernelCase("gelu", "forward", 1e-6, (d, rng) =>
        {
            int n = Elements(d);
            var set = new TensorSet();
            float[] hx = Random(rng, n, 5);
            var x = set.Add(Tensor.FromHost(d, hx, new Shape(n), MemoryCategory.Data, "x"));
            var y = set.Add(Tensor.Empty(d, new Shape(n), DType.F32, MemoryCategory.Activations, "y"));
            return new PreparedCase(() => Gelu.Forward(x, y),
                () => KernelCheckRunner.RelativeError(y.ToFloatArray(), Gelu.Reference.Forward(Wide(hx))),
                2L * n * 4, 20.0 * n, set, $"n={n}");
        });
        yield return new KernelCase("convert", "f32_to_bf16", 0, (d, rng) =>
        {
            int n = Elements(d);
            var set = new TensorSet();
            float[] hx = Random(rng, n, 1000);
            var x = set.Add(Tensor.FromHost(d, hx, new Shape(n), MemoryCategory.Data, "x"));
            var y = set.Add(Tensor.Empty(d, new Shape(n), DType.BF16, MemoryCategory.Activations, "y"));
            return new PreparedCase(() => Conv.ToBf16(x, y),
                () =>
                {
                    var got = y.ToBf16Array();
                    int mismatches = 0;
                    for (int i = 0; i < n; i++) if (got[i] != Conv.Reference.ToBf16(hx[i])) mismatches++;
                    return mismatches;   // bit-exact: any mismatch fails
                },
                6L * n, 0, set, $"n={n}");
        });
    }
}
