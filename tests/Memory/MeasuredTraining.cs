using Memopt.Kernels;
using Memopt.Model;
using Memopt.Model.Data;
using Memopt.Model.Memory;
using Memopt.Model.Training;
using Memopt.Runner.Memory;
using Memopt.Tensors;
using Memopt.Tests.Model;

namespace Memopt.Tests.Memory;

/// <summary>
/// One private CPU device and one small prepared corpus for a test class: kernels compile once per device (that is
/// most of a small run's time), and the private tracker sees only this class's runs. Between runs every cached pool
/// block is given back and the peaks restart, so each run is measured as if on a fresh device.
/// </summary>
[CollectionDefinition(Name)]
public sealed class MeasuredTrainingCollection : ICollectionFixture<MeasuredTraining>
{
    public const string Name = "memory: one CPU device for the measured runs";
}

public class MeasuredTraining : IDisposable
{
    private readonly string _cache = Directory.CreateTempSubdirectory("memopt-memory").FullName;
    private readonly Lazy<PreparedData> _data;
    private readonly Lazy<PreparedData> _longData;

    public MeasuredTraining() : this(ComputeDevice.Create(DeviceKind.Cpu)) { }

    /// <summary>The same on another CPU device (one this fixture owns and disposes).</summary>
    protected MeasuredTraining(ComputeDevice device)
    {
        Device = device;
        _data = new(() => DataPipeline.Prepare(TrainerTests.SmallCorpus(_cache)));
        _longData = new(() => DataPipeline.Prepare(TrainerTests.SmallCorpus(_cache) with { SeqLen = LongT, VocabSize = 256 }));
    }

    public ComputeDevice Device { get; }
    /// <summary>The synthetic corpus of the trainer tests: BPE 300, T = 16.</summary>
    public PreparedData Data => _data.Value;

    /// <summary>Sequences of <see cref="LongT"/> tokens over the byte-level BPE (vocabulary 256): attention outweighs the logits.</summary>
    public PreparedData LongData => _longData.Value;
    public const int LongT = 64;

    /// <summary>A model that fits <see cref="Data"/> (vocabulary 300, T 16), small enough for the CPU accelerator.</summary>
    public static ModelConfig Small => new() { VocabSize = 300, DModel = 16, Layers = 2, Heads = 2, DFF = 32, SeqLen = 16 };

    /// <summary>Trains <paramref name="options"/> (Steps steps) and reads the tracker at the end of the last step.</summary>
    public MeasuredMemory Train(ModelConfig config, TrainingOptions options, KernelPath path = KernelPath.Auto)
    {
        var data = config.SeqLen == LongT ? LongData : Data;
        Device.ReleaseCachedMemory();
        Device.Tracker.ResetPeaks();
        if (Device.Tracker.Live != 0) throw new InvalidOperationException($"{Device.Tracker.Live} B still live before the run");
        using (path == KernelPath.Auto ? null : Launch.UsePath(path))
            return MemoryMeasurement.Run(Device, config, options, data, seed: 1, recordTimeline: true);
    }

    /// <summary>The model's settings for the same run on this device.</summary>
    public static MemoryModelSettings SettingsFor(TrainingOptions o, KernelPath path = KernelPath.Auto) =>
        MemoryModelSettings.ForTraining(o, WorkspaceShape.CpuAccelerator with { Cooperative = path == KernelPath.Cooperative }, contextBytes: 0)
        with { RecordTimeline = true };

    public void Dispose()
    {
        Device.Dispose();
        Directory.Delete(_cache, recursive: true);
    }
}
