using Memopt.Tensors;

namespace Memopt.Model.Memory;

/// <summary>
/// The analytic memory model: predicts, without a device, what the memory tracker records during training — every
/// tensor with its shape, dtype, category, layer and lifetime, hence the bytes per category, the peak, the moment of
/// the peak and what is alive then — by playing one training step (<see cref="VirtualTraining"/>) on
/// <see cref="VirtualMemory"/>. Steps repeat exactly (the same shapes are allocated and freed in the same order), so
/// one step gives the peak of any number. docs/memory-model.md gives the closed forms; <see cref="MemoryFormulas"/>
/// computes them and the tests check them against this simulation and both against the tracker.
/// </summary>
public static class MemoryModel
{
    public static MemoryPrediction Predict(ModelConfig config, MemoryModelSettings settings)
    {
        config.Validate();
        settings.Validate(config);
        var memory = new VirtualMemory(settings.RecordTimeline);
        var training = new VirtualTraining(config, settings, memory);
        training.Run(steps: 1);
        var setter = memory.PeakSetter!;
        return new MemoryPrediction
        {
            Config = config,
            Settings = settings,
            ParameterCount = training.ParameterCount,
            PeakBytes = memory.Peak,
            AtPeak = MemoryCategories.All.ToDictionary(c => c, memory.AtPeakOf),
            PeakPerCategory = MemoryCategories.All.ToDictionary(c => c, memory.PeakOf),
            Moment = new PeakMoment(setter.Phase, setter.Op, setter.Name, setter.Layer, memory.PeakEvent),
            LiveAtPeak = memory.PeakTensors.OrderByDescending(t => t.Bytes).ThenBy(t => t.Id).ToList(),
            AfterForward = training.EndOfForward
                .Where(t => t.Category is not (MemoryCategory.Parameters or MemoryCategory.Gradients or MemoryCategory.OptimizerState or MemoryCategory.Data))
                .OrderBy(t => t.Id).ToList(),
            ForwardAllocations = memory.Allocated.Where(t => t.Phase == Phase.Forward).ToList(),
            ForwardPeakBytes = memory.PeakDuring(Phase.Forward),
            BackwardPeakBytes = memory.PeakDuring(Phase.Backward),
            RecomputePeakBytes = memory.PeakDuring(Phase.Recompute),
            OptimizerPeakBytes = memory.PeakDuring(Phase.Optimizer),
            PoolPeakBytes = memory.PeakRounded,
            ReservedBytes = memory.Reserved,
            Timeline = memory.Timeline,
        };
    }

    /// <summary>
    /// The largest batch whose step fits in <paramref name="deviceBytes"/> of device memory: pool peak (rounded blocks)
    /// plus the context overhead ≤ the budget. Memory grows with the batch, so a doubling search then a bisection
    /// finds it. Returns 0 when not even batch 1 fits.
    /// </summary>
    public static int MaxBatch(ModelConfig config, MemoryModelSettings settings, long deviceBytes, int limit = 1 << 20)
    {
        if (deviceBytes <= 0) throw new ArgumentException($"memory model: device memory must be > 0, got {deviceBytes}");
        bool Fits(int b)
        {
            try { return Predict(config, settings with { BatchSize = b, RecordTimeline = false }).DeviceBytes <= deviceBytes; }
            catch (OverflowException) { return false; } // a dimension past 2^31 − 1: the engine cannot run it either
        }
        if (!Fits(1)) return 0;
        int lo = 1, hi = 2;
        while (hi <= limit && Fits(hi)) { lo = hi; hi *= 2; }
        if (hi > limit) return lo;
        while (hi - lo > 1)
        {
            int mid = lo + (hi - lo) / 2;
            if (Fits(mid)) lo = mid; else hi = mid;
        }
        return lo;
    }
}
