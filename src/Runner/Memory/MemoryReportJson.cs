using System.Text.Json;
using Memopt.Model;
using Memopt.Model.Memory;
using Memopt.Model.Training;
using Memopt.Tensors;

namespace Memopt.Runner.Memory;

/// <summary>`memopt memory --json PATH`: the prediction, the max-batch table, the measurement and the check, in one document (bytes exact).</summary>
public static class MemoryReportJson
{
    public static void Write(string path, MemoryPrediction p, long? deviceMemory, IReadOnlyList<MaxBatchRow>? maxBatch,
        MeasuredMemory? measured, MaxBatchCheck? check)
    {
        var doc = new
        {
            model = p.Config,
            settings = Settings(p.Settings, p.Config),
            prediction = Prediction(p),
            max_batch = maxBatch is null ? null : new
            {
                device_memory_bytes = deviceMemory,
                context_bytes = p.Settings.ContextBytes,
                techniques = maxBatch.Select(r => new { technique = r.Technique, max_batch = r.MaxBatch, device_bytes = r.DeviceBytes, tracked_peak_bytes = r.PeakBytes }),
            },
            measured = measured is null ? null : Measured(p, measured),
            max_batch_check = check is null ? null : new
            {
                technique = check.Technique,
                device_memory_bytes = check.DeviceMemory,
                pool_budget_bytes = check.PoolBudget,
                batch = check.Batch,
                batch_ran = check.BatchError is null,
                batch_error = check.BatchError,
                next_batch_ran = check.NextBatchError is null,
                next_batch_error = check.NextBatchError,
                confirmed = check.Confirmed,
            },
        };
        AtomicFile.WriteAllText(path, JsonSerializer.Serialize(doc, ResultsWriter.Json));
    }

    private static object Settings(MemoryModelSettings s, ModelConfig c) => new
    {
        batch_size = s.BatchSize,
        seq_len = s.SeqLen ?? c.SeqLen,
        technique = MemoryReportText.Technique(s),
        activation_dtype = s.ActivationDType.Name(),
        weight_shadows = s.WeightShadows,
        flash_attention = s.FlashAttention,
        window_size = s.WindowSize,
        checkpointing = s.Checkpointing is { } k ? new { every = k.Every, scope = k.Scope.ToString().ToLowerInvariant() } : null,
        grad_accumulation = s.GradAccumulation,
        grad_clip = s.GradClip,
        device = new { cooperative = s.Device.Cooperative, cuda = s.Device.IsCuda, multiprocessors = s.Device.Multiprocessors, max_group_size = s.Device.MaxGroupSize },
        context_bytes = s.ContextBytes,
    };

    private static Dictionary<string, long> ByCategory(IReadOnlyDictionary<MemoryCategory, long> d) =>
        MemoryCategories.All.ToDictionary(c => c.Label(), c => d[c]);

    private static object Tensor(PredictedTensor t) => new
    {
        name = t.Name, op = t.Op, layer = t.Layer, phase = t.Phase.Label(), category = t.Category.Label(),
        shape = t.Shape.Dims, dtype = t.DType.Name(), bytes = t.Bytes,
    };

    private static object Prediction(MemoryPrediction p) => new
    {
        parameters = p.ParameterCount,
        peak_bytes = p.PeakBytes,
        at_peak = ByCategory(p.AtPeak),
        peak_per_category = ByCategory(p.PeakPerCategory),
        peak_moment = new { phase = p.Moment.Phase.Label(), op = p.Moment.Op, tensor = p.Moment.Tensor, layer = p.Moment.Layer, description = p.Moment.ToString() },
        forward_peak_bytes = p.ForwardPeakBytes,
        backward_peak_bytes = p.BackwardPeakBytes,
        recompute_peak_bytes = p.RecomputePeakBytes,
        optimizer_peak_bytes = p.OptimizerPeakBytes,
        pool_peak_bytes = p.PoolPeakBytes,
        reserved_bytes = p.ReservedBytes,
        context_bytes = p.ContextBytes,
        device_bytes = p.DeviceBytes,
        driver_bytes = p.DriverBytes,
        formulas = new
        {
            parameters = MemoryFormulas.ParameterBytes(p.Config, p.Settings),
            gradients = MemoryFormulas.GradientBytes(p.Config),
            optimizer_state = MemoryFormulas.OptimizerBytes(p.Config),
            data = MemoryFormulas.DataBytes(p.Config, p.Settings),
            saved_per_block = Enumerable.Range(0, p.Config.Layers).Select(l => MemoryFormulas.SavedPerBlock(p.Config, p.Settings, p.Settings.Checkpointing?.For(l))),
            saved_outside_blocks = MemoryFormulas.SavedOutsideBlocks(p.Config, p.Settings),
            peak_at_cross_entropy_backward = MemoryFormulas.PeakAtCrossEntropyBackward(p.Config, p.Settings),
        },
        saved_per_layer = Enumerable.Range(0, p.Config.Layers).Select(l => new { layer = l, tensors = p.SavedInLayer(l).Select(Tensor) }),
        forward_per_layer = Enumerable.Range(0, p.Config.Layers).Select(l => new
        {
            layer = l,
            tensors = p.ForwardInLayer(l).Select(x => new { name = x.Tensor.Name, op = x.Tensor.Op, shape = x.Tensor.Shape.Dims, dtype = x.Tensor.DType.Name(), bytes = x.Tensor.Bytes, kept_for_backward = x.Kept }),
        }),
        saved_outside_blocks = p.SavedOutsideBlocks.Select(Tensor),
        live_at_peak = p.LiveAtPeak.Select(Tensor),
    };

    private static object Measured(MemoryPrediction p, MeasuredMemory m) => new
    {
        steps = m.Steps,
        peak_bytes = m.PeakBytes,
        peak_reserved_bytes = m.PeakReservedBytes,
        driver_used_bytes = m.DriverUsedBytes,
        at_peak = ByCategory(m.AtPeak),
        peak_per_category = ByCategory(m.PeakPerCategory),
        forward_peak_bytes = m.ForwardPeakBytes,
        backward_peak_bytes = m.BackwardPeakBytes,
        recompute_peak_bytes = m.RecomputePeakBytes,
        optimizer_peak_bytes = m.OptimizerPeakBytes,
        error_percent = new
        {
            peak = MemoryReportText.ErrorPercent(p.PeakBytes, m.PeakBytes),
            reserved = MemoryReportText.ErrorPercent(p.ReservedBytes, m.PeakReservedBytes),
            driver = m.DriverUsedBytes is long d ? MemoryReportText.ErrorPercent(p.DriverBytes, d) : null,
            at_peak = MemoryCategories.All.ToDictionary(c => c.Label(), c => MemoryReportText.ErrorPercent(p.AtPeak[c], m.AtPeak[c])),
            peak_per_category = MemoryCategories.All.ToDictionary(c => c.Label(), c => MemoryReportText.ErrorPercent(p.PeakPerCategory[c], m.PeakPerCategory[c])),
        },
        peak_moment = m.PeakSetter is { } s ? new { phase = s.Phase.Label(), op = s.Op, layer = s.Layer, shape = s.Shape.Dims } : null,
        live_at_peak = m.LiveAtPeak.Select(a => new
        {
            op = a.Op, layer = a.Layer, phase = a.Phase.Label(), category = a.Category.Label(), shape = a.Shape.Dims, dtype = a.DType.Name(), bytes = a.Bytes,
        }),
    };
}
