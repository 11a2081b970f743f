using Memopt.Autograd;
using Memopt.Tensors;

namespace Memopt.Model;

/// <summary>
/// Decoder-only Transformer LM: token embedding (×√d with sinusoidal positions) + positions, N blocks, final LayerNorm, LM head (tied to the
/// embedding or its own weight, bias optional), cross-entropy over the next token. All parameters and their gradient
/// buffers are allocated here, up front, so parameter memory is known before the first step.
/// Parameter names follow a GPT-2-like scheme and go unchanged into safetensors checkpoints.
/// <see cref="Precision"/> is fixed at construction: under <see cref="Precision.Bf16"/> the embedding lookup writes bf16
/// activations, which every op downstream keeps (outputs take their input's dtype), and each matmul weight gets its
/// bf16 shadow copy here, in setup (category parameters, op "bf16:" + name), refreshed by every optimizer step.
/// </summary>
public sealed class TransformerLM : IDisposable
{
    private readonly Tensor? _sinusoid;

    public TransformerLM(ComputeDevice device, ModelConfig config, int seed, Precision precision = Precision.Fp32)
    {
        config.Validate();
        Device = device;
        Config = config;
        Precision = precision;
        using var setup = device.Tracker.EnterPhase(Phase.Setup);
        var init = new ParameterInit(device, seed);
        TokenEmbedding = init.Normal("wte.weight", 0.02f, config.VocabSize, config.DModel);
        if (config.Positions == PositionEncoding.Learned)
            PositionEmbedding = init.Normal("wpe.weight", 0.01f, config.SeqLen, config.DModel);
        else
            _sinusoid = Tensor.FromHost(device, Sinusoid(config.SeqLen, config.DModel), new Shape(config.SeqLen, config.DModel),
                MemoryCategory.Parameters, "sinusoid");
        Blocks = Enumerable.Range(0, config.Layers).Select(l => new TransformerBlock(config, l, init)).ToArray();
        FinalNormW = init.Constant("ln_f.weight", 1f, config.DModel);
        FinalNormB = init.Constant("ln_f.bias", 0f, config.DModel);
        if (!config.TiedHead) HeadW = init.Normal("lm_head.weight", 0.02f, config.VocabSize, config.DModel);
        if (config.HeadBias) HeadB = init.Constant("lm_head.bias", 0f, config.VocabSize);
        Parameters = init.Created;
        if (precision == Precision.Bf16)
            foreach (var w in GemmWeights) w.EnableBf16Copy();
    }

    public ComputeDevice Device { get; }
    public ModelConfig Config { get; }
    public IReadOnlyList<Parameter> Parameters { get; }
    public Parameter TokenEmbedding { get; }
    public Parameter? PositionEmbedding { get; }
    public TransformerBlock[] Blocks { get; }
    public Parameter FinalNormW { get; }
    public Parameter FinalNormB { get; }
    public Parameter? HeadW { get; }
    public Parameter? HeadB { get; }

    public long ParameterCount => Parameters.Sum(p => p.Value.Numel);

    public Precision Precision { get; }
    /// <summary>The dtype of activations and activation gradients: float32, or bf16 under mixed precision.</summary>
    public DType ActivationDType => Precision.ActivationDType();

    /// <summary>The weights the matmuls read (QKV, attention output, MLP up and down, the LM head): those that get bf16 shadows.</summary>
    public IEnumerable<Parameter> GemmWeights =>
        Blocks.SelectMany(b => new[] { b.QkvW, b.ProjW, b.FcW, b.Fc2W }).Append(HeadW ?? TokenEmbedding);

    /// <summary>Rewrites every bf16 shadow from its master (after the masters were written directly, e.g. loaded from a checkpoint).</summary>
    public void RefreshBf16Copies()
    {
        foreach (var p in Parameters) p.RefreshBf16Copy();
    }

    /// <summary>
    /// ids, targets: int32 [B, T]. Returns the mean next-token cross-entropy (scalar). With <paramref name="checkpointing"/>,
    /// the chosen blocks keep only their inputs for backward and recompute the rest there.
    /// </summary>
    /// <param name="head">Null: the LM head writes the B·T×V logits and cross-entropy reads them. Otherwise the head
    /// and the loss run fused, in chunks of rows (<see cref="Ops.LinearCrossEntropy"/>): the logits never exist whole.</param>
    public Var Loss(Tensor ids, Tensor targets, AttentionSettings attention, ForwardContext ctx, float labelSmoothing = 0f,
        CheckpointSettings? checkpointing = null, HeadSettings? head = null)
    {
        int rows = ids.Shape[0] * ids.Shape[1];
        using var flatTargets = targets.View(new Shape(rows));
        if (head is not null)
        {
            using var h = Hidden(ids, attention, ctx, checkpointing);
            using var flatH = Ops.Reshape(h, new Shape(rows, Config.DModel));
            return Ops.LinearCrossEntropy(flatH, HeadW ?? TokenEmbedding, HeadB, flatTargets, head.ChunkRows, labelSmoothing: labelSmoothing);
        }
        using var logits = Logits(ids, attention, ctx, checkpointing);
        using var flat = Ops.Reshape(logits, new Shape(rows, Config.VocabSize));
        return Ops.CrossEntropy(flat, flatTargets, labelSmoothing: labelSmoothing);
    }

    /// <summary>ids int32 [B, T] → logits [B, T, V].</summary>
    public Var Logits(Tensor ids, AttentionSettings attention, ForwardContext ctx, CheckpointSettings? checkpointing = null)
    {
        using var h = Hidden(ids, attention, ctx, checkpointing);
        return Ops.Linear(h, HeadW ?? TokenEmbedding, HeadB, "lm_head");
    }

    /// <summary>ids int32 [B, T] → the final LayerNorm's output [B, T, d], what the LM head reads.</summary>
    public Var Hidden(Tensor ids, AttentionSettings attention, ForwardContext ctx, CheckpointSettings? checkpointing = null)
    {
        if (ids.Shape.Rank != 2) throw new ArgumentException($"model: token ids must be [batch, T], got {ids.Shape}");
        int b = ids.Shape[0], t = ids.Shape[1];
        if (t > Config.SeqLen) throw new ArgumentException($"model: sequence length {t} exceeds the model's maximum {Config.SeqLen}");
        using var idsVar = new Var(ids.Share());
        Var x;
        using (var tok = Ops.Embedding(idsVar, TokenEmbedding, op: "wte", dtype: ActivationDType))
        {
            if (PositionEmbedding is not null)
                x = Ops.AddPositions(tok, PositionEmbedding, "wpe");
            else
            {
                // As in the original Transformer, token embeddings are scaled by √d before the ±1 sinusoid is added.
                // Unscaled, N(0, 0.02) embeddings are ~2% of the residual stream: measured on lab4, one epoch then
                // learned only unigram statistics (val ppl 101.70 vs the corpus's unigram 101.52) at any learning rate.
                using var scaled = Ops.Scale(tok, MathF.Sqrt(Config.DModel), "wte.scale");
                x = AddSinusoid(scaled, t);
            }
        }
        if (ctx.Training && Config.Dropout > 0)
        {
            var d = Ops.Dropout(x, Config.Dropout, ctx.Seed, ctx.DropoutOffset(-1, 0), "emb.dropout");
            x.Dispose();
            x = d;
        }
        // x always holds the one live residual; disposing it in finally also releases it when a block throws
        // (an out-of-memory, a rejected option), so a caller that catches does not leak it.
        try
        {
            foreach (var block in Blocks)
            {
                var next = block.Forward(x, attention, ctx, checkpointing?.For(block.Layer));
                x.Dispose();
                x = next;
            }
            return Ops.LayerNorm(x, FinalNormW, FinalNormB, Config.LayerNormEps, "ln_f");
        }
        finally
        {
            x.Dispose();
        }
    }

    private Var AddSinusoid(Var tok, int t)
    {
        using var table = new Var(_sinusoid!.View(new Shape(t, Config.DModel)));
        return Ops.AddPositions(tok, table, "sinusoid");
    }

    /// <summary>The original Transformer's table: PE[p, 2i] = sin(p / 10000^(2i/d)), PE[p, 2i+1] = cos(same).</summary>
    public static float[] Sinusoid(int positions, int d)
    {
        var pe = new float[positions * d];
        for (int p = 0; p < positions; p++)
            for (int i = 0; i < d; i++)
            {
                double angle = p / Math.Pow(10000, 2 * (i / 2) / (double)d);
                pe[p * d + i] = (float)(i % 2 == 0 ? Math.Sin(angle) : Math.Cos(angle));
            }
        return pe;
    }

    public void Dispose()
    {
        foreach (var p in Parameters) p.Dispose();
        _sinusoid?.Dispose();
    }
}

/// <summary>The fused, chunked LM head + cross-entropy (--fused-head): rows per chunk.</summary>
public sealed record HeadSettings(int ChunkRows)
{
    /// <summary>2048 rows: at V = 50257 a chunk of logits is 412 MB in float32 (206 MB under --bf16), against 1.65 GB
    /// of float32 logits and 1.65 GB of their gradient unfused at rtx5090's batch 32.</summary>
    public const int DefaultChunkRows = 2048;
}
