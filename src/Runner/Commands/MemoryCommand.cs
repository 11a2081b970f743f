using CommandLine;
using Memopt.Model;
using Memopt.Model.Data;
using Memopt.Model.Memory;
using Memopt.Model.Training;
using Memopt.Runner.Memory;
using Memopt.Tensors;

namespace Memopt.Runner.Commands;

[Verb("memory", HelpText = "Where the memory goes: the analytic model per category, tensor and moment; --gpu-memory for the largest batch per technique; --measure to compare with real steps.")]
public sealed class MemoryOptions : TrainOptions
{
    [Option("measure", HelpText = "Run real training steps (--steps, default 3) and print measured vs predicted per category.")]
    public bool Measure { get; set; }

    [Option("gpu-memory", HelpText = "Device memory to size for, e.g. 24GiB: the largest batch per technique; with --measure the predicted batch and the next are run under it.")]
    public string? GpuMemory { get; set; }

    [Option("context-overhead", HelpText = "Driver memory outside the pool (CUDA context). Default: 554514432 B (measured on the H100), 0 for --device cpu.")]
    public string? ContextOverhead { get; set; }

    [Option("json", HelpText = "Write the whole report (exact bytes) as JSON to this path.")]
    public string? Json { get; set; }

    [Option("plot", HelpText = "Write a memory-over-time PNG with the peak marked (the measured steps with --measure, else the predicted step).")]
    public string? Plot { get; set; }

    [Option("top", Default = 20, HelpText = "Tensors alive at the peak to list (largest first).")]
    public int Top { get; set; } = 20;
}

/// <summary>`memopt memory`: the analytic memory model as a sizing calculator, checked against real steps on demand.</summary>
public static class MemoryCommand
{
    private const int DefaultMeasureSteps = 3;

    public static int Run(MemoryOptions o)
    {
        var (config, training) = TrainCommand.Settings(o);
        TraceOption.Validate(o);
        long? gpuMemory = ParseSize("--gpu-memory", o.GpuMemory);
        long? context = ParseSize("--context-overhead", o.ContextOverhead);
        if (o.Top < 0) throw new UserError($"--top must be ≥ 0, got {o.Top}");
        if (o.Trace is not null && !o.Measure) throw new UserError("--trace records real steps: add --measure (the model's predicted timeline goes to --plot)");
        int steps = o.Steps ?? DefaultMeasureSteps;
        DeviceKind kind;
        try { kind = ComputeDevice.ParseKind(o.Device); }
        catch (ArgumentException e) { throw new UserError(e.Message, e); }

        PreparedData? data = o.Measure ? TrainCommand.PrepareData(o, config) : null;
        using var device = o.Measure ? o.OpenDevice() : null;
        using var trace = device is null ? null : TraceOption.Start(o, device);
        var settings = ModelSettings(training, kind, device, context) with { RecordTimeline = o.Plot is not null && !o.Measure };

        MemoryPrediction prediction;
        try { prediction = MemoryModel.Predict(config, settings); }
        catch (ArgumentException e) { throw new UserError(e.Message, e); }
        Console.WriteLine(MemoryReportText.Prediction(prediction));

        List<MaxBatchRow>? maxBatch = null;
        if (gpuMemory is long gpu)
        {
            int window = training.WindowSize ?? Math.Max(1, config.SeqLen / 4);
            maxBatch = Technique.Study(training.Checkpointing, window).Select(t =>
            {
                var s = t.Apply(settings) with { RecordTimeline = false };
                int b = MemoryModel.MaxBatch(config, s, gpu);
                var at = b > 0 ? MemoryModel.Predict(config, s with { BatchSize = b }) : null;
                return new MaxBatchRow(t.Name, b, at?.DeviceBytes ?? 0, at?.PeakBytes ?? 0);
            }).ToList();
            Console.WriteLine(MemoryReportText.MaxBatch(gpu, maxBatch, settings));
        }

        MeasuredMemory? measured = null;
        MaxBatchCheck? check = null;
        if (device is not null)
        {
            Console.WriteLine($"measuring {steps} step{(steps == 1 ? "" : "s")} on {device.Info().Kind}: {device.Name} …");
            try
            {
                measured = MemoryMeasurement.Run(device, config, training with { Steps = steps }, data!, (int)o.Seed, recordTimeline: o.Plot is not null,
                    s => Console.WriteLine($"  step {s.Step}/{s.TotalSteps}: live {ByteSize.Format(s.LiveBytes)}, peak {ByteSize.Format(s.PeakBytes)}"));
            }
            catch (Exception e) when (e is OutOfDeviceMemoryException or DataException or ArgumentException or NonFiniteLossException)
            {
                throw new UserError(e.Message, e);
            }
            TraceOption.Finish(trace);
            Console.WriteLine();
            Console.WriteLine(MemoryReportText.Comparison(prediction, measured));
            Console.WriteLine(MemoryReportText.LiveAtPeak(measured, o.Top));
            if (gpuMemory is long g) check = Check(o, device, g, config, training, settings, data!);
        }
        else Console.WriteLine(MemoryReportText.LiveAtPeak(prediction, o.Top));

        if (o.Plot is not null)
        {
            string technique = MemoryReportText.Technique(settings);
            var series = measured is not null
                ? MemoryPlot.FromTimeline($"measured, {measured.Steps} steps", measured.Timeline)
                : MemoryPlot.FromTimeline("predicted, one step", prediction.Timeline);
            string title = $"{(measured is null ? "Predicted" : "Measured")} tracked memory — batch {settings.BatchSize}, {technique}";
            try
            {
                MemoryPlot.Save(o.Plot, title, measured is null ? "allocation/free event" : "time (ms)", [series]);
            }
            catch (Exception e) when (e is ArgumentException or IOException or UnauthorizedAccessException)
            {
                throw new UserError($"--plot {o.Plot}: {e.Message}", e);
            }
            Console.WriteLine($"plot     {Path.GetFullPath(o.Plot)}");
        }
        if (o.Json is not null)
        {
            try { MemoryReportJson.Write(o.Json, prediction, gpuMemory, maxBatch, measured, check); }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException) { throw new UserError($"--json {o.Json}: {e.Message}", e); }
            Console.WriteLine($"json     {Path.GetFullPath(o.Json)}");
        }
        return check is { Confirmed: false } ? 1 : 0;
    }

    /// <summary>
    /// The memory model's settings for a train configuration (<see cref="MemoryModelSettings.ForTraining"/>): the launch
    /// shape and context of the opened <paramref name="device"/>, else assumed from --device without opening one (the
    /// H100 for cuda and auto, the CPU accelerator with no context for cpu); <paramref name="context"/> overrides the context.
    /// </summary>
    internal static MemoryModelSettings ModelSettings(TrainingOptions training, DeviceKind kind, ComputeDevice? device = null, long? context = null)
    {
        var shape = device is not null ? WorkspaceShape.Of(device) : kind == DeviceKind.Cpu ? WorkspaceShape.CpuAccelerator : WorkspaceShape.H100;
        bool cuda = device?.IsCuda ?? kind != DeviceKind.Cpu;
        return MemoryModelSettings.ForTraining(training, shape, context ?? (cuda ? MemoryModelSettings.H100ContextBytes : 0));
    }

    /// <summary>Runs the predicted largest batch of the chosen technique, and the next batch, with the pool limited to the device memory less the context.</summary>
    private static MaxBatchCheck Check(MemoryOptions o, ComputeDevice device, long gpu, ModelConfig config, TrainingOptions training, MemoryModelSettings settings, PreparedData data)
    {
        long budget = gpu - settings.ContextBytes;
        if (budget <= 0) throw new UserError($"--gpu-memory {ByteSize.Format(gpu)} is not more than the context overhead {ByteSize.Format(settings.ContextBytes)}");
        int batch = MemoryModel.MaxBatch(config, settings with { RecordTimeline = false }, gpu);
        if (batch == 0) throw new UserError($"--gpu-memory {ByteSize.Format(gpu)}: not even batch 1 fits this configuration, nothing to check");
        Console.WriteLine($"checking the predicted largest batch {batch} (and {batch + 1}) under a pool budget of {ByteSize.Format(budget)} …");
        try
        {
            var check = new MaxBatchCheck(MemoryReportText.Technique(settings), gpu, budget, batch,
                MemoryMeasurement.TryBatch(device, budget, config, training, data, (int)o.Seed, batch),
                MemoryMeasurement.TryBatch(device, budget, config, training, data, (int)o.Seed, batch + 1));
            Console.WriteLine(MemoryReportText.Check(check));
            return check;
        }
        catch (DataException e)
        {
            throw new UserError($"max-batch check: {e.Message}", e);
        }
    }

    private static long? ParseSize(string flag, string? text)
    {
        if (text is null) return null;
        try { return ByteSize.Parse(text); }
        catch (FormatException e) { throw new UserError($"{flag} {e.Message}", e); }
    }
}
