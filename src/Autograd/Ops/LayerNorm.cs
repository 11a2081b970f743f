using Memopt.Tensors;

namespace Memopt.Autograd;

public static partial class Ops
{
    /// <summary>
    /// y = LayerNorm(x)·weight + bias over the last dimension. Keeps x, weight and the per-row mean and rstd
    /// (2·rows floats) for backward; the normalized x̂ is recomputed there rather than stored.
    /// </summary>
    public static Var LayerNorm(Var x, Var weight, Var bias, float eps = Kernels.LayerNorm.DefaultEps, string op = "layernorm")
    {
        Kernels.LayerNorm.CheckArguments(x.Value, weight.Value, bias.Value, eps);
        var statsShape = Kernels.LayerNorm.StatsShape(x.Shape);
        var y = NewOutput(x, x.Shape, op);
        using var mean = Tensor.Empty(x.Device, statsShape, DType.F32, MemoryCategory.Activations, op + ".mean");
        using var rstd = Tensor.Empty(x.Device, statsShape, DType.F32, MemoryCategory.Activations, op + ".rstd");
        Kernels.LayerNorm.Forward(x.Value, weight.Value, bias.Value, y.Value, mean, rstd, eps);
        Tape.Record(op, y, [x, weight, bias], [x.Value, weight.Value, mean, rstd], (dy, saved) =>
            Kernels.LayerNorm.Backward(saved[0], saved[1], saved[2], saved[3], dy,
                x.RequiresGrad ? x.GradBuffer(op) : null,
                weight.RequiresGrad ? weight.GradBuffer(op) : null,
                bias.RequiresGrad ? bias.GradBuffer(op) : null));
        return y;
    }
}
