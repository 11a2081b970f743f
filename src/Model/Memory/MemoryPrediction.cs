using Memopt.Tensors;

namespace Memopt.Model.Memory;

/// <summary>The allocation that sets the peak: the moment of the step at which memory is highest.</summary>
public sealed record PeakMoment(Phase Phase, string Op, string Tensor, int Layer, long Event)
{
    public override string ToString() =>
        $"{Phase.Label()}, {(Layer >= 0 ? $"layer {Layer}" : "outside the blocks")}, when {Op} allocates {Tensor}";
}

/// <summary>What the analytic model predicts for one training configuration: the tracker's figures, tensor by tensor.</summary>
public sealed class MemoryPrediction
{
    public required ModelConfig Config { get; init; }
    public required MemoryModelSettings Settings { get; init; }
    public required long ParameterCount { get; init; }
    /// <summary>Peak tracked bytes (the tracker's Peak: bytes of live tensors).</summary>
    public required long PeakBytes { get; init; }
    /// <summary>Bytes per category at the moment of the peak (the tracker's AtPeak()).</summary>
    public required IReadOnlyDictionary<MemoryCategory, long> AtPeak { get; init; }
    /// <summary>Each category's own peak over the step (the tracker's PeakOf).</summary>
    public required IReadOnlyDictionary<MemoryCategory, long> PeakPerCategory { get; init; }
    public required PeakMoment Moment { get; init; }
    /// <summary>Tensors alive at the peak, largest first.</summary>
    public required IReadOnlyList<PredictedTensor> LiveAtPeak { get; init; }
    /// <summary>Tensors alive when the forward ends (before backward starts), excluding parameters, gradients, optimizer state and data.</summary>
    public required IReadOnlyList<PredictedTensor> AfterForward { get; init; }
    /// <summary>Every tensor the forward allocates (in order), kept for backward or freed before the forward ends.</summary>
    public required IReadOnlyList<PredictedTensor> ForwardAllocations { get; init; }
    public required long ForwardPeakBytes { get; init; }
    public required long BackwardPeakBytes { get; init; }
    public required long RecomputePeakBytes { get; init; }
    public required long OptimizerPeakBytes { get; init; }
    /// <summary>Peak of live bytes with each block rounded as the pool rounds it: the least --memory-limit under which the step runs.</summary>
    public required long PoolPeakBytes { get; init; }
    /// <summary>What the caching pool holds from the driver without budget pressure (the tracker's PeakReserved).</summary>
    public required long ReservedBytes { get; init; }
    public long ContextBytes => Settings.ContextBytes;
    /// <summary>Device memory the run needs: the pool's least budget plus the context (what must fit on the card).</summary>
    public long DeviceBytes => PoolPeakBytes + ContextBytes;
    /// <summary>What the driver would report used with an unbounded pool (reserved + context).</summary>
    public long DriverBytes => ReservedBytes + ContextBytes;
    /// <summary>Predicted allocate/free/retag events (TimeMs is the event number); empty unless Settings.RecordTimeline.</summary>
    public required IReadOnlyList<MemoryEvent> Timeline { get; init; }

    /// <summary>Saved tensors of one block after the forward (every block's list is the same unless checkpointing differs per block).</summary>
    public IReadOnlyList<PredictedTensor> SavedInLayer(int layer) => AfterForward.Where(t => t.Layer == layer).ToList();

    /// <summary>What the forward of one block allocates, in order, and whether it is still alive when the forward ends.</summary>
    public IReadOnlyList<(PredictedTensor Tensor, bool Kept)> ForwardInLayer(int layer)
    {
        var kept = AfterForward.Select(t => t.Id).ToHashSet();
        return ForwardAllocations.Where(t => t.Layer == layer).Select(t => (t, kept.Contains(t.Id))).ToList();
    }

    /// <summary>Saved tensors outside the blocks: embedding side (before block 0) and head side (ln_f, logits, loss).</summary>
    public IReadOnlyList<PredictedTensor> SavedOutsideBlocks => AfterForward.Where(t => t.Layer < 0).ToList();
}
