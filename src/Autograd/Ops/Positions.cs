using Memopt.Kernels;
using Memopt.Tensors;

namespace Memopt.Autograd;

public static partial class Ops
{
    /// <summary>
    /// y[b, t, :] = x[b, t, :] + table[t, :] for x [B, T, C] and table [T, C] (sinusoidal or learned positions).
    /// Seen as rows of length T·C, this is a bias add with the table as the bias, so it reuses that kernel and its
    /// column-sum backward for the table's gradient.
    /// </summary>
    public static Var AddPositions(Var x, Var table, string op = "positions")
    {
        Check.That(x.Shape.Rank == 3 && table.Shape.Rank == 2 && x.Shape[1] == table.Shape[0] && x.Shape[2] == table.Shape[1],
            op, $"expects x [B, T, C] and a table [T, C], got {x.Shape} and {table.Shape}");
        int b = x.Shape[0], tc = x.Shape[1] * x.Shape[2];
        var y = NewOutput(x, x.Shape, op);
        using (var xRows = x.Value.View(new Shape(b, tc)))
        using (var yRows = y.Value.View(new Shape(b, tc)))
        using (var bias = table.Value.View(new Shape(tc)))
            BiasAdd.Forward(xRows, bias, yRows);
        Tape.Record(op, y, [x, table], [], (dy, _) =>
        {
            if (x.RequiresGrad) Elementwise.AddInto(dy, x.GradBuffer(op), 1f);
            if (table.RequiresGrad)
            {
                using var dyRows = dy.View(new Shape(b, tc));
                using var dTable = table.GradBuffer(op).View(new Shape(tc));
                BiasAdd.Backward(dyRows, dTable);
            }
        });
        return y;
    }
}
