using Memopt.Tensors;

namespace Memopt.Autograd;

public static partial class Ops
{
    /// <summary>
    /// Causal multi-head attention, tiled (see <see cref="Kernels.FlashAttention"/>): qkv [B, T, 3C] from the fused
    /// projection → y [B, T, C], heads already side by side, so there are no split-heads or merge-heads copies and no
    /// B·H·T² scores or probabilities. Scale 1/√hd; <paramref name="window"/> W lets query i see keys i − W &lt; j ≤ i
    /// (null: plain causal). y has qkv's dtype (float32 or bfloat16).
    /// Saved for backward: qkv, y and the per-row log-sum-exp L [B, H, T] (float32), the only O(B·H·T) extra;
    /// backward recomputes the probabilities from them and adds into d(qkv). No attention dropout.
    /// </summary>
    public static Var FlashAttention(Var qkv, int heads, int? window, string op = "flash_attention")
    {
        var shape = Kernels.FlashAttention.CheckArguments(op, qkv.Value, heads, window);
        var device = qkv.Device;
        var y = new Var(Tensor.Empty(device, shape, qkv.Value.DType, MemoryCategory.Activations, op), name: op);
        using var lse = Tensor.Empty(device, new Shape(shape[0], heads, shape[1]), DType.F32, MemoryCategory.Activations, op + ".lse");
        Kernels.FlashAttention.Forward(qkv.Value, heads, window, y.Value, lse);
        Tape.Record(op, y, [qkv], [qkv.Value, y.Value, lse], (dy, saved) =>
            Kernels.FlashAttention.Backward(saved[0], saved[1], saved[2], dy, heads, window, qkv.GradBuffer(op)));
        return y;
    }
}
