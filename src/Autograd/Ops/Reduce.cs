using Memopt.Kernels;
using Memopt.Tensors;

namespace Memopt.Autograd;

public static partial class Ops
{
    /// <summary>y = Σ x, shape [1], float32 whatever x's dtype (a reduction keeps float32); dx += dy (broadcast) in x's dtype.</summary>
    public static Var Sum(Var x, string op = "sum")
    {
        var y = NewOutput(x, new Shape(1), op, dtype: DType.F32);
        Reduce.Sum(x.Value, y.Value);
        Tape.Record(op, y, [x], [], (dy, _) => Reduce.BroadcastAdd(dy, x.GradBuffer(op), 1f));
        return y;
    }

    /// <summary>y = Σ x / n, shape [1], float32; dx += dy / n (broadcast) in x's dtype.</summary>
    public static Var Mean(Var x, string op = "mean")
    {
        var y = NewOutput(x, new Shape(1), op, dtype: DType.F32);
        Reduce.Mean(x.Value, y.Value);
        float scale = 1f / x.Value.Numel;
        Tape.Record(op, y, [x], [], (dy, _) => Reduce.BroadcastAdd(dy, x.GradBuffer(op), scale));
        return y;
    }
}
