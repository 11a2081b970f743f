using Memopt.Model.Memory;
using Memopt.Runner.Commands;
using Memopt.Tensors;

namespace Memopt.Runner.Experiments;

/// <summary>The memory model's largest batch for one technique (0: not even batch 1 fits), or null; <see cref="Basis"/> says against what, or why none.</summary>
public sealed record MaxBatchForecast(int? MaxBatch, string Basis)
{
    public override string ToString() => MaxBatch is int b ? $"{b} ({Basis})" : $"n/a ({Basis})";
}

/// <summary>
/// The analytic memory model (<see cref="MemoryModel.MaxBatch"/>) for what a max-batch probe runs: the technique's flags
/// and --train-args parsed as `train` parses them, turned into the model's settings as `memopt memory` turns them
/// (<see cref="MemoryCommand.ModelSettings"/>), on the device --device names without opening it (the H100's launch
/// shape for cuda and auto, the CPU accelerator's for cpu).
/// The criterion is the one the child's --memory-limit enforces: the budget bounds the pool's reserved bytes, and the
/// pool gives its cached blocks back before it refuses, so a step runs exactly when the peak of its live blocks,
/// each rounded as the pool rounds it (<see cref="MemoryPrediction.PoolPeakBytes"/>), is within the limit; the CUDA
/// context lies outside the pool and does not count. Without --memory-limit a child's pool is bounded by the device's
/// total memory (CUDA) or not at all (CPU), which cannot be known without opening the GPU: no prediction then.
/// Not modelled: evaluation passes (a probe runs one validation batch; it keeps nothing for backward).
/// </summary>
public static class MaxBatchPrediction
{
    public static MaxBatchForecast Predict(ChildTrainOptions o, Technique technique)
    {
        long? budget = o.MemoryLimitBytes();
        DeviceKind kind;
        try { kind = ComputeDevice.ParseKind(o.Device); }
        catch (ArgumentException e) { return new(null, e.Message); }
        if (budget is not long limit)
            return new(null, kind == DeviceKind.Cpu
                ? "no --memory-limit: the CPU accelerator's pool has no limit"
                : "no --memory-limit: the GPU's memory is not known without opening it; give --memory-limit for a prediction");
        try
        {
            var (config, training) = TrainCommand.Settings(o.TrainOptionsFor(technique));
            var settings = MemoryCommand.ModelSettings(training, kind) with { ContextBytes = 0 };
            int batch = MemoryModel.MaxBatch(config, settings, limit);
            string device = kind == DeviceKind.Cpu ? "the CPU accelerator's kernels" : "the H100's kernels";
            return new(batch, $"pool blocks ≤ {ByteSize.Format(limit)}, {device}");
        }
        catch (Exception e) when (e is UserError or ArgumentException)
        {
            return new(null, e.Message);
        }
    }
}
