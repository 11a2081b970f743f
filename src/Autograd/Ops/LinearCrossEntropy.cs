using Memopt.Kernels;
using Memopt.Tensors;

namespace Memopt.Autograd;

public static partial class Ops
{
    /// <summary>Logits row stride of the fused head: the vocabulary rounded up to 8 elements, so that every row of a
    /// bf16 logits gradient starts on a 16-byte boundary and the tensor-core GEMMs load it with cp.async (at V = 50257
    /// the unpadded rows sent the LM head's two backward GEMMs to the scalar-load path, at 90–140 TFLOP/s).</summary>
    public static int HeadStride(int vocab) => (vocab + 7) / 8 * 8;

    /// <summary>
    /// The LM head and the mean cross-entropy fused and chunked over rows (Liger's "fused linear cross-entropy"):
    ///   loss = mean over counted rows r of CE(x_r·Wᵀ + b, t_r)            (ignore index and label smoothing as <see cref="CrossEntropy(Var, Tensor, int, float)"/>)
    /// x [..., d], W [V, d], b [V] or none, targets int32 with x's leading shape; returns the scalar loss [1].
    /// The N×V logits never exist: the rows go through in chunks of <paramref name="chunkRows"/>; per chunk one GEMM
    /// (the bias added in its epilogue) writes the logits [chunk, HeadStride(V)] into a buffer reused by every chunk (bf16 when x and W are bf16, as the
    /// unfused head under --bf16 and PyTorch's autocast have them, else float32), one kernel turns them into row
    /// losses and, when a gradient is wanted, in place into G = (softmax − smoothed one-hot)/count, and the gradient
    /// GEMMs run right there:
    ///   dx_chunk = G·W,   dW += Gᵀ·x_chunk,   db += Σ_rows G.
    /// Those are d(loss)/d(input) for an upstream gradient of 1; backward adds dloss·(each) into the inputs'
    /// gradients. So the op saves dx [N, d], dW [V, d] and db (float32) instead of the logits, and the backward is
    /// three scaled adds. Memory in flight: one chunk of logits (2 or 4 bytes × chunk × V) instead of the N×V logits
    /// and their N×V gradient; the GEMM FLOPs are the unfused head's, with no recompute.
    /// Mixed precision as <see cref="Linear"/>: a bf16 x reads W's bf16 copy; all softmax math is float32.
    /// </summary>
    public static Var LinearCrossEntropy(Var x, Var weight, Var? bias, Tensor targets, int chunkRows, int ignoreIndex = -100,
        float labelSmoothing = 0f, string op = "lm_head_ce")
    {
        var (vocab, d, rows) = CheckLinear(op, x, weight, bias);
        Check.That(targets.Numel == rows && targets.Shape.Dims.SequenceEqual(x.Shape.Dims.Take(x.Shape.Rank - 1)), op,
            $"targets {targets.Shape} must have the input's shape without its last axis (input {x.Shape})");
        Check.That(chunkRows >= 1, op, $"chunk rows {chunkRows} must be ≥ 1");
        Check.That(labelSmoothing >= 0f && labelSmoothing <= 1f, op, $"label smoothing {labelSmoothing} is not in [0, 1]");

        var w = GemmWeight(x, weight);
        bool needX = x.RequiresGrad, needW = weight.RequiresGrad, needB = bias is { RequiresGrad: true };
        bool grads = Tape.IsRecording && (needX || needW || needB);
        int stride = HeadStride(vocab), chunk = Math.Min(chunkRows, rows);
        var logitsType = x.Value.DType == DType.BF16 && w.DType == DType.BF16 ? DType.BF16 : DType.F32;
        var device = x.Device;

        var loss = NewOutput(x, new Shape(1), op, dtype: DType.F32);
        Tensor? dx = null, dw = null, db = null;
        try
        {
            int count = Kernels.CrossEntropy.CountTargets(targets, vocab, ignoreIndex);
            float invCount = count > 0 ? 1f / count : 0f;
            using var rowLoss = Tensor.Empty(device, new Shape(rows), DType.F32, MemoryCategory.Workspace, op + ":row_loss");
            if (grads)
            {
                if (needX) dx = Tensor.Empty(device, new Shape(rows, d), DType.F32, MemoryCategory.Activations, op + ":dx");
                if (needW) dw = Tensor.Empty(device, weight.Shape, DType.F32, MemoryCategory.Activations, op + ":dw");
                if (needB) db = Tensor.Zeros(device, new Shape(stride), DType.F32, MemoryCategory.Activations, op + ":db");
            }
            using (var logits = Tensor.Empty(device, new Shape(chunk, stride), logitsType, MemoryCategory.Workspace, op + ":logits"))
            {
                for (int r0 = 0; r0 < rows; r0 += chunk)
                {
                    int n = Math.Min(chunk, rows - r0);
                    var xs = new MatrixOperand(x.Value, (long)r0 * d, d, 0);
                    using var z = logits.View(new Shape(n, stride));
                    // The bias goes in with the GEMM's epilogue: the chunk kernel then streams the logits alone.
                    Kernels.MatMul.Gemm(xs, MatrixOperand.Dense(w, transposed: true), new MatrixOperand(z, 0, stride, 0), n, vocab, d, bias: bias?.Value);
                    using var t = targets.View(new Shape(n), r0);
                    using var l = rowLoss.View(new Shape(n), r0);
                    Kernels.CrossEntropy.Chunk(z, null, t, vocab, ignoreIndex, labelSmoothing, l, grads, invCount);
                    if (!grads) continue;
                    var gm = new MatrixOperand(z, 0, stride, 0); // now G

                    if (dx is not null) // dx rows [n, d] = G [n, V] · W [V, d]
                        Kernels.MatMul.Gemm(gm, MatrixOperand.Dense(w), new MatrixOperand(dx, (long)r0 * d, d, 0), n, d, vocab);
                    if (dw is not null) // dW [V, d] (+)= Gᵀ [V, n] · x rows [n, d]
                        Kernels.MatMul.Gemm(gm.AsTransposed(true), xs, MatrixOperand.Dense(dw), vocab, d, n, accumulate: r0 > 0);
                    if (db is not null) BiasAdd.Backward(z, db); // the padding columns of G are 0
                }
            }
            Kernels.CrossEntropy.Mean(rowLoss, count, loss.Value);
        }
        catch
        {
            dx?.Dispose(); dw?.Dispose(); db?.Dispose();
            loss.Dispose();
            throw;
        }
        if (!grads) return loss;

        Tensor[] saved = [.. new[] { dx, dw, db }.OfType<Tensor>()];
        Var[] inputs = bias is null ? [x, weight] : [x, weight, bias];
        Tape.Record(op, loss, inputs, saved, (dloss, kept) =>
        {
            int i = 0;
            if (needX) Elementwise.AddInto(kept[i++], x.GradBuffer(op), dloss);
            if (needW) Elementwise.AddInto(kept[i++], weight.GradBuffer(op), dloss);
            if (needB)
            {
                using var head = kept[i].View(new Shape(vocab));
                Elementwise.AddInto(head, bias!.GradBuffer(op), dloss);
            }
        });
        foreach (var s in saved) s.Dispose();
        return loss;
    }
}
