using ILGPU;
using ILGPU.Algorithms;
using ILGPU.Algorithms.ScanReduceOperations;
using ILGPU.Runtime;
using Memopt.Tensors;

namespace Memopt.Kernels;

/// <summary>
/// Causal softmax of attention scores [..., T, T] (row i = query i, column j = key j) with an optional sliding
/// window W and a scale s (attention's 1/√d) applied to the scores first:
///   query i sees keys j with i − W &lt; j ≤ i (W ≥ T, or no window, is plain causal; flash-attn's window_size=(W−1, 0)),
///   y[i, j] = exp(s·(x[i, j] − m_i)) / Σ_visible exp(s·(x[i, k] − m_i)) with m_i the row's visible maximum (s &gt; 0,
///   so this is the usual max-subtracted, overflow-free form); masked entries are exactly 0.
/// Forward: a max and a sum over the visible span only, then one pass that writes the whole row (exp recomputed
/// from x rather than re-read from y). Each column is read and then written by the same thread, so y may be the same
/// tensor as x (in place).
/// Backward from the probabilities alone (x is not needed): dx += s·y ⊙ (dy − Σ_j dy·y) on visible entries; masked
/// entries of dx are left untouched (their gradient is 0).
/// Two forms of each (<see cref="KernelPath"/>): cooperative, one group per row with group reductions (CUDA), and
/// portable, one thread per row walking it serially with the same math and no barriers (the CPU accelerator).
/// x, y, dy and dx may each be float32 or bfloat16 (<see cref="FloatView"/>): max, exp and sums are float32, a bf16
/// probability is rounded once when stored (and backward then uses those stored probabilities, as PyTorch's bf16 does).
/// </summary>
public static class Softmax
{
    /// <summary>Checks scores [..., T, T] (float32 or bf16), the scale and the window; names the op and the shapes on failure.</summary>
    public static void CheckArguments(string op, Tensor x, float scale, int? window)
    {
        Check.Float(op, x);
        var s = x.Shape;
        Check.That(s.Rank >= 2 && s[-1] == s[-2], op, $"scores {s} must be [..., T, T] (square in the last two dimensions)");
        Check.That(scale > 0f && float.IsFinite(scale), op, $"scale = {scale} must be positive and finite (scores {s})");
        Check.That(window is null || window >= 1, op, $"window = {window} must be ≥ 1 (scores {s})");
        Check.That(s.Rows <= int.MaxValue, op, $"scores {s} have more than 2^31-1 rows");
    }

    /// <summary>The number of visible keys per query the kernels use: W capped at T (no window = T).</summary>
    private static int EffectiveWindow(Shape s, int? window) => window is int w && w < s.Last ? w : s.Last;

    /// <summary>y = causal_softmax(scale·x) with an optional sliding window; y may be x.</summary>
    public static void Forward(Tensor x, Tensor y, float scale = 1f, int? window = null)
    {
        const string op = "causal_softmax";
        CheckArguments(op, x, scale, window);
        Elementwise.CheckPair(op, x, y);
        var device = x.Device;
        int t = x.Shape.Last, rows = (int)x.Shape.Rows, w = EffectiveWindow(x.Shape, window);
        if (Launch.Cooperative(device))
        {
            var k = device.Kernel("softmax.causal_fwd", acc => acc.LoadStreamKernel<FloatView, FloatView, int, int, float>(ForwardKernel));
            k(Launch.Row(device, rows, t), FloatView.Of(x), FloatView.Of(y), t, w, scale);
            return;
        }
        var serial = device.Kernel("softmax.causal_fwd_thread_per_row", acc => acc.LoadStreamKernel<FloatView, FloatView, int, int, int, float>(ForwardRowKernel));
        serial(Launch.ThreadPerRow(device, rows), FloatView.Of(x), FloatView.Of(y), rows, t, w, scale);
    }

    /// <summary>dx += scale·y ⊙ (dy − Σ_j dy·y) on the visible entries; y is the forward's output.</summary>
    public static void Backward(Tensor y, Tensor dy, Tensor dx, float scale = 1f, int? window = null)
    {
        const string op = "causal_softmax_backward";
        CheckArguments(op, y, scale, window);
        Elementwise.CheckTriple(op, y, dy, dx);
        var device = y.Device;
        int t = y.Shape.Last, rows = (int)y.Shape.Rows, w = EffectiveWindow(y.Shape, window);
        if (Launch.Cooperative(device))
        {
            var k = device.Kernel("softmax.causal_bwd", acc => acc.LoadStreamKernel<FloatView, FloatView, FloatView, int, int, float>(BackwardKernel));
            k(Launch.Row(device, rows, t), FloatView.Of(y), FloatView.Of(dy), FloatView.Of(dx), t, w, scale);
            return;
        }
        var serial = device.Kernel("softmax.causal_bwd_thread_per_row", acc => acc.LoadStreamKernel<FloatView, FloatView, FloatView, int, int, int, float>(BackwardRowKernel));
        serial(Launch.ThreadPerRow(device, rows), FloatView.Of(y), FloatView.Of(dy), FloatView.Of(dx), rows, t, w, scale);
    }

    private static void ForwardKernel(FloatView x, FloatView y, int t, int window, float scale)
    {
        int row = Grid.IdxX;
        int tid = Group.IdxX;
        int threads = Group.DimX;
        long start = (long)row * t;
        int query = row % t;
        int first = Math.Max(0, query - window + 1); // visible keys: first..query

        float max = float.MinValue;
        for (int j = first + tid; j <= query; j += threads) max = MathF.Max(max, x.Load(start + j));
        max = GroupExtensions.AllReduce<float, MaxFloat>(max);

        float sum = 0f;
        for (int j = first + tid; j <= query; j += threads) sum += MathF.Exp(scale * (x.Load(start + j) - max));
        float inv = 1f / GroupExtensions.AllReduce<float, AddFloat>(sum);

        // Every thread has finished reading x for the reductions (the sum's result needs all of them), and in this
        // pass each column is read and then written by one thread only: so y may alias x.
        for (int j = tid; j < t; j += threads)
        {
            float v = 0f;
            if (j >= first && j <= query) v = MathF.Exp(scale * (x.Load(start + j) - max)) * inv;
            y.Store(start + j, v);
        }
    }

    private static void BackwardKernel(FloatView y, FloatView dy, FloatView dx, int t, int window, float scale)
    {
        int row = Grid.IdxX;
        int tid = Group.IdxX;
        int threads = Group.DimX;
        long start = (long)row * t;
        int query = row % t;
        int first = Math.Max(0, query - window + 1);

        float dot = 0f;
        for (int j = first + tid; j <= query; j += threads) dot += dy.Load(start + j) * y.Load(start + j);
        dot = GroupExtensions.AllReduce<float, AddFloat>(dot);

        for (int j = first + tid; j <= query; j += threads)
            dx.Add(start + j, scale * y.Load(start + j) * (dy.Load(start + j) - dot));
    }

    /// <summary>
    /// The portable kernels sum serially in blocks of this many elements (a partial per block, then the partials):
    /// float32 error grows like (SumBlock + T/SumBlock)·u rather than T·u, about what the cooperative form's
    /// per-thread strides followed by a tree give.
    /// </summary>
    private const int SumBlock = 32;

    /// <summary>The portable forward: thread per row, grid-stride over rows; max, sum, write, as the cooperative one.</summary>
    private static void ForwardRowKernel(FloatView x, FloatView y, int rows, int t, int window, float scale)
    {
        int stride = Grid.DimX * Group.DimX;
        for (int row = Grid.GlobalIndex.X; row < rows; row += stride)
        {
            long start = (long)row * t;
            int query = row % t;
            int first = Math.Max(0, query - window + 1);

            float max = float.MinValue;
            for (int j = first; j <= query; j++) max = MathF.Max(max, x.Load(start + j));
            float sum = 0f;
            for (int j0 = first; j0 <= query; j0 += SumBlock)
            {
                int end = Math.Min(query + 1, j0 + SumBlock);
                float part = 0f;
                for (int j = j0; j < end; j++) part += MathF.Exp(scale * (x.Load(start + j) - max));
                sum += part;
            }
            float inv = 1f / sum;

            for (int j = 0; j < first; j++) y.Store(start + j, 0f);
            for (int j = first; j <= query; j++) y.Store(start + j, MathF.Exp(scale * (x.Load(start + j) - max)) * inv);
            for (int j = query + 1; j < t; j++) y.Store(start + j, 0f);
        }
    }

    /// <summary>The portable backward: thread per row, the dot product then the visible entries' update.</summary>
    private static void BackwardRowKernel(FloatView y, FloatView dy, FloatView dx, int rows, int t, int window, float scale)
    {
        int stride = Grid.DimX * Group.DimX;
        for (int row = Grid.GlobalIndex.X; row < rows; row += stride)
        {
            long start = (long)row * t;
            int query = row % t;
            int first = Math.Max(0, query - window + 1);
            float dot = 0f;
            for (int j0 = first; j0 <= query; j0 += SumBlock)
            {
                int end = Math.Min(query + 1, j0 + SumBlock);
                float part = 0f;
                for (int j = j0; j < end; j++) part += dy.Load(start + j) * y.Load(start + j);
                dot += part;
            }
            for (int j = first; j <= query; j++) dx.Add(start + j, scale * y.Load(start + j) * (dy.Load(start + j) - dot));
        }
    }

    /// <summary>Float64 reference (the definition: −∞ on masked scores, then a plain softmax).</summary>
    public static class Reference
    {
        public static double[] Forward(double[] x, int t, double scale = 1.0, int? window = null)
        {
            int w = window ?? t;
            var y = new double[x.Length];
            for (int start = 0; start < x.Length; start += t)
            {
                int i = start / t % t;
                double max = double.NegativeInfinity;
                for (int j = 0; j < t; j++) if (Visible(i, j, w)) max = Math.Max(max, scale * x[start + j]);
                double sum = 0;
                for (int j = 0; j < t; j++) if (Visible(i, j, w)) sum += Math.Exp(scale * x[start + j] - max);
                for (int j = 0; j < t; j++) y[start + j] = Visible(i, j, w) ? Math.Exp(scale * x[start + j] - max) / sum : 0.0;
            }
            return y;
        }

        public static bool Visible(int query, int key, int window) => key <= query && key > query - window;
    }
}
