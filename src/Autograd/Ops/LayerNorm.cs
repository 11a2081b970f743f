using Memopt.Kernels;
using Memopt.Tensors;

namespace Memopt.Autograd;

public static partial class Ops
{
    /// <summary>
    /// y = LayerNorm(x)·weight + bias over the last dimension. Keeps x, weight and the per-row mean and rstd
    /// (2·rows floats) for backward; the normalized x̂ is recomputed there rather than stored.
    /// </summary>
    public static Var LayerNorm(Var x, Var weight, Var bias, float eps = Memopt.Kernels.LayerNorm.DefaultEps, string op = "layernorm")
    {
        Memopt.Kernels.LayerNorm.CheckArguments(x.Value, weight.Value, bias.Value, eps);
        var y = NewOutput(x, x.Shape, op);
        using var mean = Stats(x, op + ".mean");
        using var rstd = Stats(x, op + ".rstd");
        Memopt.Kernels.LayerNorm.Forward(x.Value, weight.Value, bias.Value, y.Value, mean, rstd, eps);
        RecordLayerNorm(op, x, weight, bias, y, mean, rstd);
        return y;
    }

    /// <summary>
    /// Residual add then LayerNorm: s = a + b, y = LayerNorm(s)·weight + bias, computed by one kernel where it can
    /// (<see cref="Memopt.Kernels.LayerNorm.ForwardResidual"/>) and recorded as the two ops it replaces, so backward, the saved
    /// tensors and every buffer are those of <see cref="Add"/> then <see cref="LayerNorm"/>. Returns both: s is the
    /// residual stream the next residual adds to (pre-norm) or what backward keeps (post-norm).
    /// </summary>
    public static (Var Sum, Var Normed) AddLayerNorm(Var a, Var b, Var weight, Var bias, float eps = Memopt.Kernels.LayerNorm.DefaultEps,
        string addOp = "add", string op = "layernorm")
    {
        Check.SameDType(addOp, a.Value, b.Value, "a", "b");
        var s = NewOutput(a, a.Shape, addOp);
        Memopt.Kernels.LayerNorm.CheckArguments(s.Value, weight.Value, bias.Value, eps);
        var y = NewOutput(s, s.Shape, op);
        using var mean = Stats(s, op + ".mean");
        using var rstd = Stats(s, op + ".rstd");
        Memopt.Kernels.LayerNorm.ForwardResidual(a.Value, b.Value, s.Value, weight.Value, bias.Value, y.Value, mean, rstd, eps);
        RecordAdd(addOp, a, b, s);
        RecordLayerNorm(op, s, weight, bias, y, mean, rstd);
        return (s, y);
    }

    private static Tensor Stats(Var x, string name) =>
        Tensor.Empty(x.Device, Memopt.Kernels.LayerNorm.StatsShape(x.Shape), DType.F32, MemoryCategory.Activations, name);

    /// <summary>Keeps x, weight and the per-row mean and rstd (2·rows floats) for backward; x̂ is recomputed there.</summary>
    private static void RecordLayerNorm(string op, Var x, Var weight, Var bias, Var y, Tensor mean, Tensor rstd) =>
        Tape.Record(op, y, [x, weight, bias], [x.Value, weight.Value, mean, rstd], (dy, saved) =>
            Memopt.Kernels.LayerNorm.Backward(saved[0], saved[1], saved[2], saved[3], dy,
                x.RequiresGrad ? x.GradBuffer(op) : null,
                weight.RequiresGrad ? weight.GradBuffer(op) : null,
                bias.RequiresGrad ? bias.GradBuffer(op) : null));
}
