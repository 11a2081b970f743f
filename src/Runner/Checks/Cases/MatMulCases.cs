using Memopt.Kernels;
using Memopt.Tensors;
using static Memopt.Runner.Checks.Cases.ElementwiseCases;

namespace Memopt.Runner.Checks.Cases;

/// <summary>GEMM at a square size and at the model's shapes, bias add and reductions.</summary>
public static class MatMulCases
{
    public static IEnumerable<KernelCase> All()
    {
        // 4096³ on the GPU (the classic GEMM benchmark), the rtx5090 QKV projection (B·T = 32·256 rows, C = 256 → 768),
        // and its MLP up-projection (256 → 1024). Small sizes on the CPU.
        yield return Gemm("matmul", "square", d => d.IsCuda ? (4096, 4096, 4096) : (96, 96, 96), false, true);
        yield return Gemm("matmul", "qkv_x_wT", d => d.IsCuda ? (8192, 768, 256) : (64, 48, 32), false, true);
        yield return Gemm("matmul", "mlp_x_wT", d => d.IsCuda ? (8192, 1024, 256) : (64, 64, 32), false, true);
        yield return Gemm("matmul", "dw_dyT_x", d => d.IsCuda ? (768, 256, 8192) : (48, 32, 64), true, false);
        // The same model shapes under --bf16: bf16 operands, bf16 activations out, the weight gradient into float32.
        yield return Gemm("matmul", "qkv_x_wT_bf16", d => d.IsCuda ? (8192, 768, 256) : (64, 48, 32), false, true, DType.BF16, DType.BF16);
        yield return Gemm("matmul", "mlp_x_wT_bf16", d => d.IsCuda ? (8192, 1024, 256) : (64, 64, 32), false, true, DType.BF16, DType.BF16);
        yield return Gemm("matmul", "dw_dyT_x_bf16", d => d.IsCuda ? (768, 256, 8192) : (48, 32, 64), true, false, DType.BF16, DType.F32);

        yield return new KernelCase("bias_add", "forward", 1e-7, (d, rng) =>
        {
            int rows = d.IsCuda ? 32768 : 256, cols = d.IsCuda ? 1024 : 64;
            var set = new TensorSet();
            float[] hx = Random(rng, rows * cols), hb = Random(rng, cols);
            var x = set.Add(Tensor.FromHost(d, hx, new Shape(rows, cols), MemoryCategory.Data, "x"));
            var b = set.Add(Tensor.FromHost(d, hb, new Shape(cols), MemoryCategory.Data, "b"));
            var y = set.Add(Tensor.Empty(d, new Shape(rows, cols), DType.F32, MemoryCategory.Activations, "y"));
            return new PreparedCase(() => BiasAdd.Forward(x, b, y),
                () => KernelCheckRunner.RelativeError(y.ToFloatArray(), BiasAdd.Reference.Forward(Wide(hx), Wide(hb))),
                2L * rows * cols * 4, (double)rows * cols, set, $"{rows}x{cols}");
        });
        yield return new KernelCase("bias_add", "backward", 1e-5, (d, rng) =>
        {
            int rows = d.IsCuda ? 32768 : 256, cols = d.IsCuda ? 1024 : 64;
            var set = new TensorSet();
            float[] hdy = Random(rng, rows * cols);
            var dy = set.Add(Tensor.FromHost(d, hdy, new Shape(rows, cols), MemoryCategory.Data, "dy"));
            var db = set.Add(Tensor.Zeros(d, new Shape(cols), DType.F32, MemoryCategory.Gradients, "db"));
            return new PreparedCase(() => BiasAdd.Backward(dy, db),
                () => { db.Zero(); BiasAdd.Backward(dy, db); return KernelCheckRunner.RelativeError(db.ToFloatArray(), BiasAdd.Reference.Backward(Wide(hdy), cols)); },
                (long)rows * cols * 4, (double)rows * cols, set, $"{rows}x{cols}");
        });
        yield return new KernelCase("reduce", "sum", 1e-6, (d, rng) =>
        {
            int n = Elements(d);
            var set = new TensorSet();
            float[] hx = Random(rng, n);
            var x = set.Add(Tensor.FromHost(d, hx, new Shape(n), MemoryCategory.Data, "x"));
            var y = set.Add(Tensor.Empty(d, new Shape(1), DType.F32, MemoryCategory.Activations, "y"));
            // Relative to Σ|x| rather than |Σx|, which cancels: the error a float32 sum can have.
            return new PreparedCase(() => Reduce.Sum(x, y),
                () => Math.Abs(y.ToFloatArray()[0] - Reduce.Reference.Sum(Wide(hx))) / hx.Sum(v => Math.Abs((double)v)),
                (long)n * 4, n, set, $"n={n}");
        });
    }

    /// <summary>
    /// A GEMM case. With bf16 operands the inputs are drawn bf16-representable, so the float64 reference sees the same
    /// values; a bf16 C adds one rounding (≤ 2^-8 of each element), hence its tolerance of 4e-3.
    /// </summary>
    private static KernelCase Gemm(string family, string name, Func<ComputeDevice, (int M, int N, int K)> size, bool transA, bool transB,
        DType operands = DType.F32, DType output = DType.F32) =>
        new(family, name, output == DType.BF16 ? 4e-3 : 1e-5, (d, rng) =>
        {
            var (m, n, k) = size(d);
            var set = new TensorSet();
            float[] ha = Random(rng, m * k), hb = Random(rng, k * n);
            if (operands == DType.BF16)
            {
                ha = Array.ConvertAll(ha, BFloat16.Round);
                hb = Array.ConvertAll(hb, BFloat16.Round);
            }
            var a = set.Add(Tensor.FromHost(d, ha, transA ? new Shape(k, m) : new Shape(m, k), MemoryCategory.Data, "a", operands));
            var b = set.Add(Tensor.FromHost(d, hb, transB ? new Shape(n, k) : new Shape(k, n), MemoryCategory.Data, "b", operands));
            var c = set.Add(Tensor.Empty(d, new Shape(m, n), output, MemoryCategory.Activations, "c"));
            return new PreparedCase(() => MatMul.Forward(a, b, c, transA, transB),
                () => SampledGemmError(c.ToFloatArray(), ha, hb, m, n, k, transA, transB, rng),
                (long)operands.SizeOf() * (m * k + k * n) + (long)output.SizeOf() * m * n, 2.0 * m * n * k, set,
                $"{m}x{n}x{k}{(transA ? " Aᵀ" : "")}{(transB ? " Bᵀ" : "")}{(operands == DType.BF16 ? $" bf16→{output.Name()}" : "")}");
        });

    /// <summary>Compares 4096 random entries against float64 dot products: a full float64 reference of 4096³ would take minutes.</summary>
    private static double SampledGemmError(float[] c, float[] a, float[] b, int m, int n, int k, bool transA, bool transB, Random rng)
    {
        int samples = Math.Min(4096, m * n);
        var got = new float[samples];
        var want = new double[samples];
        for (int s = 0; s < samples; s++)
        {
            int i = rng.Next(m), j = rng.Next(n);
            double sum = 0;
            for (int p = 0; p < k; p++)
                sum += (double)a[transA ? p * m + i : i * k + p] * b[transB ? j * k + p : p * n + j];
            got[s] = c[(long)i * n + j];
            want[s] = sum;
        }
        return KernelCheckRunner.RelativeError(got, want);
    }
}
