using Memopt.Tensors;

namespace Memopt.Autograd;

public static partial class Ops
{
    /// <summary>
    /// Mean cross-entropy of softmax(logits) against integer targets (PyTorch's F.cross_entropy with reduction
    /// "mean", ignore_index and label_smoothing). logits [..., V] float32 or bf16 (the loss is float32 either way), targets [...] int32 (the logits' shape
    /// without the class axis). Returns a scalar [1]. Rows whose target is <paramref name="ignoreIndex"/> do not
    /// count; when every row is ignored the loss is 0 and the logits' gradient is 0 (PyTorch returns NaN there).
    /// A target outside [0, V) that is not the ignore index throws <see cref="Kernels.ShapeException"/> here, at the op.
    /// Saves only the logits, the targets and the per-row log-sum-exp (float32 [rows]); backward writes
    /// (softmax − smoothed one-hot)·dloss/count straight into the logits' gradient.
    /// </summary>
    public static Var CrossEntropy(Var logits, Tensor targets, int ignoreIndex = -100, float labelSmoothing = 0f) =>
        CrossEntropy(logits, targets, out _, ignoreIndex, labelSmoothing);

    /// <summary>As above; <paramref name="count"/> is the number of rows that were not ignored (the mean's divisor).</summary>
    public static Var CrossEntropy(Var logits, Tensor targets, out int count, int ignoreIndex = -100, float labelSmoothing = 0f)
    {
        const string op = Kernels.CrossEntropy.Op;
        var rows = checked((int)logits.Shape.Rows);
        var loss = NewOutput(logits, new Shape(1), op, dtype: DType.F32);
        using var lse = Tensor.Empty(logits.Device, new Shape(rows), DType.F32, MemoryCategory.Activations, op + ":lse");
        int n;
        try
        {
            n = Kernels.CrossEntropy.Forward(logits.Value, targets, ignoreIndex, labelSmoothing, lse, loss.Value);
        }
        catch
        {
            loss.Dispose();
            throw;
        }
        Tape.Record(op, loss, [logits], [logits.Value, targets, lse], (dy, saved) =>
        {
            // Called even when n == 0, so the logits get their (zero) gradient like any other input.
            var grad = logits.GradBuffer(op);
            Kernels.CrossEntropy.Backward(saved[0], saved[1], saved[2], dy, n, ignoreIndex, labelSmoothing, grad);
        });
        count = n;
        return loss;
    }
}
