using Memopt.Autograd;

namespace Memopt.Model;

/// <summary>
/// One decoder block. Pre-norm: x + Attn(LN1(x)), then + MLP(LN2(·)). Post-norm: LN1(x + Attn(x)), then LN2(· + MLP(·)).
/// Attention: a fused QKV projection, then the study's baseline (the naive path that materializes the B×H×T×T scores)
/// or, with <see cref="AttentionSettings.Flash"/>, the tiled flash kernels that never do.
/// Every intermediate is disposed as soon as the forward no longer needs it; what backward needs the tape keeps.
/// </summary>
public sealed class TransformerBlock
{
    private readonly ModelConfig _c;
    private readonly int _layer;
    public int Layer => _layer;
    public Parameter Ln1W, Ln1B, QkvW, QkvB, ProjW, ProjB, Ln2W, Ln2B, FcW, FcB, Fc2W, Fc2B;

    public TransformerBlock(ModelConfig c, int layer, ParameterInit init)
    {
        _c = c;
        _layer = layer;
        float std = 0.02f, residualStd = 0.02f / MathF.Sqrt(2f * c.Layers);
        string p = $"blocks.{layer}.";
        Ln1W = init.Constant(p + "ln1.weight", 1f, c.DModel);
        Ln1B = init.Constant(p + "ln1.bias", 0f, c.DModel);
        QkvW = init.Normal(p + "attn.qkv.weight", std, 3 * c.DModel, c.DModel);
        QkvB = init.Constant(p + "attn.qkv.bias", 0f, 3 * c.DModel);
        ProjW = init.Normal(p + "attn.proj.weight", residualStd, c.DModel, c.DModel);
        ProjB = init.Constant(p + "attn.proj.bias", 0f, c.DModel);
        Ln2W = init.Constant(p + "ln2.weight", 1f, c.DModel);
        Ln2B = init.Constant(p + "ln2.bias", 0f, c.DModel);
        FcW = init.Normal(p + "mlp.fc.weight", std, c.DFF, c.DModel);
        FcB = init.Constant(p + "mlp.fc.bias", 0f, c.DFF);
        Fc2W = init.Normal(p + "mlp.proj.weight", residualStd, c.DModel, c.DFF);
        Fc2B = init.Constant(p + "mlp.proj.bias", 0f, c.DModel);
    }

    /// <summary>
    /// x [B, T, C] → [B, T, C]. Does not dispose x. With a checkpoint scope, that part of the block keeps only its
    /// input for backward and is recomputed there (<see cref="Ops.Checkpoint"/>).
    /// </summary>
    public Var Forward(Var x, AttentionSettings attention, ForwardContext ctx, CheckpointScope? checkpoint = null)
    {
        using var layerScope = x.Device.Tracker.InLayer(_layer);
        switch (checkpoint)
        {
            case CheckpointScope.Block:
                return Ops.Checkpoint(v => Forward(v, attention, ctx), x, $"blocks.{_layer}.checkpoint", record: true);
            case CheckpointScope.Attention:
                using (var mid = Ops.Checkpoint(v => AttentionSubBlock(v, attention, ctx), x, $"blocks.{_layer}.attn.checkpoint", record: true))
                    return MlpSubBlock(mid, ctx);
            case CheckpointScope.Mlp:
                using (var mid = AttentionSubBlock(x, attention, ctx))
                    return Ops.Checkpoint(v => MlpSubBlock(v, ctx), mid, $"blocks.{_layer}.mlp.checkpoint", record: true);
            default:
                if (_c.Norm == NormPlacement.Pre)
                {
                    // residual1 and ln2 meet in this call: one kernel adds and normalizes (Ops.AddLayerNorm).
                    var (sum, normed) = PreNormAttentionSubBlockWithLn2(x, attention, ctx);
                    using (sum)
                    using (normed)
                        return MlpSubBlock(sum, ctx, normed);
                }
                using (var mid = AttentionSubBlock(x, attention, ctx))
                    return MlpSubBlock(mid, ctx);
        }
    }

    /// <summary>
    /// The attention half with its residual: pre-norm x + Attn(LN1(x)), post-norm LN1(x + Attn(x)) (the add and LN1 in
    /// one kernel). Does not dispose x.
    /// </summary>
    private Var AttentionSubBlock(Var x, AttentionSettings attention, ForwardContext ctx)
    {
        using var layerScope = x.Device.Tracker.InLayer(_layer);
        if (_c.Norm == NormPlacement.Pre)
        {
            using var h = Ops.LayerNorm(x, Ln1W, Ln1B, _c.LayerNormEps, "ln1");
            using var a = Attention(h, attention, ctx);
            return Ops.Add(x, a, "residual1");
        }
        using var attended = Attention(x, attention, ctx);
        var (sum, normed) = Ops.AddLayerNorm(x, attended, Ln1W, Ln1B, _c.LayerNormEps, "residual1", "ln1");
        using (sum)
            return normed;
    }

    /// <summary>Pre-norm x + Attn(LN1(x)) and LN2 of it, the add and LN2 in one kernel; what the MLP half takes.</summary>
    private (Var Sum, Var Normed) PreNormAttentionSubBlockWithLn2(Var x, AttentionSettings attention, ForwardContext ctx)
    {
        using var layerScope = x.Device.Tracker.InLayer(_layer);
        using var h = Ops.LayerNorm(x, Ln1W, Ln1B, _c.LayerNormEps, "ln1");
        using var a = Attention(h, attention, ctx);
        return Ops.AddLayerNorm(x, a, Ln2W, Ln2B, _c.LayerNormEps, "residual1", "ln2");
    }

    /// <summary>
    /// The MLP half with its residual: pre-norm x + MLP(LN2(x)) (LN2(x) given as <paramref name="ln2"/> when the caller
    /// already has it), post-norm LN2(x + MLP(x)), the add and LN2 in one kernel. Disposes neither x nor ln2.
    /// </summary>
    private Var MlpSubBlock(Var x, ForwardContext ctx, Var? ln2 = null)
    {
        using var layerScope = x.Device.Tracker.InLayer(_layer);
        if (_c.Norm == NormPlacement.Pre)
        {
            using var own = ln2 is null ? Ops.LayerNorm(x, Ln2W, Ln2B, _c.LayerNormEps, "ln2") : null;
            using var m = Mlp(ln2 ?? own!, ctx);
            return Ops.Add(x, m, "residual2");
        }
        using var up = Mlp(x, ctx);
        var (sum, normed) = Ops.AddLayerNorm(x, up, Ln2W, Ln2B, _c.LayerNormEps, "residual2", "ln2");
        using (sum)
            return normed;
    }

    private Var Attention(Var h, AttentionSettings settings, ForwardContext ctx)
    {
        int b = h.Shape[0], t = h.Shape[1], heads = _c.Heads, hd = _c.HeadDim;
        using var qkv = Ops.Linear(h, QkvW, QkvB, "attn.qkv");
        Var merged;
        if (settings.Flash)
        {
            if (ctx.Training && _c.Dropout > 0)
                throw new ArgumentException($"--flash-attn does not support attention dropout: run with --dropout 0 (the model has dropout {_c.Dropout})");
            merged = Ops.FlashAttention(qkv, heads, settings.Window, "attn.flash");
        }
        else
            using (var y = NaiveAttention.Forward(qkv, heads, settings.Window, ctx.Training ? _c.Dropout : 0f, ctx, _layer))
                merged = Ops.MergeHeads(y, "attn.merge");
        using (merged)
        using (var o = Ops.Linear(merged, ProjW, ProjB, "attn.proj"))
            return DropoutIfTraining(o, ctx, site: 1);
    }

    private Var Mlp(Var h, ForwardContext ctx)
    {
        using var up = Ops.Linear(h, FcW, FcB, "mlp.fc");
        using var act = Ops.Gelu(up, "mlp.gelu");
        using var down = Ops.Linear(act, Fc2W, Fc2B, "mlp.proj");
        return DropoutIfTraining(down, ctx, site: 2);
    }

    private Var DropoutIfTraining(Var x, ForwardContext ctx, int site) =>
        ctx.Training && _c.Dropout > 0
            ? Ops.Dropout(x, _c.Dropout, ctx.Seed, ctx.DropoutOffset(_layer, site), $"dropout{site}")
            : Ops.Identity(x);
}

/// <summary>
/// How attention is computed: the mask's window (null = plain causal), and whether the tiled flash kernels run
/// (<see cref="Ops.FlashAttention"/>) instead of the naive path that materializes the B×H×T×T scores.
/// </summary>
public sealed record AttentionSettings(int? Window, bool Flash = false);

/// <summary>Which part of a block gradient checkpointing recomputes: all of it, the attention half, or the MLP half.</summary>
public enum CheckpointScope { Block, Attention, Mlp }

/// <summary>Gradient checkpointing: every <see cref="Every"/>-th block (index % Every == 0) recomputes its <see cref="Scope"/> in backward.</summary>
public sealed record CheckpointSettings(int Every, CheckpointScope Scope = CheckpointScope.Block)
{
    public CheckpointScope? For(int layer) => Every > 0 && layer % Every == 0 ? Scope : null;
}
