using Memopt.Model.Training;
using Memopt.Tensors;

namespace Memopt.Model.Memory;

/// <summary>
/// Everything besides the model's shape that decides a training step's memory: the batch, the techniques, the
/// optimizer-side options that rent scratch, the device's launch shape and the CUDA context the driver adds.
/// </summary>
public sealed record MemoryModelSettings
{
    /// <summary>
    /// CUDA context and driver overhead outside the pool, measured on the H100 as driver-used minus the pool's reserved
    /// bytes: 554,514,432 B for lab4 at batch 32 (driver 1,986,854,912 B, reserved 1,432,340,480 B); the untied lab4
    /// run, rtx5090 and medium gave 552.54–554.50 MB, so it is a constant of the device and driver, not of the model.
    /// </summary>
    public const long H100ContextBytes = 554_514_432;

    public int BatchSize { get; init; } = 32;
    /// <summary>Tokens per sequence; null is the model's SeqLen (what training uses).</summary>
    public int? SeqLen { get; init; }
    /// <summary>Sliding-window mask: on the naive path it changes which scores are masked, not what is stored.</summary>
    public int? WindowSize { get; init; }
    public CheckpointSettings? Checkpointing { get; init; }
    /// <summary>
    /// Storage type of activations, saved tensors, attention scores, logits and activation gradients: float32, or
    /// bfloat16 under --bf16 (2 bytes; LayerNorm statistics and log-sum-exps stay float32; parameters, their
    /// gradients and Adam's moments stay float32).
    /// </summary>
    public DType ActivationDType { get; init; } = DType.F32;
    /// <summary>--bf16 keeps a bfloat16 copy of every GEMM weight (qkv, proj, fc, fc2, the LM head or tied embedding), category parameters.</summary>
    public bool WeightShadows { get; init; }
    /// <summary>--flash-attn: no B·H·T² scores; the op maps qkv [B,T,3C] to y [B,T,C] and saves qkv, y and a float32 log-sum-exp [B,H,T].</summary>
    public bool FlashAttention { get; init; }
    /// <summary>Prediction for the flash backward's scratch: D = rowsum(dO∘O), float32 [B,H,T], rented for the backward call.</summary>
    public bool FlashBackwardWorkspace { get; init; } = true;
    /// <summary>--fused-head: the LM head and the loss run fused in chunks of rows; null: the B·T×V logits are materialized.</summary>
    public HeadSettings? Head { get; init; }
    public int GradAccumulation { get; init; } = 1;
    /// <summary>Global-norm clipping on (it rents per-tensor partial sums in the optimizer phase).</summary>
    public bool GradClip { get; init; } = true;
    /// <summary>Without clipping, the trainer counts non-finite gradients in one pass (off with --no-grad-check).</summary>
    public bool CheckGradients { get; init; } = true;
    public WorkspaceShape Device { get; init; } = WorkspaceShape.H100;
    /// <summary>Bytes the driver uses outside the pool (CUDA context, modules); 0 on the CPU accelerator.</summary>
    public long ContextBytes { get; init; } = H100ContextBytes;
    /// <summary>Keep every predicted allocation/free (for plots and comparisons with the tracker's timeline).</summary>
    public bool RecordTimeline { get; init; }

    public bool Bf16 => ActivationDType == DType.BF16;

    /// <summary>--bf16 as the study defines it: 2-byte activations and bf16 weight copies; float32 master weights and Adam.</summary>
    public MemoryModelSettings WithBf16(bool on = true) => this with { ActivationDType = on ? DType.BF16 : DType.F32, WeightShadows = on };

    /// <summary>
    /// The settings of a training run as `train` configures it (batch, window, checkpointing, flash, bf16, the fused head, accumulation,
    /// clipping, the gradient check, the fp32 GEMM mode) on a device of this launch shape and context.
    /// </summary>
    public static MemoryModelSettings ForTraining(TrainingOptions training, WorkspaceShape device, long contextBytes) => new MemoryModelSettings
    {
        BatchSize = training.BatchSize, WindowSize = training.WindowSize, Checkpointing = training.Checkpointing,
        FlashAttention = training.FlashAttention, Head = training.Head, GradAccumulation = training.GradAccumulation, GradClip = training.GradClip > 0,
        CheckGradients = training.CheckGradients, Device = device with { Fp32Matmul = training.Fp32Matmul }, ContextBytes = contextBytes,
    }.WithBf16(training.Bf16);

    public void Validate(ModelConfig config)
    {
        if (BatchSize <= 0) throw new ArgumentException($"memory model: batch size must be > 0, got {BatchSize}");
        if (SeqLen is int t && (t <= 0 || t > config.SeqLen)) throw new ArgumentException($"memory model: sequence length {t} must be in 1..{config.SeqLen}");
        if (GradAccumulation <= 0) throw new ArgumentException($"memory model: gradient accumulation must be > 0, got {GradAccumulation}");
        if (ContextBytes < 0) throw new ArgumentException($"memory model: context overhead must be ≥ 0, got {ContextBytes}");
        if (ActivationDType == DType.I32) throw new ArgumentException("memory model: activations are float32 or bfloat16");
        if (Head is { ChunkRows: <= 0 } h) throw new ArgumentException($"memory model: head chunk rows must be > 0, got {h.ChunkRows}");
    }
}

/// <summary>A named technique of the study as a change to the settings (for the max-batch table).</summary>
public sealed record Technique(string Name, Func<MemoryModelSettings, MemoryModelSettings> Apply)
{
    /// <summary>
    /// The study's techniques. <paramref name="checkpointing"/> and <paramref name="window"/> are the settings the
    /// checkpointing and window rows use (defaults: every block, whole-block scope; a window of T/4).
    /// </summary>
    public static IReadOnlyList<Technique> Study(CheckpointSettings? checkpointing, int window)
    {
        var ckpt = checkpointing ?? new CheckpointSettings(1);
        static Func<MemoryModelSettings, MemoryModelSettings> Set(bool bf16, bool flash, int? window, CheckpointSettings? checkpointing) =>
            s => (s with { FlashAttention = flash, WindowSize = window, Checkpointing = checkpointing }).WithBf16(bf16);
        return
        [
            new("baseline", Set(false, false, null, null)),
            new("bf16", Set(true, false, null, null)),
            new("flash", Set(false, true, null, null)),
            new("bf16+flash", Set(true, true, null, null)),
            new("window", Set(false, false, window, null)),
            new("checkpointing", Set(false, false, null, ckpt)),
            new("all", Set(true, true, window, ckpt)),
        ];
    }
}
