using Memopt.Model;
using Memopt.Model.Data;
using Memopt.Model.Training;
using Memopt.Tensors;

namespace Memopt.Runner.Memory;

/// <summary>The tracker's figures at the end of the last measured step (before the trainer's final evaluation).</summary>
public sealed record MeasuredMemory(
    int Steps,
    long PeakBytes,
    long PeakReservedBytes,
    long? DriverUsedBytes,
    IReadOnlyDictionary<MemoryCategory, long> AtPeak,
    IReadOnlyDictionary<MemoryCategory, long> PeakPerCategory,
    long ForwardPeakBytes,
    long BackwardPeakBytes,
    long RecomputePeakBytes,
    long OptimizerPeakBytes,
    IReadOnlyList<Allocation> LiveAtPeak,
    IReadOnlyList<MemoryEvent> Timeline)
{
    /// <summary>The allocation that set the peak: the newest one alive at the peak.</summary>
    public Allocation? PeakSetter => LiveAtPeak.MaxBy(a => a.Id);
}

/// <summary>Real training steps with the tracker recording, for `memopt memory --measure` and the max-batch check.</summary>
public static class MemoryMeasurement
{
    /// <summary>
    /// Builds the model on <paramref name="device"/> and trains <paramref name="training"/>.Steps steps, recording the live
    /// allocations at the peak (and the timeline when asked). Start any trace on the device before calling, so it sees the setup.
    /// </summary>
    public static MeasuredMemory Run(ComputeDevice device, ModelConfig config, TrainingOptions training, PreparedData data, int seed,
        bool recordTimeline, Action<StepReport>? onStep = null)
    {
        var tracker = device.Tracker;
        tracker.RecordPeakAllocations = true;
        tracker.RecordTimeline = recordTimeline;
        tracker.ClearTimeline();
        using var model = new TransformerLM(device, config, seed, training.Bf16 ? Precision.Bf16 : Precision.Fp32);
        int steps = training.Steps ?? throw new ArgumentException("memory measurement: give a number of steps");
        MeasuredMemory? result = null;
        new Trainer(model, data, training with { EvalEvery = 0, EvalBatches = 1 })
        {
            OnStep = s =>
            {
                onStep?.Invoke(s);
                if (s.Step != steps) return;
                result = new MeasuredMemory(steps, tracker.Peak, tracker.PeakReserved, device.DriverUsedBytes(),
                    tracker.AtPeak().ByCategory, tracker.PeakPerCategory().ByCategory,
                    tracker.PeakDuring(Phase.Forward), tracker.PeakDuring(Phase.Backward), tracker.PeakDuring(Phase.Recompute), tracker.PeakDuring(Phase.Optimizer),
                    tracker.PeakAllocations.OrderByDescending(a => a.Bytes).ThenBy(a => a.Id).ToList(),
                    tracker.Timeline.ToList());
                tracker.RecordTimeline = false;
            },
        }.Run("memory");
        return result!;
    }

    /// <summary>
    /// One step at <paramref name="batch"/> with the device's pool limited to <paramref name="budget"/> bytes (the
    /// --memory-limit mechanism): null if it ran, else the out-of-memory message. Runs on the measuring device (its
    /// kernels are compiled already) after giving every cached block back, so the budget sees only this run.
    /// </summary>
    public static string? TryBatch(ComputeDevice device, long budget, ModelConfig config, TrainingOptions training, PreparedData data, int seed, int batch)
    {
        var tracker = device.Tracker;
        if (tracker.Live != 0)
            throw new InvalidOperationException($"max-batch check: {ByteSize.Format(tracker.Live)} still allocated on the device before the run");
        var previous = tracker.Budget;
        tracker.RecordPeakAllocations = false;
        tracker.RecordTimeline = false;
        device.ReleaseCachedMemory();
        tracker.Budget = budget;
        try
        {
            using var model = new TransformerLM(device, config, seed, training.Bf16 ? Precision.Bf16 : Precision.Fp32);
            new Trainer(model, data, training with { BatchSize = batch, Steps = 1, EvalEvery = 0, EvalBatches = 1 }).Run("memory");
            return null;
        }
        catch (OutOfDeviceMemoryException e)
        {
            return e.Message;
        }
        finally
        {
            tracker.Budget = previous;
            device.ReleaseCachedMemory();
        }
    }
}
