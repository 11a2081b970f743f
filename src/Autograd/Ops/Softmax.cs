using Memopt.Tensors;

namespace Memopt.Autograd;

public static partial class Ops
{
    /// <summary>
    /// Attention probabilities: causal softmax of scale·scores over the last dimension of [..., T, T], optionally
    /// limited to a sliding window of <paramref name="window"/> keys (see <see cref="Kernels.Softmax"/>). The output
    /// is tracked as attention scores; backward needs only it (the scores themselves are not kept).
    /// </summary>
    public static Var CausalSoftmax(Var scores, float scale = 1f, int? window = null, string op = "causal_softmax")
    {
        Kernels.Softmax.CheckArguments(op, scores.Value, scale, window);
        var y = NewOutput(scores, scores.Shape, op, MemoryCategory.AttentionScores);
        Kernels.Softmax.Forward(scores.Value, y.Value, scale, window);
        Tape.Record(op, y, [scores], [y.Value], (dy, saved) =>
            Kernels.Softmax.Backward(saved[0], dy, scores.GradBuffer(op), scale, window));
        return y;
    }
}
