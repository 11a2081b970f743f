using System.Globalization;
using System.Text;
using Memopt.Model;
using Memopt.Model.Memory;
using Memopt.Tensors;

namespace Memopt.Runner.Memory;

/// <summary>The largest batch the model predicts for one technique under a device-memory budget.</summary>
public sealed record MaxBatchRow(string Technique, int MaxBatch, long DeviceBytes, long PeakBytes);

/// <summary>The result of running the predicted max batch, and the next batch, under the budget.</summary>
public sealed record MaxBatchCheck(string Technique, long DeviceMemory, long PoolBudget, int Batch, string? BatchError, string? NextBatchError)
{
    /// <summary>The prediction holds when the predicted batch runs and the next one runs out of memory.</summary>
    public bool Confirmed => BatchError is null && NextBatchError is not null;
}

/// <summary>The console text of `memopt memory`: the sizing table, the saved tensors per block, the peak, and measured vs predicted.</summary>
public static class MemoryReportText
{
    private static string B(long bytes) => ByteSize.Format(bytes);
    private static string N(long v) => v.ToString("N0", CultureInfo.InvariantCulture);

    public static string Technique(MemoryModelSettings s)
    {
        var parts = new List<string> { s.Bf16 ? "bf16 activations" : "fp32", s.FlashAttention ? "flash attention" : "naive attention" };
        if (s.WindowSize is int w) parts.Add($"window {w}");
        if (s.Checkpointing is { } c) parts.Add($"checkpointing every {c.Every} ({c.Scope.ToString().ToLowerInvariant()})");
        if (s.GradAccumulation > 1) parts.Add($"{s.GradAccumulation} micro-batches");
        return string.Join(", ", parts);
    }

    public static string Prediction(MemoryPrediction p)
    {
        var s = p.Settings;
        var c = p.Config;
        var sb = new StringBuilder();
        sb.AppendLine($"model      {c}");
        sb.AppendLine($"step       batch {s.BatchSize} × T {s.SeqLen ?? c.SeqLen}; {Technique(s)}; {N(p.ParameterCount)} parameters");
        sb.AppendLine($"device     {(s.Device.IsCuda ? $"CUDA, {s.Device.Multiprocessors} multiprocessors" : s.Device.Cooperative ? "cooperative kernels" : "CPU accelerator (portable kernels)")}; context overhead {B(s.ContextBytes)}");
        sb.AppendLine();
        sb.AppendLine("predicted memory by category (tracked bytes)");
        var t = new TextTable("category", "at the peak", "bytes", "own peak");
        foreach (var cat in MemoryCategories.All)
            t.Row(cat.Label(), B(p.AtPeak[cat]), N(p.AtPeak[cat]), B(p.PeakPerCategory[cat]));
        t.Row("total tracked", B(p.PeakBytes), N(p.PeakBytes), "");
        sb.AppendLine(t.ToString());
        sb.AppendLine($"  pool blocks (rounded)    {B(p.PoolPeakBytes)}   the least --memory-limit that runs this step");
        sb.AppendLine($"  + CUDA context           {B(p.ContextBytes)}");
        sb.AppendLine($"  = device memory needed   {B(p.DeviceBytes)}");
        sb.AppendLine($"  caching pool reserved    {B(p.ReservedBytes)}   (unbounded pool; driver would show {B(p.DriverBytes)})");
        sb.AppendLine($"peak       {p.Moment}");
        sb.AppendLine($"phases     forward peak {B(p.ForwardPeakBytes)}, backward {B(p.BackwardPeakBytes)}" +
                      (p.RecomputePeakBytes > 0 ? $", recompute {B(p.RecomputePeakBytes)}" : "") + $", optimizer {B(p.OptimizerPeakBytes)}");
        sb.AppendLine();
        sb.Append(SavedTensors(p));
        return sb.ToString();
    }

    /// <summary>What each block keeps for backward (blocks with the same list shown once), and what is kept outside the blocks.</summary>
    public static string SavedTensors(MemoryPrediction p)
    {
        var sb = new StringBuilder();
        var groups = Enumerable.Range(0, p.Config.Layers)
            .Select(l => (Layer: l, Tensors: p.SavedInLayer(l)))
            .GroupBy(x => string.Join(";", x.Tensors.Select(tt => $"{tt.Name}:{tt.Bytes}")))
            .ToList();
        foreach (var g in groups)
        {
            var layers = g.Select(x => x.Layer).ToList();
            long total = g.First().Tensors.Sum(tt => tt.Bytes);
            var scope = p.Settings.Checkpointing?.For(layers[0]);
            long formula = MemoryFormulas.SavedPerBlock(p.Config, p.Settings, scope);
            sb.AppendLine($"forward of block{(layers.Count > 1 ? "s" : "")} {Ranges(layers)}{(scope is { } sc ? $" (checkpointed, {sc.ToString().ToLowerInvariant()} scope)" : "")}: " +
                          $"kept for backward {B(total)} each (closed form {B(formula)}{(formula == total ? ", exact" : $", differs by {N(total - formula)} B")})");
            var t = new TextTable("tensor", "op", "category", "shape", "dtype", "bytes", "kept for backward");
            foreach (var (x, kept) in p.ForwardInLayer(layers[0]))
                t.Row(x.Name, x.Op, kept ? x.Category.Label() : "", x.Shape, x.DType.Name(), B(x.Bytes), kept ? "kept" : "freed in the forward");
            sb.AppendLine(t.ToString());
        }
        var outside = p.SavedOutsideBlocks;
        sb.AppendLine($"kept outside the blocks (embedding output, ln_f, logits, cross-entropy): {B(outside.Sum(tt => tt.Bytes))}");
        sb.AppendLine(Tensors(outside, withLayer: false));
        return sb.ToString();
    }

    private static string Tensors(IEnumerable<PredictedTensor> tensors, bool withLayer)
    {
        var t = withLayer ? new TextTable("tensor", "op", "layer", "category", "shape", "dtype", "bytes")
                          : new TextTable("tensor", "op", "category", "shape", "dtype", "bytes");
        foreach (var x in tensors)
        {
            if (withLayer) t.Row(x.Name, x.Op, x.Layer, x.Category.Label(), x.Shape, x.DType.Name(), B(x.Bytes));
            else t.Row(x.Name, x.Op, x.Category.Label(), x.Shape, x.DType.Name(), B(x.Bytes));
        }
        return t.ToString();
    }

    /// <summary>The predicted tensors alive at the peak, largest first.</summary>
    public static string LiveAtPeak(MemoryPrediction p, int top)
    {
        var list = p.LiveAtPeak;
        var sb = new StringBuilder();
        sb.AppendLine($"tensors alive at the predicted peak ({N(list.Count)}; largest {Math.Min(top, list.Count)} shown)");
        sb.Append(Tensors(list.Take(top), withLayer: true));
        return sb.ToString();
    }

    /// <summary>The measured allocations alive at the peak, largest first.</summary>
    public static string LiveAtPeak(MeasuredMemory m, int top)
    {
        var sb = new StringBuilder();
        sb.AppendLine($"tensors alive at the measured peak ({N(m.LiveAtPeak.Count)}; largest {Math.Min(top, m.LiveAtPeak.Count)} shown)");
        var t = new TextTable("op", "layer", "phase", "category", "shape", "dtype", "bytes");
        foreach (var a in m.LiveAtPeak.Take(top))
            t.Row(a.Op, a.Layer, a.Phase.Label(), a.Category.Label(), a.Shape, a.DType.Name(), B(a.Bytes));
        sb.Append(t);
        return sb.ToString();
    }

    public static string Comparison(MemoryPrediction p, MeasuredMemory m)
    {
        var sb = new StringBuilder();
        sb.AppendLine($"measured vs predicted ({m.Steps} real steps; tracked bytes at the peak)");
        var t = new TextTable("category", "predicted", "measured", "error", "own peak predicted", "own peak measured", "error");
        foreach (var c in MemoryCategories.All)
            t.Row(c.Label(), N(p.AtPeak[c]), N(m.AtPeak[c]), Error(p.AtPeak[c], m.AtPeak[c]),
                N(p.PeakPerCategory[c]), N(m.PeakPerCategory[c]), Error(p.PeakPerCategory[c], m.PeakPerCategory[c]));
        t.Row("peak (tracked)", N(p.PeakBytes), N(m.PeakBytes), Error(p.PeakBytes, m.PeakBytes), "", "", "");
        t.Row("forward peak", N(p.ForwardPeakBytes), N(m.ForwardPeakBytes), Error(p.ForwardPeakBytes, m.ForwardPeakBytes), "", "", "");
        t.Row("backward peak", N(p.BackwardPeakBytes), N(m.BackwardPeakBytes), Error(p.BackwardPeakBytes, m.BackwardPeakBytes), "", "", "");
        t.Row("optimizer peak", N(p.OptimizerPeakBytes), N(m.OptimizerPeakBytes), Error(p.OptimizerPeakBytes, m.OptimizerPeakBytes), "", "", "");
        t.Row("pool reserved", N(p.ReservedBytes), N(m.PeakReservedBytes), Error(p.ReservedBytes, m.PeakReservedBytes), "", "", "");
        if (m.DriverUsedBytes is long d)
            t.Row("driver used", N(p.DriverBytes), N(d), Error(p.DriverBytes, d), "", "", "");
        sb.AppendLine(t.ToString());
        if (m.PeakSetter is { } setter)
            sb.AppendLine($"peak moment  measured: {setter.Phase.Label()}, layer {setter.Layer}, {setter.Op} allocating {setter.Shape}; predicted: {p.Moment}");
        return sb.ToString();
    }

    /// <summary>(predicted − measured) / measured in %, "0.00%" when both are 0, "—" when only the prediction is not.</summary>
    public static string Error(long predicted, long measured) =>
        ErrorPercent(predicted, measured) is double e ? e.ToString("+0.00;-0.00;0.00", CultureInfo.InvariantCulture) + "%" : "—";

    public static double? ErrorPercent(long predicted, long measured) =>
        measured == 0 ? (predicted == 0 ? 0 : null) : 100.0 * (predicted - measured) / measured;

    public static string MaxBatch(long deviceMemory, IReadOnlyList<MaxBatchRow> rows, MemoryModelSettings settings)
    {
        var sb = new StringBuilder();
        sb.AppendLine($"largest batch in {B(deviceMemory)} of device memory (pool blocks + {B(settings.ContextBytes)} context; T {settings.SeqLen?.ToString(CultureInfo.InvariantCulture) ?? "of the model"})");
        var t = new TextTable("technique", "max batch", "device memory at that batch", "tracked peak");
        foreach (var r in rows)
            t.Row(r.Technique, r.MaxBatch == 0 ? "0 (batch 1 does not fit)" : N(r.MaxBatch), r.MaxBatch == 0 ? "" : B(r.DeviceBytes), r.MaxBatch == 0 ? "" : B(r.PeakBytes));
        sb.AppendLine(t.ToString());
        return sb.ToString();
    }

    public static string Check(MaxBatchCheck c)
    {
        var sb = new StringBuilder();
        sb.AppendLine($"max-batch check ({c.Technique}): pool budget {B(c.PoolBudget)} = {B(c.DeviceMemory)} − context");
        sb.AppendLine($"  batch {c.Batch}: {(c.BatchError is null ? "ran" : "out of memory — " + c.BatchError)}");
        sb.AppendLine($"  batch {c.Batch + 1}: {(c.NextBatchError is null ? "ran" : "out of memory — " + c.NextBatchError)}");
        sb.AppendLine($"  prediction {(c.Confirmed ? "confirmed: the largest batch that runs is the predicted one" : "NOT confirmed")}");
        return sb.ToString();
    }

    private static string Ranges(IReadOnlyList<int> layers)
    {
        var parts = new List<string>();
        for (int i = 0; i < layers.Count;)
        {
            int j = i;
            while (j + 1 < layers.Count && layers[j + 1] == layers[j] + 1) j++;
            parts.Add(j == i ? $"{layers[i]}" : $"{layers[i]}–{layers[j]}");
            i = j + 1;
        }
        return string.Join(", ", parts);
    }
}
