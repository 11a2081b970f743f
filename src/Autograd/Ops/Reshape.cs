using Memopt.Kernels;
using Memopt.Tensors;

namespace Memopt.Autograd;

public static partial class Ops
{
    /// <summary>
    /// Same data, another shape: a view sharing storage (no copy, no new memory). The gradient is the output
    /// gradient seen in the input's shape, passed on without a copy when the input has no gradient yet.
    /// </summary>
    public static Var Reshape(Var x, Shape shape, string op = "reshape")
    {
        Check.That(shape.Numel == x.Shape.Numel, op, $"cannot view {x.Shape} ({x.Shape.Numel} elements) as {shape} ({shape.Numel})");
        var y = new Var(x.Value.View(shape), name: op);
        Tape.Record(op, y, [x], [], (dy, _) => x.AdoptOrAddGrad(dy, op));
        return y;
    }

    /// <summary>A second handle on the same value that the tape treats as a new node (dropout with p = 0, say).</summary>
    public static Var Identity(Var x, string op = "identity") => Reshape(x, x.Shape, op);
}
