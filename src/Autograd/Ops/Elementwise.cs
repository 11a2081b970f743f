using Memopt.Kernels;
using Memopt.Tensors;

namespace Memopt.Autograd;

public static partial class Ops
{
    /// <summary>Residual add: y = a + b (a and b of one dtype, float32 or bf16; y too); both gradients are dy.</summary>
    public static Var Add(Var a, Var b, string op = "add")
    {
        Check.SameDType(op, a.Value, b.Value, "a", "b");
        var y = NewOutput(a, a.Shape, op);
        Elementwise.Add(a.Value, b.Value, y.Value);
        RecordAdd(op, a, b, y);
        return y;
    }

    private static void RecordAdd(string op, Var a, Var b, Var y) =>
        Tape.Record(op, y, [a, b], [], (dy, _) =>
        {
            if (a.RequiresGrad) Elementwise.AddInto(dy, a.GradBuffer(op), 1f);
            if (b.RequiresGrad) Elementwise.AddInto(dy, b.GradBuffer(op), 1f);
        });

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

    /// <summary>
    /// A fresh activation on the same device as <paramref name="like"/>, in <paramref name="like"/>'s dtype (so a
    /// bf16 activation gives bf16 outputs down the graph) unless <paramref name="dtype"/> says otherwise (a float32
    /// loss, a bf16 embedding read from a float32 table). Float dtypes only: an int32 <paramref name="like"/> is an error naming the op.
    /// </summary>
    internal static Var NewOutput(Var like, Shape shape, string op, MemoryCategory category = MemoryCategory.Activations, DType? dtype = null)
    {
        var t = dtype ?? like.Value.DType;
        if (t is not (DType.F32 or DType.BF16))
            throw new ShapeException(op, $"input {like.Shape} is {like.Value.DType.Name()}, expected float32 or bfloat16");
        return new(Tensor.Empty(like.Device, shape, t, category, op), name: op);
    }
}
