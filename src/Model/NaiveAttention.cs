using Memopt.Autograd;
using Memopt.Tensors;

namespace Memopt.Model;

/// <summary>
/// The study's baseline attention: S = Q·Kᵀ materialized as [B·H, T, T] (category attention scores), P = causal
/// softmax(S/√d) with an optional sliding window, Y = P·V. Backward keeps Q, K (for dS), P and V (for dP, dV):
/// the B·H·T² probabilities are the memory the flash path avoids.
/// </summary>
public static class NaiveAttention
{
    /// <summary>qkv [B, T, 3C] → y [B, H, T, hd].</summary>
    public static Var Forward(Var qkv, int heads, int? window, float dropout, ForwardContext ctx, int layer)
    {
        int b = qkv.Shape[0], t = qkv.Shape[1], c = qkv.Shape[2] / 3, hd = c / heads;
        var (q4, k4, v4) = Ops.SplitHeads(qkv, heads);
        using var q = Ops.Reshape(q4, new Shape(b * heads, t, hd));
        using var k = Ops.Reshape(k4, new Shape(b * heads, t, hd));
        using var v = Ops.Reshape(v4, new Shape(b * heads, t, hd));
        q4.Dispose(); k4.Dispose(); v4.Dispose();
        Var probs;
        using (var scores = Ops.MatMul(q, k, transB: true, op: "attn.scores", category: MemoryCategory.AttentionScores))
            probs = Ops.CausalSoftmax(scores, 1f / MathF.Sqrt(hd), window, "attn.softmax");
        if (dropout > 0)
        {
            var dropped = Ops.Dropout(probs, dropout, ctx.Seed, ctx.DropoutOffset(layer, 0), "attn.dropout");
            probs.Dispose();
            probs = dropped;
        }
        using (probs)
        using (var y = Ops.MatMul(probs, v, op: "attn.pv"))
            return Ops.Reshape(y, new Shape(b, heads, t, hd));
    }
}
