using Memopt.Tensors;

namespace Memopt.Model.Memory;

/// <summary>
/// The closed forms of docs/memory-model.md, in bytes. B batch, T tokens, C d_model, F d_ff, H heads, V vocabulary,
/// L layers, P parameters, a bytes per activation element (4, or 2 under --bf16). Tensors are counted by the layer that
/// allocated them: a block's list holds its own output (saved by the next block or ln_f), and the embedding output
/// (saved by block 0) counts outside the blocks. The simulation (<see cref="MemoryModel"/>) reproduces these sums and
/// also finds the peak when it is not at the cross-entropy backward (long sequences, small vocabularies, checkpointing).
/// </summary>
public static class MemoryFormulas
{
    private static (long B, long T, long C, long F, long H, long V, long A) Dims(ModelConfig c, MemoryModelSettings s) =>
        (s.BatchSize, s.SeqLen ?? c.SeqLen, c.DModel, c.DFF, c.Heads, c.VocabSize, s.ActivationDType.SizeOf());

    /// <summary>Parameters 4P + the sinusoid table 4·T_max·C (+ bf16 copies of the GEMM weights, 2 bytes each, under --bf16).</summary>
    public static long ParameterBytes(ModelConfig c, MemoryModelSettings s)
    {
        long bytes = 4 * c.ParameterCount();
        if (c.Positions == PositionEncoding.Sinusoidal) bytes += 4L * c.SeqLen * c.DModel;
        if (s.WeightShadows)
            bytes += 2 * (c.Layers * (4L * c.DModel * c.DModel + 2L * c.DModel * c.DFF) + (long)c.VocabSize * c.DModel);
        return bytes;
    }

    /// <summary>Gradients 4P (float32, kept across steps).</summary>
    public static long GradientBytes(ModelConfig c) => 4 * c.ParameterCount();

    /// <summary>Adam's m and v: 8P.</summary>
    public static long OptimizerBytes(ModelConfig c) => 8 * c.ParameterCount();

    /// <summary>Token ids and targets, int32 [B, T] each: 8BT.</summary>
    public static long DataBytes(ModelConfig c, MemoryModelSettings s) => 8L * s.BatchSize * (s.SeqLen ?? c.SeqLen);

    /// <summary>
    /// Bytes a block keeps for backward (saved-for-backward plus attention scores), by how it is checkpointed:
    /// none: 8a·BTC (ln1 out, q, k, v, merged heads, residual 1, ln2 out, block out) + 2a·BTF (fc out, gelu out)
    ///       + 16·BT (two LayerNorms' float32 mean and rstd) + a·BHT² (probabilities; twice with attention dropout);
    ///       with flash attention q, k, v and merged become qkv and y (same 4a·BTC) and the probabilities a float32
    ///       log-sum-exp 4·BHT;
    /// block: a·BTC (its output; the input is the previous block's);
    /// attention: 3a·BTC + 2a·BTF + 8·BT (the MLP half as usual);
    /// mlp: 7a·BTC + 8·BT + the attention's scores (the attention half as usual, its output kept as the MLP checkpoint's input).
    /// </summary>
    public static long SavedPerBlock(ModelConfig c, MemoryModelSettings s, CheckpointScope? scope)
    {
        var (b, t, d, f, h, _, a) = Dims(c, s);
        long btc = b * t * d, btf = b * t * f, bt = b * t;
        long attention = s.FlashAttention ? 4 * b * h * t : a * b * h * t * t * (c.Dropout > 0 ? 2 : 1);
        return scope switch
        {
            null => 8 * a * btc + 2 * a * btf + 16 * bt + attention,
            CheckpointScope.Block => a * btc,
            CheckpointScope.Attention => 3 * a * btc + 2 * a * btf + 8 * bt,
            CheckpointScope.Mlp => 7 * a * btc + 8 * bt + attention,
            _ => throw new ArgumentOutOfRangeException(nameof(scope)),
        };
    }

    /// <summary>Kept outside the blocks when the forward ends: the embedding output a·BTC, ln_f's statistics 8·BT and output a·BTC, the logits a·BTV, CE's log-sum-exp 4·BT and the loss (4).</summary>
    public static long SavedOutsideBlocks(ModelConfig c, MemoryModelSettings s)
    {
        var (b, t, d, _, _, v, a) = Dims(c, s);
        return 2 * a * b * t * d + 12 * b * t + a * b * t * v + 4;
    }

    /// <summary>Everything kept when the forward ends: Σ over blocks + outside the blocks.</summary>
    public static long SavedAfterForward(ModelConfig c, MemoryModelSettings s) =>
        Enumerable.Range(0, c.Layers).Sum(l => SavedPerBlock(c, s, s.Checkpointing?.For(l))) + SavedOutsideBlocks(c, s);

    /// <summary>
    /// Memory at the first backward step, when cross-entropy's backward allocates the logits' gradient a·BTV while the
    /// whole forward is still kept: parameters + gradients + Adam + data + everything saved + d(logits) + the seed (4).
    /// For every preset of the study this is the peak; <see cref="MemoryModel"/> checks every other moment.
    /// </summary>
    public static long PeakAtCrossEntropyBackward(ModelConfig c, MemoryModelSettings s)
    {
        var (b, t, _, _, _, v, a) = Dims(c, s);
        return ParameterBytes(c, s) + GradientBytes(c) + OptimizerBytes(c) + DataBytes(c, s) + SavedAfterForward(c, s) + a * b * t * v + 4;
    }
}
