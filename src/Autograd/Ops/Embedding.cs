using Memopt.Tensors;

namespace Memopt.Autograd;

public static partial class Ops
{
    /// <summary>
    /// y = table[ids] for int32 ids (no gradient) and a table [V, C]; y has shape ids.Shape + [C] and the dtype
    /// <paramref name="dtype"/> (default: the table's; mixed precision reads a float32 table into bf16 activations).
    /// Keeps only the ids for backward, which scatter-adds dy into the table's (float32) gradient. <paramref name="checkIds"/>
    /// copies the ids to the host first and throws on an id outside the vocabulary (an out-of-range id otherwise reads a zero row).
    /// </summary>
    public static Var Embedding(Var ids, Var table, bool checkIds = false, string op = "embedding", DType? dtype = null)
    {
        var shape = Kernels.Embedding.OutputShape(ids.Value, table.Value);
        if (checkIds) Kernels.Embedding.CheckIds(ids.Value, table.Shape[0]);
        var y = NewOutput(table, shape, op, dtype: dtype ?? table.Value.DType);
        Kernels.Embedding.Forward(ids.Value, table.Value, y.Value);
        Tape.Record(op, y, [ids, table], [ids.Value], (dy, saved) =>
        {
            if (table.RequiresGrad) Kernels.Embedding.Backward(saved[0], dy, table.GradBuffer(op));
        });
        return y;
    }
}
