using Memopt.Kernels;
using Memopt.Tensors;
using static Memopt.Runner.Checks.Cases.ElementwiseCases;

namespace Memopt.Runner.Checks.Cases;

/// <summary>LayerNorm, causal softmax, head permutes, embedding and dropout at the rtx5090 preset's shapes (batch 32).</summary>
public static class NormCases
{
    public static IEnumerable<KernelCase> All()
    {
        yield return new KernelCase("layernorm", "forward", 1e-5, (d, rng) =>
        {
            int rows = d.IsCuda ? 32 * 256 : 64, cols = d.IsCuda ? 256 : 48;
            var set = new TensorSet();
            float[] hx = Random(rng, rows * cols, 3), hw = Random(rng, cols), hb = Random(rng, cols);
            var x = set.Add(Tensor.FromHost(d, hx, new Shape(rows, cols), MemoryCategory.Data, "x"));
            var w = set.Add(Tensor.FromHost(d, hw, new Shape(cols), MemoryCategory.Data, "w"));
            var b = set.Add(Tensor.FromHost(d, hb, new Shape(cols), MemoryCategory.Data, "b"));
            var y = set.Add(Tensor.Empty(d, new Shape(rows, cols), DType.F32, MemoryCategory.Activations, "y"));
            var mean = set.Add(Tensor.Empty(d, new Shape(rows), DType.F32, MemoryCategory.Activations, "mean"));
            var rstd = set.Add(Tensor.Empty(d, new Shape(rows), DType.F32, MemoryCategory.Activations, "rstd"));
            return new PreparedCase(() => LayerNorm.Forward(x, w, b, y, mean, rstd),
                () => KernelCheckRunner.RelativeError(y.ToFloatArray(), LayerNorm.Reference.Forward(Wide(hx), Wide(hw), Wide(hb), cols)),
                2L * rows * cols * 4, 8.0 * rows * cols, set, $"{rows}x{cols}");
        });
        yield return new KernelCase("layernorm", "residual_forward", 1e-5, (d, rng) =>
        {
            int rows = d.IsCuda ? 32 * 256 : 64, cols = d.IsCuda ? 256 : 48;
            var set = new TensorSet();
            float[] ha = Random(rng, rows * cols, 3), hd = Random(rng, rows * cols), hw = Random(rng, cols), hb = Random(rng, cols);
            var a = set.Add(Tensor.FromHost(d, ha, new Shape(rows, cols), MemoryCategory.Data, "a"));
            var delta = set.Add(Tensor.FromHost(d, hd, new Shape(rows, cols), MemoryCategory.Data, "delta"));
            var w = set.Add(Tensor.FromHost(d, hw, new Shape(cols), MemoryCategory.Data, "w"));
            var b = set.Add(Tensor.FromHost(d, hb, new Shape(cols), MemoryCategory.Data, "b"));
            var sum = set.Add(Tensor.Empty(d, new Shape(rows, cols), DType.F32, MemoryCategory.Activations, "sum"));
            var y = set.Add(Tensor.Empty(d, new Shape(rows, cols), DType.F32, MemoryCategory.Activations, "y"));
            var mean = set.Add(Tensor.Empty(d, new Shape(rows), DType.F32, MemoryCategory.Activations, "mean"));
            var rstd = set.Add(Tensor.Empty(d, new Shape(rows), DType.F32, MemoryCategory.Activations, "rstd"));
            return new PreparedCase(() => LayerNorm.ForwardResidual(a, delta, sum, w, b, y, mean, rstd),
                () =>
                {
                    var want = Elementwise.Reference.Add(Wide(ha), Wide(hd));
                    return Math.Max(KernelCheckRunner.RelativeError(sum.ToFloatArray(), want),
                        KernelCheckRunner.RelativeError(y.ToFloatArray(), LayerNorm.Reference.Forward(want, Wide(hw), Wide(hb), cols)));
                },
                4L * rows * cols * 4, 9.0 * rows * cols, set, $"{rows}x{cols}");
        });
        yield return new KernelCase("layernorm", "backward", 1e-5, (d, rng) =>
        {
            int rows = d.IsCuda ? 32 * 256 : 64, cols = d.IsCuda ? 256 : 48;
            var set = new TensorSet();
            float[] hx = Random(rng, rows * cols, 3), hw = Random(rng, cols), hb = Random(rng, cols), hdy = Random(rng, rows * cols);
            var x = set.Add(Tensor.FromHost(d, hx, new Shape(rows, cols), MemoryCategory.Data, "x"));
            var w = set.Add(Tensor.FromHost(d, hw, new Shape(cols), MemoryCategory.Data, "w"));
            var b = set.Add(Tensor.FromHost(d, hb, new Shape(cols), MemoryCategory.Data, "b"));
            var dy = set.Add(Tensor.FromHost(d, hdy, new Shape(rows, cols), MemoryCategory.Data, "dy"));
            var y = set.Add(Tensor.Empty(d, new Shape(rows, cols), DType.F32, MemoryCategory.Activations, "y"));
            var mean = set.Add(Tensor.Empty(d, new Shape(rows), DType.F32, MemoryCategory.Activations, "mean"));
            var rstd = set.Add(Tensor.Empty(d, new Shape(rows), DType.F32, MemoryCategory.Activations, "rstd"));
            var dx = set.Add(Tensor.Zeros(d, new Shape(rows, cols), DType.F32, MemoryCategory.ActivationGradients, "dx"));
            var dw = set.Add(Tensor.Zeros(d, new Shape(cols), DType.F32, MemoryCategory.Gradients, "dw"));
            var db = set.Add(Tensor.Zeros(d, new Shape(cols), DType.F32, MemoryCategory.Gradients, "db"));
            LayerNorm.Forward(x, w, b, y, mean, rstd);
            return new PreparedCase(() => LayerNorm.Backward(x, w, mean, rstd, dy, dx, dw, db),
                () =>
                {
                    // The timed runs accumulated: once more from zero.
                    dx.Zero(); dw.Zero(); db.Zero();
                    LayerNorm.Backward(x, w, mean, rstd, dy, dx, dw, db);
                    var (wantDx, wantDw, wantDb) = LayerNorm.Reference.Backward(Wide(hx), Wide(hw), Wide(hdy), cols);
                    return Math.Max(KernelCheckRunner.RelativeError(dx.ToFloatArray(), wantDx),
                        Math.Max(KernelCheckRunner.RelativeError(dw.ToFloatArray(), wantDw), KernelCheckRunner.RelativeError(db.ToFloatArray(), wantDb)));
                },
                // dx: x, dy read, dx read and written; the parameter sums read x and dy again
                6L * rows * cols * 4, 16.0 * rows * cols, set, $"{rows}x{cols}");
        });
        foreach (int? window in new int?[] { null, 64 })
            yield return new KernelCase("softmax", window is null ? "causal" : $"window{window}", 1e-5, (d, rng) =>
            {
                int n = d.IsCuda ? 32 * 8 : 4, t = d.IsCuda ? 256 : 40;
                var set = new TensorSet();
                float[] hx = Random(rng, n * t * t, 4);
                var x = set.Add(Tensor.FromHost(d, hx, new Shape(n, t, t), MemoryCategory.Data, "scores"));
                var y = set.Add(Tensor.Empty(d, new Shape(n, t, t), DType.F32, MemoryCategory.AttentionScores, "probs"));
                return new PreparedCase(() => Softmax.Forward(x, y, 0.125f, window),
                    () => KernelCheckRunner.RelativeError(y.ToFloatArray(), Softmax.Reference.Forward(Wide(hx), t, 0.125, window)),
                    2L * n * t * t * 4, 5.0 * n * t * t / 2, set, $"{n}x{t}x{t}");
            });
        yield return new KernelCase("head_permute", "select_q", 0, (d, rng) =>
        {
            int b = d.IsCuda ? 32 : 2, t = d.IsCuda ? 256 : 16, heads = d.IsCuda ? 8 : 2, c = d.IsCuda ? 256 : 16;
            var set = new TensorSet();
            float[] hqkv = Random(rng, b * t * 3 * c);
            var qkv = set.Add(Tensor.FromHost(d, hqkv, new Shape(b, t, 3 * c), MemoryCategory.Data, "qkv"));
            var q = set.Add(Tensor.Empty(d, new Shape(b, heads, t, c / heads), DType.F32, MemoryCategory.Activations, "q"));
            return new PreparedCase(() => HeadPermute.Select(qkv, heads, 0, q),
                () => KernelCheckRunner.RelativeError(q.ToFloatArray(), HeadPermute.Reference.Select(Wide(hqkv), b, t, heads, 0)),
                2L * b * t * c * 4, 0, set, $"{b}x{t}x3x{c}, {heads} heads");
        });
        yield return new KernelCase("embedding", "forward", 0, (d, rng) =>
        {
            int rows = d.IsCuda ? 32 * 256 : 64, vocab = d.IsCuda ? 50257 : 300, cols = d.IsCuda ? 256 : 16;
            var set = new TensorSet();
            float[] htable = Random(rng, vocab * cols);
            int[] hids = Enumerable.Range(0, rows).Select(_ => rng.Next(vocab)).ToArray();
            var ids = set.Add(Tensor.FromHost(d, hids, new Shape(rows), MemoryCategory.Data, "ids"));
            var table = set.Add(Tensor.FromHost(d, htable, new Shape(vocab, cols), MemoryCategory.Parameters, "table"));
            var y = set.Add(Tensor.Empty(d, new Shape(rows, cols), DType.F32, MemoryCategory.Activations, "y"));
            return new PreparedCase(() => Embedding.Forward(ids, table, y),
                () => KernelCheckRunner.RelativeError(y.ToFloatArray(), Embedding.Reference.Forward(hids, Wide(htable), cols)),
                2L * rows * cols * 4, 0, set, $"{rows} ids, {vocab}x{cols}");
        });
        yield return new KernelCase("dropout", "forward", 1e-6, (d, rng) =>
        {
            int n = Elements(d);
            var set = new TensorSet();
            float[] hx = Random(rng, n);
            var x = set.Add(Tensor.FromHost(d, hx, new Shape(n), MemoryCategory.Data, "x"));
            var y = set.Add(Tensor.Empty(d, new Shape(n), DType.F32, MemoryCategory.Activations, "y"));
            return new PreparedCase(() => Dropout.Forward(x, y, 0.1f, 42, 7),
                () => KernelCheckRunner.RelativeError(y.ToFloatArray(), Dropout.Reference.Forward(Wide(hx), 0.1f, 42, 7)),
                2L * n * 4, n, set, $"n={n}, p=0.1");
        });
    }
}
