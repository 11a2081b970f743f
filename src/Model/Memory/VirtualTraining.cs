using Memopt.Tensors;

namespace Memopt.Model.Memory;

/// <summary>
/// One training run of <see cref="Training.Trainer"/> played on <see cref="VirtualMemory"/>: the model's parameters
/// and gradient buffers (TransformerLM's constructor, in its order), Adam's moments, the batch buffers, then
/// GradAccumulation micro-batches of forward (TransformerLM.Loss → blocks → attention) and backward, and the optimizer
/// phase (gradient-norm partials when clipping). The structure follows TransformerLM.cs, TransformerBlock.cs and
/// NaiveAttention.cs line by line, so the order of allocations and frees, and with it the peak, is the real one.
/// </summary>
internal sealed class VirtualTraining
{
    private readonly ModelConfig _c;
    private readonly MemoryModelSettings _s;
    private readonly VirtualMemory _m;
    private readonly VAutograd _autograd;
    private readonly VirtualOps _ops;
    private readonly List<VVar> _parameters = new();
    private VVar _wte = null!;
    private VVar? _wpe;
    private VTensor? _sinusoid;
    private Block[] _blocks = [];
    private VVar _lnFW = null!, _lnFB = null!;
    private VVar? _headW, _headB;

    public VirtualTraining(ModelConfig config, MemoryModelSettings settings, VirtualMemory memory)
    {
        _c = config;
        _s = settings;
        _m = memory;
        _autograd = new VAutograd(memory);
        _ops = new VirtualOps(_autograd, settings.ActivationDType, settings.Device);
    }

    private sealed record Block(VVar Ln1W, VVar Ln1B, VVar QkvW, VVar QkvB, VVar ProjW, VVar ProjB,
                                VVar Ln2W, VVar Ln2B, VVar FcW, VVar FcB, VVar Fc2W, VVar Fc2B);

    /// <summary>Live bytes at the end of the last micro-batch's forward, by tensor (what backward will need).</summary>
    public IReadOnlyList<PredictedTensor> EndOfForward { get; private set; } = [];
    public long ParameterCount => _parameters.Sum(p => p.Shape.Numel);

    public void Run(int steps)
    {
        Setup();
        int b = _s.BatchSize, t = _s.SeqLen ?? _c.SeqLen;
        // Trainer.Run: Adam's moments, then the batch buffers.
        foreach (var p in _parameters)
        {
            Persistent(p.Shape, DType.F32, MemoryCategory.OptimizerState, "adam_m:" + p.Name, "Adam m " + p.Name);
            Persistent(p.Shape, DType.F32, MemoryCategory.OptimizerState, "adam_v:" + p.Name, "Adam v " + p.Name);
        }
        var ids = Persistent(new Shape(b, t), DType.I32, MemoryCategory.Data, "batch.ids", "token ids");
        var targets = Persistent(new Shape(b, t), DType.I32, MemoryCategory.Data, "batch.targets", "targets");
        for (int step = 0; step < steps; step++)
        {
            for (int micro = 0; micro < _s.GradAccumulation; micro++)
            {
                using var tape = new VTape(_autograd);
                VVar loss;
                using (_m.EnterPhase(Phase.Forward)) loss = Loss(ids, targets, b, t);
                if (step == steps - 1 && micro == _s.GradAccumulation - 1) EndOfForward = _m.LiveTensors.ToList();
                using (loss)
                {
                    if (_s.GradAccumulation == 1) tape.Backward(loss);
                    else
                    {
                        using var scaled = _ops.Scale(loss, "accumulation.scale", "loss / accumulation");
                        tape.Backward(scaled);
                    }
                }
            }
            using (_m.EnterPhase(Phase.Optimizer))
                if (_s.GradClip)
                {
                    // GradNorm.SumOfSquares: partial sums for every gradient tensor (each with its own grid inside the
                    // multi-tensor launches), then the total. On the H100 this buffer is part of the optimizer phase's peak.
                    long slots = _parameters.Sum(p => _s.Device.GradNormSlots(p.Shape.Numel));
                    using var partials = _ops.Tensor(new Shape(checked((int)slots)), DType.F32, MemoryCategory.Workspace, "grad_norm:partials", "gradient-norm partials");
                    using var total = _ops.Tensor(new Shape(1), DType.F32, MemoryCategory.Workspace, "grad_norm:total", "gradient norm");
                }
                else if (_s.CheckGradients)
                {
                    // Without clipping, NonFinite.Count's one counter checks the gradients for NaN/Inf.
                    using var counter = _ops.Tensor(new Shape(1), DType.I32, MemoryCategory.Workspace, NonFiniteCounterOp, "non-finite gradient counter");
                }
        }
    }

    private const string NonFiniteCounterOp = Memopt.Kernels.NonFinite.Op + ":count";

    private VTensor Persistent(Shape shape, DType dtype, MemoryCategory category, string op, string name) =>
        _ops.Tensor(shape, dtype, category, op, name);

    /// <summary>A parameter (category parameters) and its gradient buffer (gradients), allocated together as Parameter's constructor does.</summary>
    private VVar Parameter(string name, params int[] shape)
    {
        var s = new Shape(shape);
        var value = Persistent(s, DType.F32, MemoryCategory.Parameters, name, name);
        var p = new VVar(value, requiresGrad: true, name, isParameter: true);
        p.Grad = Persistent(s, DType.F32, MemoryCategory.Gradients, "grad:" + name, "grad " + name);
        _parameters.Add(p);
        return p;
    }

    /// <summary>TransformerLM's constructor (and, under --bf16, the bfloat16 copies of the GEMM weights).</summary>
    private void Setup()
    {
        int c = _c.DModel, v = _c.VocabSize, ff = _c.DFF;
        _wte = Parameter("wte.weight", v, c);
        if (_c.Positions == PositionEncoding.Learned) _wpe = Parameter("wpe.weight", _c.SeqLen, c);
        else _sinusoid = Persistent(new Shape(_c.SeqLen, c), DType.F32, MemoryCategory.Parameters, "sinusoid", "sinusoid table");
        _blocks = new Block[_c.Layers];
        for (int l = 0; l < _c.Layers; l++)
        {
            string p = $"blocks.{l}.";
            _blocks[l] = new Block(
                Parameter(p + "ln1.weight", c), Parameter(p + "ln1.bias", c),
                Parameter(p + "attn.qkv.weight", 3 * c, c), Parameter(p + "attn.qkv.bias", 3 * c),
                Parameter(p + "attn.proj.weight", c, c), Parameter(p + "attn.proj.bias", c),
                Parameter(p + "ln2.weight", c), Parameter(p + "ln2.bias", c),
                Parameter(p + "mlp.fc.weight", ff, c), Parameter(p + "mlp.fc.bias", ff),
                Parameter(p + "mlp.proj.weight", c, ff), Parameter(p + "mlp.proj.bias", c));
        }
        _lnFW = Parameter("ln_f.weight", c);
        _lnFB = Parameter("ln_f.bias", c);
        if (!_c.TiedHead) _headW = Parameter("lm_head.weight", v, c);
        if (_c.HeadBias) _headB = Parameter("lm_head.bias", v);
        if (_s.WeightShadows)
        {
            foreach (var blk in _blocks)
                foreach (var w in new[] { blk.QkvW, blk.ProjW, blk.FcW, blk.Fc2W })
                    w.Bf16Copy = Persistent(w.Shape, DType.BF16, MemoryCategory.Parameters, "bf16:" + w.Name, "bf16 copy of " + w.Name);
            var head = _headW ?? _wte;
            head.Bf16Copy = Persistent(head.Shape, DType.BF16, MemoryCategory.Parameters, "bf16:" + head.Name, "bf16 copy of " + head.Name);
        }
    }

    /// <summary>TransformerLM.Loss.</summary>
    private VVar Loss(VTensor ids, VTensor targets, int b, int t)
    {
        int rows = checked(b * t);
        if (_s.Head is { } head)
        {
            using var h = Hidden(ids, b, t);
            using var flatH = _ops.Reshape(h, new Shape(rows, _c.DModel));
            return _ops.LinearCrossEntropy(flatH, _headW ?? _wte, _headB, head.ChunkRows);
        }
        using var logits = Logits(ids, b, t);
        using var flat = _ops.Reshape(logits, new Shape(rows, _c.VocabSize));
        using var flatTargets = targets.View(new Shape(rows));
        return _ops.CrossEntropy(flat, flatTargets);
    }

    /// <summary>TransformerLM.Logits.</summary>
    private VVar Logits(VTensor ids, int b, int t)
    {
        using var h = Hidden(ids, b, t);
        return _ops.Linear(h, _headW ?? _wte, _headB, "lm_head", "logits");
    }

    /// <summary>TransformerLM.Hidden (training context: dropout active when the config has it).</summary>
    private VVar Hidden(VTensor ids, int b, int t)
    {
        using var idsVar = new VVar(ids.Share());
        VVar x;
        using (var tok = _ops.Embedding(idsVar, _wte, "wte", "token embedding"))
        {
            if (_wpe is not null)
                x = _ops.AddPositions(tok, _wpe, "wpe", "embedding + positions");
            else
            {
                using var scaled = _ops.Scale(tok, "wte.scale", "embedding ×√d");
                using var table = new VVar(_sinusoid!.View(new Shape(t, _c.DModel)));
                x = _ops.AddPositions(scaled, table, "sinusoid", "embedding + positions");
            }
        }
        if (_c.Dropout > 0)
        {
            var d = _ops.Dropout(x, "emb.dropout", "embedding (dropout)");
            x.Dispose();
            x = d;
        }
        for (int l = 0; l < _c.Layers; l++)
        {
            var next = BlockForward(l, x, _s.Checkpointing?.For(l));
            x.Dispose();
            x = next;
        }
        using (x)
            return _ops.LayerNorm(x, _lnFW, _lnFB, "ln_f", "ln_f out");
    }

    /// <summary>TransformerBlock.Forward.</summary>
    private VVar BlockForward(int l, VVar x, CheckpointScope? checkpoint)
    {
        using var layer = _m.InLayer(l);
        switch (checkpoint)
        {
            case CheckpointScope.Block:
                return _ops.Checkpoint(v => BlockForward(l, v, null), x, $"blocks.{l}.checkpoint", record: true);
            case CheckpointScope.Attention:
                using (var mid = _ops.Checkpoint(v => AttentionSubBlock(l, v), x, $"blocks.{l}.attn.checkpoint", record: true))
                    return MlpSubBlock(l, mid);
            case CheckpointScope.Mlp:
                using (var mid = AttentionSubBlock(l, x))
                    return _ops.Checkpoint(v => MlpSubBlock(l, v), mid, $"blocks.{l}.mlp.checkpoint", record: true);
            default:
                if (_c.Norm == NormPlacement.Pre)
                {
                    var (sum, normed) = PreNormAttentionSubBlockWithLn2(l, x);
                    using (sum)
                    using (normed)
                        return MlpSubBlock(l, sum, normed);
                }
                using (var mid = AttentionSubBlock(l, x))
                    return MlpSubBlock(l, mid);
        }
    }

    private VVar AttentionSubBlock(int l, VVar x)
    {
        using var layer = _m.InLayer(l);
        var p = _blocks[l];
        if (_c.Norm == NormPlacement.Pre)
        {
            using var h = _ops.LayerNorm(x, p.Ln1W, p.Ln1B, "ln1", "ln1 out");
            using var a = Attention(l, h);
            return _ops.Add(x, a, "residual1", "residual 1");
        }
        using var attended = Attention(l, x);
        var (sum, normed) = _ops.AddLayerNorm(x, attended, p.Ln1W, p.Ln1B, "residual1", "residual 1", "ln1", "ln1 out");
        using (sum)
            return normed;
    }

    /// <summary>TransformerBlock.PreNormAttentionSubBlockWithLn2.</summary>
    private (VVar Sum, VVar Normed) PreNormAttentionSubBlockWithLn2(int l, VVar x)
    {
        using var layer = _m.InLayer(l);
        var p = _blocks[l];
        using var h = _ops.LayerNorm(x, p.Ln1W, p.Ln1B, "ln1", "ln1 out");
        using var a = Attention(l, h);
        return _ops.AddLayerNorm(x, a, p.Ln2W, p.Ln2B, "residual1", "residual 1", "ln2", "ln2 out");
    }

    private VVar MlpSubBlock(int l, VVar x, VVar? ln2 = null)
    {
        using var layer = _m.InLayer(l);
        var p = _blocks[l];
        if (_c.Norm == NormPlacement.Pre)
        {
            using var own = ln2 is null ? _ops.LayerNorm(x, p.Ln2W, p.Ln2B, "ln2", "ln2 out") : null;
            using var m = Mlp(l, ln2 ?? own!);
            return _ops.Add(x, m, "residual2", "residual 2 (block out)");
        }
        using var up = Mlp(l, x);
        var (sum, normed) = _ops.AddLayerNorm(x, up, p.Ln2W, p.Ln2B, "residual2", "residual 2", "ln2", "ln2 out (block out)");
        using (sum)
            return normed;
    }

    /// <summary>TransformerBlock.Attention: fused QKV, naive or flash attention, output projection.</summary>
    private VVar Attention(int l, VVar h)
    {
        var p = _blocks[l];
        using var qkv = _ops.Linear(h, p.QkvW, p.QkvB, "attn.qkv", "qkv");
        VVar merged;
        if (_s.FlashAttention) merged = _ops.FlashAttention(qkv, _c.Heads, _s.FlashBackwardWorkspace);
        else
        {
            using var y = NaiveAttention(qkv);
            merged = _ops.MergeHeads(y, "attn.merge", "merged heads");
        }
        using (merged)
        using (var o = _ops.Linear(merged, p.ProjW, p.ProjB, "attn.proj", "proj out"))
            return DropoutIfTraining(o, 1);
    }

    /// <summary>NaiveAttention.Forward: q, k, v copies, scores and probabilities [B·H, T, T], P·V.</summary>
    private VVar NaiveAttention(VVar qkv)
    {
        int b = qkv.Shape[0], t = qkv.Shape[1], heads = _c.Heads, hd = _c.HeadDim;
        int bh = checked(b * heads);
        var q4 = _ops.SelectHeads(qkv, heads, 0, "q");
        var k4 = _ops.SelectHeads(qkv, heads, 1, "k");
        var v4 = _ops.SelectHeads(qkv, heads, 2, "v");
        using var q = _ops.Reshape(q4, new Shape(bh, t, hd));
        using var k = _ops.Reshape(k4, new Shape(bh, t, hd));
        using var v = _ops.Reshape(v4, new Shape(bh, t, hd));
        q4.Dispose(); k4.Dispose(); v4.Dispose();
        VVar probs;
        using (var scores = _ops.MatMul(q, k, "attn.scores", "scores", MemoryCategory.AttentionScores, transB: true))
            probs = _ops.CausalSoftmax(scores, "attn.softmax", "probs");
        if (_c.Dropout > 0)
        {
            var dropped = _ops.Dropout(probs, "attn.dropout", "probs (dropout)");
            probs.Dispose();
            probs = dropped;
        }
        using (probs)
        using (var y = _ops.MatMul(probs, v, "attn.pv", "attn out (P·V)"))
            return _ops.Reshape(y, new Shape(b, heads, t, hd));
    }

    private VVar Mlp(int l, VVar h)
    {
        var p = _blocks[l];
        using var up = _ops.Linear(h, p.FcW, p.FcB, "mlp.fc", "fc out");
        using var act = _ops.Gelu(up, "mlp.gelu", "gelu out");
        using var down = _ops.Linear(act, p.Fc2W, p.Fc2B, "mlp.proj", "fc2 out");
        return DropoutIfTraining(down, 2);
    }

    private VVar DropoutIfTraining(VVar x, int site) =>
        _c.Dropout > 0 ? _ops.Dropout(x, $"dropout{site}", site == 1 ? "proj out (dropout)" : "fc2 out (dropout)") : _ops.Identity(x);
}
