using Memopt.Kernels;
using Memopt.Tensors;

namespace Memopt.Model.Memory;

/// <summary>
/// What each autograd op allocates, saves and frees, op by op as src/Autograd/Ops does it, with shapes and no data:
/// outputs (activations, or attention scores for the T×T matrices), the tensors recorded for backward (retagged
/// saved-for-backward), the scratch a kernel rents for one call (workspace), and in backward the input gradients
/// (activation gradients). The op strings are the tracker's, so predicted and measured allocations can be matched.
/// Every method notes the real op it mirrors; a change there must be repeated here (the tests compare them exactly).
/// </summary>
internal sealed class VirtualOps(VAutograd autograd, DType activations, WorkspaceShape device)
{
    private VirtualMemory Memory => autograd.Memory;
    public VAutograd Autograd => autograd;
    public DType Activations => activations;

    public VVar NewOutput(Shape shape, string op, string name, MemoryCategory category = MemoryCategory.Activations, DType? dtype = null) =>
        new(Tensor(shape, dtype ?? activations, category, op, name), name: op);

    public VTensor Tensor(Shape shape, DType dtype, MemoryCategory category, string op, string name) =>
        new(Memory, Memory.Allocate(shape, dtype, category, op, name), shape);

    /// <summary>A kernel's scratch: rented and returned within the call.</summary>
    private void Scratch(Shape? shape, string op, string name)
    {
        if (shape is null) return;
        using var t = Tensor(shape, DType.F32, MemoryCategory.Workspace, op, name);
    }

    /// <summary>Ops.Embedding: y [ids.., C]; saves the ids (data, not retagged); backward scatters into the table's gradient.</summary>
    public VVar Embedding(VVar ids, VVar table, string op, string name)
    {
        var shape = new Shape([.. ids.Shape.Dims, table.Shape[1]]);
        var y = NewOutput(shape, op, name);
        autograd.Record(op, y, [ids, table], [ids.Value], (dy, saved) => { if (table.RequiresGrad) table.GradBuffer(op); });
        return y;
    }

    /// <summary>Ops.Scale: y = s·x; nothing saved.</summary>
    public VVar Scale(VVar x, string op, string name)
    {
        var y = NewOutput(x.Shape, op, name, dtype: x.Value.DType);
        autograd.Record(op, y, [x], [], (dy, _) => x.GradBuffer(op));
        return y;
    }

    /// <summary>Ops.AddPositions: y = x + table; nothing saved; the table's gradient is a column sum (BiasAdd.Backward over [B, T·C]).</summary>
    public VVar AddPositions(VVar x, VVar table, string op, string name)
    {
        var y = NewOutput(x.Shape, op, name);
        autograd.Record(op, y, [x, table], [], (dy, _) =>
        {
            if (x.RequiresGrad) x.GradBuffer(op);
            if (table.RequiresGrad)
            {
                table.GradBuffer(op);
                Scratch(device.BiasBackwardPartials(x.Shape[0], x.Shape[1] * x.Shape[2]), "bias_add_backward", "position column-sum partials");
            }
        });
        return y;
    }

    /// <summary>Ops.Dropout with p &gt; 0: a new output, no mask stored (the counter RNG regenerates it).</summary>
    public VVar Dropout(VVar x, string op, string name)
    {
        var y = NewOutput(x.Shape, op, name, dtype: x.Value.DType);
        autograd.Record(op, y, [x], [], (dy, _) => x.GradBuffer(op));
        return y;
    }

    /// <summary>Ops.LayerNorm: y, and float32 row mean and rstd; saves x, the weight, mean and rstd.</summary>
    public VVar LayerNorm(VVar x, VVar weight, VVar bias, string op, string name)
    {
        var stats = new Shape(checked((int)x.Shape.Rows));
        var y = NewOutput(x.Shape, op, name);
        using var mean = Tensor(stats, DType.F32, MemoryCategory.Activations, op + ".mean", op + " mean");
        using var rstd = Tensor(stats, DType.F32, MemoryCategory.Activations, op + ".rstd", op + " rstd");
        autograd.Record(op, y, [x, weight, bias], [x.Value, weight.Value, mean, rstd], (dy, saved) =>
        {
            if (x.RequiresGrad) x.GradBuffer(op);
            Scratch(device.LayerNormBackwardPartials(x.Shape.Rows, x.Shape.Last), "layernorm_backward", op + " parameter partials");
        });
        return y;
    }

    /// <summary>Ops.GemmWeight: the bf16 shadow when x is bf16 and the weight has one.</summary>
    private static VTensor GemmWeight(VVar x, VVar weight) =>
        x.Value.DType == DType.BF16 && weight.Bf16Copy is { } shadow ? shadow : weight.Value;

    /// <summary>
    /// Ops.Linear: y = x·Wᵀ + b (the GEMMs read W's bf16 copy when x is bf16 and W has one); saves W if x needs a
    /// gradient and x if W does; backward runs dx = dy·W and dW += dyᵀ·x and rents the bias column sums.
    /// </summary>
    public VVar Linear(VVar x, VVar weight, VVar? bias, string op, string name)
    {
        int outFeatures = weight.Shape[0], inFeatures = weight.Shape[1];
        int rows = checked((int)x.Shape.Rows);
        var w = GemmWeight(x, weight);
        var y = NewOutput(x.Shape.WithLast(outFeatures), op, name);
        Gemm(GemmOperand.Rows(x.Value), GemmOperand.Dense(w, transposed: true), y.Value, 0, rows, outFeatures, inFeatures);
        bool needX = x.RequiresGrad, needW = weight.RequiresGrad;
        VTensor[] saved = (needX, needW) switch
        {
            (true, true) => [w, x.Value],
            (true, false) => [w],
            (false, true) => [x.Value],
            _ => [],
        };
        VVar[] inputs = bias is null ? [x, weight] : [x, weight, bias];
        autograd.Record(op, y, inputs, saved, (dy, kept) =>
        {
            var dY = GemmOperand.Rows(dy);
            if (needX) Gemm(dY, GemmOperand.Dense(kept[0]), x.GradBuffer(op), 0, rows, inFeatures, outFeatures);
            if (needW) Gemm(dY with { Transposed = true }, GemmOperand.Rows(kept[needX ? 1 : 0]), weight.GradBuffer(op), 0, outFeatures, inFeatures, rows);
            if (bias is { RequiresGrad: true })
                Scratch(device.BiasBackwardPartials(dy.Shape.Rows, dy.Shape.Last), "bias_add_backward", op + " bias partials");
        });
        return y;
    }

    /// <summary>
    /// Ops.MatMul: C = op(A)·op(B); saves B if A needs a gradient and A if B does; backward runs the GEMMs of dA and dB
    /// (a broadcast operand's gradient sums the batch: C batch stride 0).
    /// </summary>
    public VVar MatMul(VVar a, VVar b, string op, string name, MemoryCategory category = MemoryCategory.Activations, bool transA = false, bool transB = false)
    {
        var s = MatMulShape.Of(a.Shape, b.Shape, transA, transB);
        var c = NewOutput(s.Output, op, name, category);
        Gemm(GemmOperand.Dense(a.Value, transA), GemmOperand.Dense(b.Value, transB), c.Value, BatchStrideOf(c.Shape), s.M, s.N, s.K, s.Batch);
        bool needA = a.RequiresGrad, needB = b.RequiresGrad;
        VTensor[] saved = (needA, needB) switch
        {
            (true, true) => [a.Value, b.Value],
            (true, false) => [b.Value],
            _ => [a.Value],
        };
        autograd.Record(op, c, [a, b], saved, (dc, kept) =>
        {
            var dC = GemmOperand.Dense(dc);
            if (needA)
            {
                var bKept = GemmOperand.Dense(kept[needB ? 1 : 0]);
                var dA = a.GradBuffer(op);
                if (!transA) Gemm(dC, bKept with { Transposed = !transB }, dA, BatchStrideOf(dA.Shape), s.M, s.K, s.N, s.Batch);
                else Gemm(bKept with { Transposed = transB }, dC with { Transposed = true }, dA, BatchStrideOf(dA.Shape), s.K, s.M, s.N, s.Batch);
            }
            if (needB)
            {
                var aKept = GemmOperand.Dense(kept[0]);
                var dB = b.GradBuffer(op);
                if (!transB) Gemm(aKept with { Transposed = !transA }, dC, dB, BatchStrideOf(dB.Shape), s.K, s.N, s.M, s.Batch);
                else Gemm(dC with { Transposed = true }, aKept with { Transposed = transA }, dB, BatchStrideOf(dB.Shape), s.N, s.K, s.M, s.Batch);
            }
        });
        return c;
    }

    /// <summary>A GEMM operand as MatrixOperand.Rows / Dense make it: storage type, leading dimension, batch stride, transposition.</summary>
    private readonly record struct GemmOperand(DType DType, int Ld, long BatchStride, bool Transposed = false, long Offset = 0)
    {
        public static GemmOperand Rows(VTensor t) => new(t.DType, t.Shape.Last, 0);
        public static GemmOperand Dense(VTensor t, bool transposed = false) => new(t.DType, t.Shape[-1], BatchStrideOf(t.Shape), transposed);

        /// <summary>
        /// Whether the tensor-core kernel loads it with cp.async. Every tensor of the ops starts at its pool block
        /// (cuMemAlloc blocks are 256-byte aligned), so the offset into it, the leading dimension and the batch stride decide.
        /// </summary>
        public bool Vector(int batch) => TensorCoreGemm.MisalignedBecause(Offset * DType.SizeOf(), Offset, Ld, BatchStride, batch, DType.SizeOf()) is null;
    }

    /// <summary>MatrixOperand.Dense's batch stride: rows·cols for a rank-3 tensor, 0 (broadcast) for a matrix.</summary>
    private static long BatchStrideOf(Shape s) => s.Rank == 3 ? (long)s[-2] * s[-1] : 0;

    /// <summary>
    /// MatMul.Gemm's scratch, rented after C (the op made C before calling the GEMM) and returned before the GEMM returns.
    /// bf16 A and B go to TensorCoreGemm.TryGemm, which takes them on a device with bf16 tensor cores when C is float32
    /// or bf16 (TensorCoreGemm.WhyNot); its Run rents a float32 stand-in for a one-element bf16 C, and the float32
    /// split-K partials when its plan splits K (TensorCoreGemm.PlanOf, the kernel's own decision). fp32 A and B go there
    /// too (TryGemmF32) when the device's fp32 GEMMs are TF32 or 3xTF32. Every other GEMM
    /// (an fp32 operand under IEEE, mixed operands, or no tensor cores) runs the SIMT kernel, which on the cooperative path rents its float32
    /// split-K partials when its plan splits K (MatMul.SplitKWorkspace, the kernel's own decision).
    /// </summary>
    private void Gemm(GemmOperand a, GemmOperand b, VTensor c, long cBatchStride, int m, int n, int k, int batch = 1)
    {
        bool sumBatches = cBatchStride == 0 && batch > 1;
        int passes = a.DType == DType.BF16 && b.DType == DType.BF16 ? 0
            : a.DType == DType.F32 && b.DType == DType.F32 && device.Fp32Matmul != Fp32Matmul.Ieee ? TensorCoreGemm.PassesOf(device.Fp32Matmul) : -1;
        if (device.TensorCores && passes >= 0 && c.DType is (DType.F32 or DType.BF16))
        {
            int layout = TensorCoreGemm.LayoutOf(a.Transposed, a.Vector(batch), b.Transposed, b.Vector(batch));
            var plan = TensorCoreGemm.PlanOf(m, n, k, batch, sumBatches, layout, device.DeepTiles, device.Multiprocessors, passes: passes);
            using var standIn = TensorCoreGemm.StandInFor(c.DType, c.Shape.Numel * c.DType.SizeOf()) is Shape one
                ? Tensor(one, DType.F32, MemoryCategory.Workspace, TensorCoreGemm.StandInOp, "fp32 view stand-in for a one-element bf16 C") : null;
            Scratch(plan.SplitKWorkspace, TensorCoreGemm.SplitKOp, "split-K partials");
            return;
        }
        Scratch(Memopt.Kernels.MatMul.SplitKWorkspace(m, n, k, batch, sumBatches, device.Cooperative, device.Multiprocessors, device.MaxGroupSize),
            Memopt.Kernels.MatMul.SplitKOp, "SIMT split-K partials");
    }

    /// <summary>Ops.CausalSoftmax: probabilities [.., T, T] (attention scores); saves only its output.</summary>
    public VVar CausalSoftmax(VVar scores, string op, string name)
    {
        var y = NewOutput(scores.Shape, op, name, MemoryCategory.AttentionScores);
        autograd.Record(op, y, [scores], [y.Value], (dy, saved) => scores.GradBuffer(op));
        return y;
    }

    /// <summary>Ops.SelectHeads: a copy of q, k or v as [B, H, T, hd]; nothing saved.</summary>
    public VVar SelectHeads(VVar qkv, int heads, int which, string name)
    {
        string op = "select_heads." + "qkv"[which];
        int b = qkv.Shape[0], t = qkv.Shape[1], c = qkv.Shape[2] / 3;
        var y = NewOutput(new Shape(b, heads, t, c / heads), op, name);
        autograd.Record(op, y, [qkv], [], (dy, _) => qkv.GradBuffer(op));
        return y;
    }

    /// <summary>Ops.MergeHeads: [B, H, T, hd] → [B, T, H·hd], a copy; nothing saved.</summary>
    public VVar MergeHeads(VVar x, string op, string name)
    {
        var s = x.Shape;
        var y = NewOutput(new Shape(s[0], s[2], s[1] * s[3]), op, name);
        autograd.Record(op, y, [x], [], (dy, _) => x.GradBuffer(op));
        return y;
    }

    /// <summary>Ops.Reshape: a view (no memory); the gradient is adopted without a copy.</summary>
    public VVar Reshape(VVar x, Shape shape, string op = "reshape")
    {
        var y = new VVar(x.Value.View(shape), name: op);
        autograd.Record(op, y, [x], [], (dy, _) => x.AdoptOrAddGrad(dy, op));
        return y;
    }

    public VVar Identity(VVar x, string op = "identity") => Reshape(x, x.Shape, op);

    /// <summary>Ops.Add: y = a + b; nothing saved; both inputs get dy (each its own buffer).</summary>
    public VVar Add(VVar a, VVar b, string op, string name)
    {
        var y = NewOutput(a.Shape, op, name);
        autograd.Record(op, y, [a, b], [], (dy, _) =>
        {
            if (a.RequiresGrad) a.GradBuffer(op);
            if (b.RequiresGrad) b.GradBuffer(op);
        });
        return y;
    }

    /// <summary>Ops.AddLayerNorm: Add's output, then LayerNorm's y, mean and rstd, with both inputs still held; recorded as the two ops.</summary>
    public (VVar Sum, VVar Normed) AddLayerNorm(VVar a, VVar b, VVar weight, VVar bias, string addOp, string sumName, string op, string name)
    {
        var sum = Add(a, b, addOp, sumName);
        return (sum, LayerNorm(sum, weight, bias, op, name));
    }

    /// <summary>Ops.Gelu: saves its input.</summary>
    public VVar Gelu(VVar x, string op, string name)
    {
        var y = NewOutput(x.Shape, op, name);
        autograd.Record(op, y, [x], [x.Value], (dy, saved) => x.GradBuffer(op));
        return y;
    }

    /// <summary>
    /// Ops.CrossEntropy: loss [1] (float32), a float32 log-sum-exp per row; the kernel rents per-row losses and a status
    /// pair for the call; saves the logits, the targets and the log-sum-exp; backward writes the logits' gradient.
    /// </summary>
    public VVar CrossEntropy(VVar logits, VTensor targets)
    {
        const string op = "cross_entropy";
        int rows = checked((int)logits.Shape.Rows);
        var loss = NewOutput(new Shape(1), op, "loss", dtype: DType.F32);
        using var lse = Tensor(new Shape(rows), DType.F32, MemoryCategory.Activations, op + ":lse", "CE log-sum-exp");
        using (Tensor(new Shape(rows), DType.F32, MemoryCategory.Workspace, op + ":row_loss", "CE row losses"))
        using (Tensor(new Shape(2), DType.I32, MemoryCategory.Workspace, op + ":status", "CE status")) { }
        autograd.Record(op, loss, [logits], [logits.Value, targets, lse], (dy, saved) => logits.GradBuffer(op));
        return loss;
    }

    /// <summary>
    /// Ops.LinearCrossEntropy (the fused, chunked LM head + loss): loss [1]; the target count rents a status pair; the
    /// op rents per-row losses [N] and one chunk of logits [chunk, HeadStride(V)] (bf16 when x and W are bf16, else
    /// float32; the gradient overwrites it) for the call, and when recording makes dx [N, d], dW [V, d] and db [HeadStride(V)]
    /// (float32) in the forward and saves them; per chunk the logits GEMM, then the dx and dW GEMMs and the bias column
    /// sums rent their scratch. Backward adds the saved gradients into the inputs' gradients.
    /// </summary>
    public VVar LinearCrossEntropy(VVar x, VVar weight, VVar? bias, int chunkRows)
    {
        const string op = "lm_head_ce";
        int vocab = weight.Shape[0], d = weight.Shape[1], rows = checked((int)x.Shape.Rows);
        var w = GemmWeight(x, weight);
        bool needX = x.RequiresGrad, needW = weight.RequiresGrad, needB = bias is { RequiresGrad: true };
        bool grads = autograd.IsRecording && (needX || needW || needB);
        int stride = Memopt.Autograd.Ops.HeadStride(vocab), chunk = Math.Min(chunkRows, rows);
        var logitsType = x.Value.DType == DType.BF16 && w.DType == DType.BF16 ? DType.BF16 : DType.F32;

        var loss = NewOutput(new Shape(1), op, "loss", dtype: DType.F32);
        using (Tensor(new Shape(2), DType.I32, MemoryCategory.Workspace, "cross_entropy:status", "CE target count")) { }
        VTensor? dx = null, dw = null, db = null;
        using (Tensor(new Shape(rows), DType.F32, MemoryCategory.Workspace, op + ":row_loss", "CE row losses"))
        {
            if (grads)
            {
                if (needX) dx = Tensor(new Shape(rows, d), DType.F32, MemoryCategory.Activations, op + ":dx", "head dx (fused)");
                if (needW) dw = Tensor(weight.Shape, DType.F32, MemoryCategory.Activations, op + ":dw", "head dW (fused)");
                if (needB) db = Tensor(new Shape(stride), DType.F32, MemoryCategory.Activations, op + ":db", "head db (fused)");
            }
            using var logits = Tensor(new Shape(chunk, stride), logitsType, MemoryCategory.Workspace, op + ":logits", "logits chunk (then its gradient, in place)");
            var g = new GemmOperand(logitsType, stride, 0);
            for (int r0 = 0; r0 < rows; r0 += chunk)
            {
                int n = Math.Min(chunk, rows - r0);
                var xs = new GemmOperand(x.Value.DType, d, 0, Offset: (long)r0 * d);
                Gemm(xs, GemmOperand.Dense(w, transposed: true), logits, 0, n, vocab, d);
                if (!grads) continue;
                if (dx is not null) Gemm(g, GemmOperand.Dense(w), dx, 0, n, d, vocab);
                if (dw is not null) Gemm(g with { Transposed = true }, xs, dw, 0, vocab, d, n);
                if (db is not null) Scratch(device.BiasBackwardPartials(n, stride), "bias_add_backward", op + " bias partials");
            }
        }
        if (!grads) return loss;
        VTensor[] saved = [.. new[] { dx, dw, db }.OfType<VTensor>()];
        VVar[] inputs = bias is null ? [x, weight] : [x, weight, bias];
        autograd.Record(op, loss, inputs, saved, (dy, kept) =>
        {
            if (needX) x.GradBuffer(op);
            if (needW) weight.GradBuffer(op);
            if (needB) bias!.GradBuffer(op);
        });
        foreach (var t in saved) t.Dispose();
        return loss;
    }

    /// <summary>
    /// Ops.Checkpoint: the forward runs f without recording, keeping only x; backward re-runs f under a nested tape
    /// (phase recompute), backpropagates through it from a copy of dy, and frees everything it made.
    /// </summary>
    public VVar Checkpoint(Func<VVar, VVar> f, VVar x, string op, bool record)
    {
        if (!autograd.IsRecording || !(x.RequiresGrad || record)) return f(x);
        VVar y;
        using (autograd.NoGrad()) y = f(x);
        autograd.Record(op, y, [x], [x.Value], (dy, saved) =>
        {
            using var tape = new VTape(autograd);
            using var input = new VVar(saved[0].Share(), requiresGrad: true, name: op + ".input");
            VVar recomputed;
            using (Memory.EnterPhase(Phase.Recompute)) recomputed = f(input);
            using (recomputed)
                if (recomputed.RequiresGrad) tape.Backward(recomputed, dy);
            if (input.Grad is { } g)
            {
                if (x.RequiresGrad) x.AdoptOrAddGrad(g, op);
                input.ReleaseGrad();
            }
        }, always: true);
        return y;
    }

    /// <summary>
    /// Flash attention (Ops.FlashAttention): qkv [B,T,3C] → y [B,T,C] with no T×T matrix; saves qkv, y and a float32
    /// log-sum-exp [B,H,T]; backward writes d(qkv) and rents D = rowsum(dO∘O) [B,H,T] float32 for the call (plus a
    /// float32 dQ on the tiled path when d(qkv) is bf16).
    /// </summary>
    public VVar FlashAttention(VVar qkv, int heads, bool backwardWorkspace)
    {
        const string op = "attn.flash";
        int b = qkv.Shape[0], t = qkv.Shape[1], c = qkv.Shape[2] / 3;
        var y = NewOutput(new Shape(b, t, c), op, "attn out (flash)");
        using var lse = Tensor(new Shape(b, heads, t), DType.F32, MemoryCategory.Activations, op + ".lse", "attention log-sum-exp");
        autograd.Record(op, y, [qkv], [qkv.Value, y.Value, lse], (dy, saved) =>
        {
            qkv.GradBuffer(op);
            if (!backwardWorkspace) return;
            using (Tensor(new Shape(b, heads, t), DType.F32, MemoryCategory.Workspace, "flash_attention_backward.delta", "rowsum(dO∘O)"))
                // The tiled kernel adds dQ with float atomics: into a bf16 d(qkv) it gathers dQ in a float32 scratch first.
                if (device.Cooperative && activations == DType.BF16)
                    using (Tensor(new Shape(b, t, c), DType.F32, MemoryCategory.Workspace, "flash_attention_backward.dq", "dQ (float32 for the atomics)")) { }
        });
        return y;
    }
}
