using Memopt.Kernels;

namespace Memopt.Autograd;

public static partial class Ops
{
    /// <summary>
    /// One of q (which = 0), k (1) or v (2) from a fused qkv activation [B, T, 3C], as [B, heads, T, C/heads].
    /// A copy (attention's matmuls want each head contiguous); backward scatters the gradient into d(qkv).
    /// Nothing is saved.
    /// </summary>
    public static Var SelectHeads(Var qkv, int heads, int which, string? op = null)
    {
        op ??= "select_heads." + "qkv"[Math.Clamp(which, 0, 2)];
        var shape = HeadPermute.SelectShape(qkv.Value, heads, which);
        var y = NewOutput(qkv, shape, op);
        HeadPermute.Select(qkv.Value, heads, which, y.Value);
        Tape.Record(op, y, [qkv], [], (dy, _) => HeadPermute.SelectBackward(dy, heads, which, qkv.GradBuffer(op)));
        return y;
    }

    /// <summary>q, k and v as [B, heads, T, hd] from qkv [B, T, 3C]: three single-output nodes that share d(qkv).</summary>
    public static (Var Q, Var K, Var V) SplitHeads(Var qkv, int heads)
    {
        HeadPermute.SelectShape(qkv.Value, heads, 0); // fail before allocating anything
        var q = SelectHeads(qkv, heads, 0);
        var k = SelectHeads(qkv, heads, 1);
        var v = SelectHeads(qkv, heads, 2);
        return (q, k, v);
    }

    /// <summary>[B, H, T, hd] → [B, T, H·hd], the heads side by side again (the input of the attention output projection).</summary>
    public static Var MergeHeads(Var x, string op = "merge_heads")
    {
        var shape = HeadPermute.MergeShape(x.Value);
        var y = NewOutput(x, shape, op);
        HeadPermute.Merge(x.Value, y.Value);
        Tape.Record(op, y, [x], [], (dy, _) => HeadPermute.MergeBackward(dy, x.GradBuffer(op)));
        return y;
    }
}
