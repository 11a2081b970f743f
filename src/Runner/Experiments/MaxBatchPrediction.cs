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
/// context lies outside the pool and does not count. Without --memory-limit a child's pool is bounded by what the GPU
/// has: the device is opened once (and closed before any child starts) to read its total memory, and a step fits when
/// its rounded pool peak plus the CUDA context (<see cref="MemoryModelSettings.H100ContextBytes"/>) is within it. On
/// the CPU accelerator the pool has no limit: no prediction then.
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
        long? gpuBytes = null;
        if (budget is null)
        {
            if (kind == DeviceKind.Cpu) return new(null, "no --memory-limit: the CPU accelerator's pool has no limit");
            gpuBytes = GpuMemory(kind);
            if (gpuBytes is null) return new(null, "no --memory-limit and no CUDA GPU to read the memory of");
        }
        try
        {
            var (config, training) = TrainCommand.Settings(o.TrainOptionsFor(technique));
            var settings = MemoryCommand.ModelSettings(training, kind);
            string device = kind == DeviceKind.Cpu ? "the CPU accelerator's kernels" : "the H100's kernels";
            if (budget is long limit)
                return new(MemoryModel.MaxBatch(config, settings with { ContextBytes = 0 }, limit), $"pool blocks ≤ {ByteSize.Format(limit)}, {device}");
            var context = settings with { ContextBytes = MemoryModelSettings.H100ContextBytes };
            return new(MemoryModel.MaxBatch(config, context, gpuBytes!.Value),
                $"pool blocks + {ByteSize.Format(context.ContextBytes)} CUDA context ≤ the GPU's {ByteSize.Format(gpuBytes.Value)}, {device}");
        }
        catch (Exception e) when (e is UserError or ArgumentException)
        {
            return new(null, e.Message);
        }
    }

    private static readonly Dictionary<DeviceKind, long?> GpuMemoryRead = [];

    /// <summary>The first CUDA GPU's total memory, read once per process; null without one. The device is closed again at once.</summary>
    private static long? GpuMemory(DeviceKind kind)
    {
        lock (GpuMemoryRead)
        {
            if (GpuMemoryRead.TryGetValue(kind, out var known)) return known;
            long? bytes = null;
            try
            {
                using var device = ComputeDevice.Create(kind);
                if (device.IsCuda) bytes = device.TotalMemory;
            }
            catch (InvalidOperationException) { } // --device cuda without a GPU: the children will say so
            return GpuMemoryRead[kind] = bytes;
        }
    }
}
