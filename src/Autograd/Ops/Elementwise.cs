using Memopt.Kernels;
using Memopt.Tensors;

namespace Memopt.Autograd;

public static partial class Ops
{
    /// <summary>Residual add: y = a + b; both gradients are dy.</summary>
    public static Var Add(Var a, Var b, string op = "add")
    {
        var y = NewOutput(a, a.Shape, op);
        Elementwise.Add(a.Value, b.Value, y.Value);
        Tape.Record(op, y, [a, b], [], (dy, _) =>
        {
            if (a.RequiresGrad) Elementwise.AddInto(dy, a.GradBuffer(op), 1f);
            if (b.RequiresGrad) Elementwise.AddInto(dy, b.GradBuffer(op), 1f);
        });
        return y;
    }

    /// <summary>y = s·x; dx = s·dy.</summary>
    public static Var Scale(Var x, float s, string op = "scale")
    {
        var y = NewOutput(x, x.Shape, op);
        Elementwise.Scale(x.Value, s, y.Value);
        Tape.Record(op, y, [x], [], (dy, _) => Elementwise.AddInto(dy, x.GradBuffer(op), s));
        return y;
    }

    /// <summary>y = GELU(x); keeps x for backward.</summary>
    public static Var Gelu(Var x, string op = "gelu")
    {
        var y = NewOutput(x, x.Shape, op);
        Kernels.Gelu.Forward(x.Value, y.Value);
        Tape.Record(op, y, [x], [x.Value], (dy, saved) => Kernels.Gelu.Backward(saved[0], dy, x.GradBuffer(op)));
        return y;
    }

    /// <summary>A fresh float32 activation on the same device as <paramref name="like"/>.</summary>
    internal static Var NewOutput(Var like, Shape shape, string op, MemoryCategory category = MemoryCategory.Activations) =>
        new(Tensor.Empty(like.Device, shape, DType.F32, category, op), name: op);
}
