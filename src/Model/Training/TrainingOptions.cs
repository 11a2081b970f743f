using Memopt.Model;

namespace Memopt.Model.Training;

public enum OptimizerKind { Adam, AdamW }
public enum ScheduleKind { Cosine, Constant }

/// <summary>Everything that decides how a run trains, besides the model shape and the data.</summary>
public sealed record TrainingOptions
{
    public string Technique { get; init; } = "baseline";
    public int BatchSize { get; init; } = 32;
    public int Epochs { get; init; } = 1;
    /// <summary>Optimizer steps; overrides <see cref="Epochs"/> when set.</summary>
    public int? Steps { get; init; }
    public float LearningRate { get; init; } = 1e-3f;
    public OptimizerKind Optimizer { get; init; } = OptimizerKind.Adam;
    public float WeightDecay { get; init; } = 0.01f;
    public ScheduleKind Schedule { get; init; } = ScheduleKind.Cosine;
    /// <summary>Warm-up steps; null means 2% of the run (at least 1).</summary>
    public int? WarmupSteps { get; init; }
    public float MinLrRatio { get; init; } = 0.1f;
    public float GradClip { get; init; } = 1.0f;
    public int GradAccumulation { get; init; } = 1;
    public float LabelSmoothing { get; init; }
    public ulong Seed { get; init; } = 1;
    /// <summary>Evaluate every N steps (0: only at the end).</summary>
    public int EvalEvery { get; init; }
    /// <summary>Cap on validation batches per evaluation (null: the whole split).</summary>
    public int? EvalBatches { get; init; }
    public int? WindowSize { get; init; }
    /// <summary>Tiled flash attention (--flash-attn) instead of the naive path.</summary>
    public bool FlashAttention { get; init; }
    /// <summary>bf16 mixed precision (<c>--bf16</c>); the model must be built with <see cref="Precision.Bf16"/>.</summary>
    public bool Bf16 { get; init; }
    /// <summary>How GEMMs of two fp32 operands run (<c>--fp32-matmul</c>, <c>--tf32</c>): set on the device for the run.</summary>
    public Memopt.Tensors.Fp32Matmul Fp32Matmul { get; init; } = Memopt.Tensors.Fp32Matmul.Ieee;
    /// <summary>--fused-head: the LM head and cross-entropy fused and chunked over rows (<see cref="HeadChunkRows"/>).</summary>
    public bool FusedHead { get; init; }
    public int HeadChunkRows { get; init; } = HeadSettings.DefaultChunkRows;
    /// <summary>What the model's loss needs for the fused head, or null when the logits are materialized.</summary>
    public HeadSettings? Head => FusedHead ? new HeadSettings(HeadChunkRows) : null;
    /// <summary>Gradient checkpointing: recompute <see cref="CheckpointScope"/> of every <see cref="CheckpointEvery"/>-th block in backward.</summary>
    public bool GradientCheckpointing { get; init; }
    public int CheckpointEvery { get; init; } = 1;
    public CheckpointScope CheckpointScope { get; init; } = CheckpointScope.Block;

    /// <summary>What the model's forward needs to checkpoint, or null when checkpointing is off.</summary>
    public CheckpointSettings? Checkpointing => GradientCheckpointing ? new CheckpointSettings(CheckpointEvery, CheckpointScope) : null;
    public int TimingWarmupSteps { get; init; } = 3;
    public int TimingSteps { get; init; } = 20;

    // Resume and fault handling.
    /// <summary>Write a training checkpoint every N steps and at the end (0: only when interrupted).</summary>
    public int SaveEvery { get; init; }
    /// <summary>Training checkpoints kept in the checkpoint directory (older ones are deleted after each write).</summary>
    public int KeepCheckpoints { get; init; } = 2;
    /// <summary>Check every op's output and input gradients for NaN/Inf and stop at the first (slow; a diagnostic).</summary>
    public bool DetectAnomaly { get; init; }
    /// <summary>Skip the update of a step whose loss or gradients are not finite, instead of stopping.</summary>
    public bool SkipNonFinite { get; init; }
    /// <summary>With <see cref="SkipNonFinite"/>: stop after this many skipped steps in a row.</summary>
    public int MaxConsecutiveSkips { get; init; } = 10;
    /// <summary>
    /// Check the gradients for NaN/Inf after backward, before the update. With clipping on it is the clipping norm
    /// (free); with clipping off it costs one counting pass over the gradients and a read-back per step.
    /// </summary>
    public bool CheckGradients { get; init; } = true;

    public void Validate()
    {
        void Positive(long v, string name) { if (v <= 0) throw new ArgumentException($"{name} must be > 0, got {v}"); }
        Positive(BatchSize, "--batch-size");
        Positive(Epochs, "--epochs");
        if (Steps is int s) Positive(s, "--steps");
        Positive(GradAccumulation, "--grad-accum");
        if (!(LearningRate > 0) || float.IsInfinity(LearningRate)) throw new ArgumentException($"--lr must be > 0, got {LearningRate}");
        if (GradClip < 0) throw new ArgumentException($"--grad-clip must be ≥ 0 (0 disables), got {GradClip}");
        if (LabelSmoothing < 0 || LabelSmoothing >= 1) throw new ArgumentException($"--label-smoothing must be in [0, 1), got {LabelSmoothing}");
        if (EvalEvery < 0) throw new ArgumentException($"--eval-every must be ≥ 0, got {EvalEvery}");
        if (EvalBatches is int e) Positive(e, "--eval-batches");
        if (WindowSize is int w) Positive(w, "--window-size");
        Positive(CheckpointEvery, "--checkpoint-every");
        Positive(HeadChunkRows, "--head-chunk-rows");
        if (!Enum.IsDefined(CheckpointScope)) throw new ArgumentException($"--checkpoint-scope must be block, attention or mlp, got {CheckpointScope}");
        if (WarmupSteps is int ws && ws < 0) throw new ArgumentException($"--warmup-steps must be ≥ 0, got {ws}");
        if (SaveEvery < 0) throw new ArgumentException($"--save-every must be ≥ 0 (0: only when interrupted), got {SaveEvery}");
        Positive(KeepCheckpoints, "--keep-checkpoints");
        Positive(MaxConsecutiveSkips, "--max-consecutive-skips");
    }
}
