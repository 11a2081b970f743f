using Memopt.Kernels;

namespace Memopt.Autograd;

public static partial class Ops
{
    /// <summary>
    /// Inverted dropout with drop probability p. The mask is a function of (seed, offset, element index) through
    /// <see cref="CounterRng"/>, so no mask is stored: backward regenerates it, and calling again with the same
    /// seed and offset (a gradient-checkpointing recompute) replays it exactly. The caller picks a distinct offset
    /// per dropout site and step.
    /// p = 0 draws nothing and copies nothing: y shares x's memory, and backward passes dy straight through.
    /// </summary>
    public static Var Dropout(Var x, float p, ulong seed, ulong offset, string op = "dropout")
    {
        Kernels.Dropout.CheckProbability(p, x.Shape);
        if (p == 0f)
        {
            var same = new Var(x.Value.Share(), name: op);
            Tape.Record(op, same, [x], [], (dy, _) => Elementwise.AddInto(dy, x.GradBuffer(op), 1f));
            return same;
        }
        var y = NewOutput(x, x.Shape, op);
        Kernels.Dropout.Forward(x.Value, y.Value, p, seed, offset);
        Tape.Record(op, y, [x], [], (dy, _) => Kernels.Dropout.Backward(dy, x.GradBuffer(op), p, seed, offset));
        return y;
    }
}
