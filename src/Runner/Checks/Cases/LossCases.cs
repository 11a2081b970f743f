using Memopt.Kernels;
using Memopt.Tensors;
using static Memopt.Runner.Checks.Cases.ElementwiseCases;

namespace Memopt.Runner.Checks.Cases;

/// <summary>
/// Fused cross-entropy (and one chunk of the fused LM head), the Adam update (one tensor, and a model's 53 parameters in
/// multi-tensor launches) and the global gradient norm (and clipping's scale) over a model's gradients.
/// </summary>
public static class LossCases
{
    /// <summary>
    /// One parameter tensor of a model: its elements, whether it is a GEMM weight (a bf16 shadow under --bf16; weight
    /// decay), in TransformerLM's order.
    /// </summary>
    private sealed record ParameterShape(int Numel, bool GemmWeight);

    /// <summary>
    /// The rtx5090 preset's 53 parameter tensors (28,941,393 values: untied head with bias, sinusoidal positions) on the
    /// GPU; the same 53 tensors of a model 16x narrower and with a 500-token vocabulary on the CPU.
    /// </summary>
    private static ParameterShape[] ModelParameters(ComputeDevice d)
    {
        int vocab = d.IsCuda ? 50257 : 500, c = d.IsCuda ? 256 : 16, ff = 4 * c, layers = 4;
        var shapes = new List<ParameterShape> { new(vocab * c, false) };
        for (int l = 0; l < layers; l++)
            shapes.AddRange([new(c, false), new(c, false), new(3 * c * c, true), new(3 * c, false), new(c * c, true), new(c, false),
                             new(c, false), new(c, false), new(ff * c, true), new(ff, false), new(c * ff, true), new(c, false)]);
        shapes.AddRange([new(c, false), new(c, false), new(vocab * c, true), new(vocab, false)]);
        return shapes.ToArray();
    }

    /// <summary>Random gradients of <see cref="ModelParameters"/>, on the device (owned by <paramref name="set"/>) and on the host.</summary>
    private static (float[][] Hosts, List<Tensor> Tensors, long Numel) ModelGradients(ComputeDevice d, Random rng, TensorSet set)
    {
        var hosts = ModelParameters(d).Select(s => Random(rng, s.Numel)).ToArray();
        var tensors = hosts.Select((h, i) => set.Add(Tensor.FromHost(d, h, new Shape(h.Length), MemoryCategory.Gradients, $"g{i}"))).ToList();
        return (hosts, tensors, hosts.Sum(h => (long)h.Length));
    }

    /// <summary>Max over tensors of <see cref="KernelCheckRunner.RelativeError"/>.</summary>
    private static double WorstError(IEnumerable<(float[] Got, double[] Want)> pairs) =>
        pairs.Select(p => KernelCheckRunner.RelativeError(p.Got, p.Want)).DefaultIfEmpty(0).Max();

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
        yield return new KernelCase("adamw", "update_many", 1e-6, (d, rng) =>
        {
            // A whole model's step as the optimizer runs it: 53 tensors in ⌈53/16⌉ launches, the GEMM weights with bf16
            // shadows and weight decay, the rest without either. Error: the worst tensor's relative error against
            // float64, or infinity if a shadow is not the rounded parameter.
            var shapes = ModelParameters(d);
            var set = new TensorSet();
            var hp = shapes.Select(s => Random(rng, s.Numel)).ToArray();
            var hg = shapes.Select(s => Random(rng, s.Numel)).ToArray();
            var tensors = shapes.Select((s, i) => new AdamW.ParameterTensors(
                set.Add(Tensor.FromHost(d, hp[i], new Shape(s.Numel), MemoryCategory.Parameters, $"p{i}")),
                set.Add(Tensor.FromHost(d, hg[i], new Shape(s.Numel), MemoryCategory.Gradients, $"g{i}")),
                set.Add(Tensor.Zeros(d, new Shape(s.Numel), DType.F32, MemoryCategory.OptimizerState, $"m{i}")),
                set.Add(Tensor.Zeros(d, new Shape(s.Numel), DType.F32, MemoryCategory.OptimizerState, $"v{i}")),
                s.GemmWeight ? set.Add(Tensor.Zeros(d, new Shape(s.Numel), DType.BF16, MemoryCategory.Parameters, $"bf16:p{i}")) : null,
                Decay: s.GemmWeight, Name: $"p{i}")).ToArray();
            var decay = AdamW.Coefficients.For(1, 1e-3f, 0.9f, 0.999f, 1e-8f, 0.01f, decoupled: true);
            var noDecay = AdamW.Coefficients.For(1, 1e-3f, 0.9f, 0.999f, 1e-8f, 0f, decoupled: true);
            long numel = shapes.Sum(s => (long)s.Numel), shadowed = shapes.Where(s => s.GemmWeight).Sum(s => (long)s.Numel);
            return new PreparedCase(() => AdamW.UpdateMany(tensors, decay, noDecay),
                () =>
                {
                    for (int i = 0; i < tensors.Length; i++)
                    {
                        tensors[i].Param.CopyFrom(hp[i]);
                        tensors[i].M.Zero();
                        tensors[i].V.Zero();
                    }
                    AdamW.UpdateMany(tensors, decay, noDecay);
                    var pairs = new List<(float[], double[])>();
                    for (int i = 0; i < tensors.Length; i++)
                    {
                        double[] rp = Wide(hp[i]), rm = new double[hp[i].Length], rv = new double[hp[i].Length];
                        AdamW.Reference.Step(rp, Wide(hg[i]), rm, rv, 1, 1e-3, 0.9, 0.999, 1e-8, shapes[i].GemmWeight ? 0.01 : 0, true);
                        var p = tensors[i].Param.ToFloatArray();
                        if (tensors[i].Bf16Copy is { } copy && !copy.ToBf16Array().SequenceEqual(p.Select(BFloat16.FromFloat)))
                            return double.PositiveInfinity;
                        pairs.Add((p, rp));
                    }
                    return WorstError(pairs);
                },
                28L * numel + 2L * shadowed, 15.0 * numel, set, $"{shapes.Length} tensors, {numel} values");
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
        yield return new KernelCase("grad_norm", "model", 1e-5, (d, rng) =>
        {
            // A whole model's gradients, as clipping measures them: 4 partial launches of 16 tensors and the finish.
            var set = new TensorSet();
            var (hosts, tensors, numel) = ModelGradients(d, rng, set);
            float norm = 0;
            double want = GradNorm.Reference.Global(hosts.Select(Wide));
            return new PreparedCase(() => norm = GradNorm.Global(tensors), () => Math.Abs(norm - want) / want,
                4L * numel, 2.0 * numel, set, $"{tensors.Count} tensors, {numel} values");
        });
        yield return new KernelCase("grad_norm", "scale_model", 1e-7, (d, rng) =>
        {
            // Clipping's rescale of a whole model's gradients (x ← s·x in place, 4 launches of 16 tensors): one float32
            // multiply per element, so within half an ulp of float64.
            var set = new TensorSet();
            var (hosts, tensors, numel) = ModelGradients(d, rng, set);
            const float scale = 0.37f;
            return new PreparedCase(() => GradNorm.Scale(tensors, scale),
                () =>
                {
                    for (int i = 0; i < tensors.Count; i++) tensors[i].CopyFrom(hosts[i]);
                    GradNorm.Scale(tensors, scale);
                    return WorstError(tensors.Select((t, i) => (t.ToFloatArray(), Elementwise.Reference.Scale(Wide(hosts[i]), scale))));
                },
                8L * numel, numel, set, $"{tensors.Count} tensors, {numel} values");
        });
    }
}
