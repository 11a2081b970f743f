using System.Text.Json.Serialization;
using Memopt.Model.Data;

namespace Memopt.Model.Training;

/// <summary>
/// Where a run stands and what it has measured so far: everything a checkpoint must carry, besides the tensors, for a
/// resumed run to continue exactly as if it had never stopped. Steps are counted as completed steps: Step = 3 means
/// steps 0, 1, 2 are done and step 3 (0-based) is next. Random state needs no snapshot: batch order is a function of
/// (seed, epoch) and the data position, and dropout masks of (seed, step, micro-batch), so seed + position + step
/// reproduce every draw. Serialized as JSON into the checkpoint's metadata (doubles round-trip exactly).
/// </summary>
public sealed class TrainingProgress
{
    /// <summary>Completed optimizer steps (skipped ones included: a skipped step still consumes its batches and its learning rate).</summary>
    public long Step { get; set; }
    /// <summary>Position of the next training batch.</summary>
    public int DataEpoch { get; set; }
    public int DataBatchIndex { get; set; }
    /// <summary>Per completed step: the mean loss over its micro-batches (NaN/Inf for a skipped non-finite step).</summary>
    public List<double> LossCurve { get; set; } = new();
    /// <summary>Per completed step: device-synchronized milliseconds.</summary>
    public List<double> StepMs { get; set; } = new();
    public List<EvalReport> Evaluations { get; set; } = new();
    /// <summary>Sum and count of the finite step losses (the mean is the reported train loss).</summary>
    public double TrainLossSum { get; set; }
    public int TrainLossCount { get; set; }
    public bool FirstLossFinite { get; set; } = true;
    /// <summary>Seconds spent training (evaluations and checkpoint writes excluded), over every session of the run.</summary>
    public double TrainSeconds { get; set; }
    /// <summary>1-based numbers of the steps skipped for a non-finite loss or gradient (--skip-nonfinite).</summary>
    public List<long> SkippedSteps { get; set; } = new();
    /// <summary>Skipped steps in a row up to now (reset by a good step).</summary>
    public int ConsecutiveSkips { get; set; }
    /// <summary>Step counts at which the run was resumed from a checkpoint.</summary>
    public List<long> ResumedAt { get; set; } = new();

    [JsonIgnore]
    public BatchPosition DataPosition
    {
        get => new(DataEpoch, DataBatchIndex);
        set { DataEpoch = value.Epoch; DataBatchIndex = value.BatchIndex; }
    }
}
