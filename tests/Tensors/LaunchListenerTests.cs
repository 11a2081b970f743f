using Memopt.Kernels;
using Memopt.Runner.Bench;
using Memopt.Tensors;
using Memopt.Tests.Harness;

namespace Memopt.Tests.Tensors;

/// <summary>ComputeDevice.LaunchListener: every launch is seen by name while set, none after; the profiler on top of it.</summary>
public class LaunchListenerTests
{
    private sealed class Recorder : IKernelLaunchListener
    {
        public readonly List<string> Events = new();
        public void Launching(ComputeDevice device, string kernel) => Events.Add("+" + kernel);
        public void Launched(ComputeDevice device, string kernel) => Events.Add("-" + kernel);
    }

    [Fact]
    public void A_listener_sees_each_launch_before_and_after_and_nothing_once_removed()
    {
        var dev = TestDevice.Get();
        using var a = Tensor.FromHost(dev, [1f, 2f, 3f], new Shape(3), MemoryCategory.Data, "a");
        using var y = Tensor.Empty(dev, new Shape(3), DType.F32, MemoryCategory.Data, "y");
        Elementwise.Add(a, a, y); // loaded (and its plain launcher cached) before any listener
        var recorder = new Recorder();
        dev.LaunchListener = recorder;
        try
        {
            Elementwise.Add(a, a, y);
            Elementwise.Scale(y, 0.5f, y);
        }
        finally
        {
            dev.LaunchListener = null;
        }
        Elementwise.Add(a, a, y);
        Assert.Equal(["+elementwise.add", "-elementwise.add", "+elementwise.scale", "-elementwise.scale"], recorder.Events);
        Assert.Equal([2f, 4f, 6f], y.ToFloatArray());
    }

    [Fact]
    public void The_profiler_counts_launches_per_kernel_and_phase_and_detaches()
    {
        // Device times need a context built with profiling (stream markers), which only `bench --profile` asks for.
        using var dev = ComputeDevice.Create(TestDevice.Get().IsCuda ? DeviceKind.Cuda : DeviceKind.Cpu, profiling: true);
        using var a = Tensor.FromHost(dev, [1f, 2f], new Shape(2), MemoryCategory.Data, "a");
        using var y = Tensor.Empty(dev, new Shape(2), DType.F32, MemoryCategory.Data, "y");
        StepProfile profile;
        using (var profiler = new LaunchProfiler(dev))
        {
            Assert.Throws<InvalidOperationException>(() => new LaunchProfiler(dev));
            using (dev.Tracker.EnterPhase(Phase.Forward)) Elementwise.Add(a, a, y);
            using (dev.Tracker.EnterPhase(Phase.Backward)) { Elementwise.Add(a, a, y); Elementwise.Add(a, a, y); }
            profile = profiler.Summarize(stepMs: 1000, profiledStepMs: 1000);
        }
        Assert.Null(dev.LaunchListener);
        Assert.Equal(3, profile.Launches);
        var backward = Assert.Single(profile.Kernels, k => k.Phase == "backward");
        Assert.Equal(("elementwise.add", 2), (backward.Kernel, backward.Calls));
        Assert.Equal(1, Assert.Single(profile.Kernels, k => k.Phase == "forward").Calls);
        Assert.All(profile.Kernels, k => Assert.True(k.HostMs > 0 && k.DeviceMs > 0, $"{k}"));
        Assert.Equal(profile.KernelDeviceMs!.Value, profile.PhaseMs.Values.Sum(), 9);
        Assert.Equal(0, profile.Uncovered);
    }

    /// <summary>float32 chain on the device (possibly fused multiply-adds) against float64: it stays near the fixed point 1.</summary>
    private const double BlockerTolerance = 1e-4;

    [Fact]
    public void The_stream_blocker_runs_its_chain_and_stores_the_result()
    {
        var dev = TestDevice.Get();
        using var sink = Tensor.Zeros(dev, new Shape(1), DType.F32, MemoryCategory.Workspace, "sink");
        StreamBlocker.Launch(sink, 1000);
        Assert.Equal(StreamBlocker.Reference.Final(1000), sink.ToFloatArray()[0], BlockerTolerance);
        var e = Assert.Throws<ShapeException>(() => StreamBlocker.Launch(sink, -1));
        Assert.Contains("stream_blocker", e.Message);
    }
}
