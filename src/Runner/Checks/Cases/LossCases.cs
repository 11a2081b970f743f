using Memopt.Kernels;
using Memopt.Tensors;
using static Memopt.Runner.Checks.Cases.ElementwiseCases;

namespace Memopt.Runner.Checks.Cases;

/// <summary>Fused cross-entropy (and one chunk of the fused LM head), the Adam update and the global gradient norm.</summary>
public static class LossCases
{
    public static IEnumerable<KernelCase> All()
    {
        yield return new KernelCase("cross_entropy", "forward", 1e-5, (d, rng) =>
        {
            // rtx5090's vocabulary; 2048 rows on the GPU keeps the float64 reference to a few seconds.
            int rows = d.IsCuda ? 2048 : 32, vocab = d.IsCuda ? 50257 : 1000;
            var set = new TensorSet();
            float[] hl = Random(rng, rows * vocab, 4);
            int[] ht = Enumerable.Range(0, rows).Select(_ => rng.Next(vocab)).ToArray();
            var logits = set.Add(Tensor.FromHost(d, hl, new Shape(rows, vocab), MemoryCategory.Data, "logits"));
            var targets = set.Add(Tensor.FromHost(d, ht, new Shape(rows), MemoryCategory.Data, "targets"));
            var lse = set.Add(Tensor.Empty(d, new Shape(rows), DType.F32, MemoryCategory.Workspace, "lse"));
            var loss = set.Add(Tensor.Empty(d, new Shape(1), DType.F32, MemoryCategory.Activations, "loss"));
            return new PreparedCase(() => CrossEntropy.Forward(logits, targets, -100, 0f, lse, loss),
                () => Math.Abs(loss.ToFloatArray()[0] - CrossEntropy.Reference.Forward(Wide(hl), ht, vocab, -100, 0, out _)) /
                      Math.Abs(CrossEntropy.Reference.Forward(Wide(hl), ht, vocab, -100, 0, out _)),
                (long)rows * vocab * 4, 4.0 * rows * vocab, set, $"{rows}x{vocab}");
        });
        foreach (var dtype in new[] { DType.BF16, DType.F32 })
            yield return new KernelCase("cross_entropy", dtype == DType.BF16 ? "chunk_bf16" : "chunk_f32", 1e-5, (d, rng) =>
            {
                // One chunk of the fused head (--fused-head) as it runs: bf16 (--bf16) or float32 logits with rows padded
                // to 8, a float32 bias added on load, row losses, and the gradient written over the logits (timed; the
                // row losses checked).
                int rows = d.IsCuda ? 2048 : 32, vocab = d.IsCuda ? 50257 : 1000, stride = Memopt.Autograd.Ops.HeadStride(vocab);
                var set = new TensorSet();
                var values = new float[rows * stride];
                var z = new double[rows * vocab];
                float[] hb = Random(rng, vocab, 1);
                for (int r = 0; r < rows; r++)
                    for (int j = 0; j < vocab; j++)
                    {
                        float x = (float)(rng.NextDouble() * 8 - 4);
                        values[r * stride + j] = dtype == DType.BF16 ? BFloat16.Round(x) : x;
                        z[r * vocab + j] = values[r * stride + j] + hb[j];
                    }
                int[] ht = Enumerable.Range(0, rows).Select(_ => rng.Next(vocab)).ToArray();
                var logits = set.Add(Tensor.FromHost(d, values, new Shape(rows, stride), MemoryCategory.Data, "logits", dtype));
                var bias = set.Add(Tensor.FromHost(d, hb, new Shape(vocab), MemoryCategory.Parameters, "bias"));
                var targets = set.Add(Tensor.FromHost(d, ht, new Shape(rows), MemoryCategory.Data, "targets"));
                var rowLoss = set.Add(Tensor.Empty(d, new Shape(rows), DType.F32, MemoryCategory.Workspace, "row loss"));
                return new PreparedCase(() => CrossEntropy.Chunk(logits, bias, targets, vocab, -100, 0f, rowLoss, gradient: true, 1f / rows),
                    () =>
                    {
                        logits.CopyFrom(values);
                        CrossEntropy.Chunk(logits, bias, targets, vocab, -100, 0f, rowLoss, gradient: true, 1f / rows);
                        var want = Enumerable.Range(0, rows).Select(r =>
                            CrossEntropy.Reference.Forward(z[(r * vocab)..((r + 1) * vocab)], [ht[r]], vocab, -100, 0, out _)).ToArray();
                        return KernelCheckRunner.RelativeError(rowLoss.ToFloatArray(), want);
                    },
                    3L * rows * stride * dtype.SizeOf(), 4.0 * rows * vocab, set, $"{rows}x{vocab}");
            });
        yield return new KernelCase("adamw", "update", 1e-6, (d, rng) =>
        {
            int n = Elements(d);
            var set = new TensorSet();
            float[] hp = Random(rng, n), hg = Random(rng, n);
            var p = set.Add(Tensor.FromHost(d, hp, new Shape(n), MemoryCategory.Parameters, "p"));
            var g = set.Add(Tensor.FromHost(d, hg, new Shape(n), MemoryCategory.Gradients, "g"));
            var m = set.Add(Tensor.Zeros(d, new Shape(n), DType.F32, MemoryCategory.OptimizerState, "m"));
            var v = set.Add(Tensor.Zeros(d, new Shape(n), DType.F32, MemoryCategory.OptimizerState, "v"));
            var c = AdamW.Coefficients.For(1, 1e-3f, 0.9f, 0.999f, 1e-8f, 0.01f, decoupled: true);
            return new PreparedCase(() => AdamW.Update(p, g, m, v, c),
                () =>
                {
                    p.CopyFrom(hp); m.Zero(); v.Zero();
                    AdamW.Update(p, g, m, v, c);
                    double[] rp = Wide(hp), rm = new double[n], rv = new double[n];
                    AdamW.Reference.Step(rp, Wide(hg), rm, rv, 1, 1e-3, 0.9, 0.999, 1e-8, 0.01, true);
                    return KernelCheckRunner.RelativeError(p.ToFloatArray(), rp);
                },
                7L * n * 4, 15.0 * n, set, $"n={n}");
        });
        yield return new KernelCase("grad_norm", "global", 1e-5, (d, rng) =>
        {
            var set = new TensorSet();
            int[] sizes = d.IsCuda ? [1 << 24, 768 * 256, 1024, 3] : [4096, 300, 7];
            var hosts = sizes.Select(s => Random(rng, s)).ToArray();
            var tensors = hosts.Select((h, i) => set.Add(Tensor.FromHost(d, h, new Shape(h.Length), MemoryCategory.Gradients, $"g{i}"))).ToList();
            float norm = 0;
            return new PreparedCase(() => norm = GradNorm.Global(tensors),
                () => Math.Abs(norm - GradNorm.Reference.Global(hosts.Select(Wide))) / GradNorm.Reference.Global(hosts.Select(Wide)),
                sizes.Sum(s => 4L * s), 2.0 * sizes.Sum(), set, $"{sizes.Length} tensors, {sizes.Sum()} values");
        });
    }
}
