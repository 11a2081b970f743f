using System.Diagnostics;
using ILGPU.Runtime;
using Memopt.Kernels;
using Memopt.Tensors;

namespace Memopt.Runner.Bench;

/// <summary>One kernel in one phase of a profiled step: launches and their summed times.</summary>
/// <param name="DeviceMs">Between stream markers (CUDA events) around each launch: the kernel's own time on the device;
/// null where the device has no markers.</param>
/// <param name="HostMs">Host clock around the launch calls alone (the device busy meanwhile): what issuing them costs.</param>
/// <param name="PercentOfStep">DeviceMs (else HostMs) as a percentage of the unprofiled step's median time.</param>
public sealed record KernelTime(string Kernel, string Phase, int Calls, double? DeviceMs, double HostMs, double PercentOfStep)
{
    public double Ms => DeviceMs ?? HostMs;
}

/// <summary>
/// Where one training step's time goes, kernel by kernel. <see cref="StepMs"/> is the unprofiled median step; the
/// profiled step (<see cref="ProfiledStepMs"/>) is slower because every launch runs alone. <see cref="KernelMs"/>
/// against <see cref="StepMs"/>: the rest of the step is not kernel time (launch gaps, host work, copies and memsets,
/// read-backs). <see cref="LaunchHostMs"/>: the host's time inside the launch calls; when it nears the kernel time the
/// step is bound by issuing launches. <see cref="Uncovered"/>: launches whose call outlasted the stream blocker, so
/// their device time may include part of the call (the blocker is lengthened after each).
/// </summary>
public sealed record StepProfile(
    double StepMs, double ProfiledStepMs, int Launches, double KernelMs, double? KernelDeviceMs, double LaunchHostMs, int Uncovered,
    IReadOnlyDictionary<string, double> PhaseMs, IReadOnlyList<KernelTime> Kernels);

/// <summary>
/// Times every kernel launched on a device while it is attached (it is the device's
/// <see cref="ComputeDevice.LaunchListener"/> until disposed). Around each launch: synchronize the device; on CUDA queue
/// a <see cref="StreamBlocker"/> (≈100 µs, calibrated) so the stream stays busy while the host submits; record a
/// stream marker; the launch (host clock around the call); a second marker; synchronize. The markers' difference is
/// the kernel's device time without the host's launch cost; the host clock gives that cost. Launches are attributed to
/// the kernel's key and the memory tracker's phase (forward, backward, recompute, optimizer). Work that is not a kernel
/// launch (host-to-device copies, memsets, read-backs) is not seen: with launch gaps, it is what separates the kernel
/// sum from the step time. The blocker's one-float sink is a tracked 4-byte tensor while the profiler is attached.
/// </summary>
public sealed class LaunchProfiler : IKernelLaunchListener, IDisposable
{
    /// <summary>Blocker length: longer than a launch call plus a marker (a few to tens of µs), short against a step.</summary>
    private const double BlockerTargetUs = 100;
    private readonly ComputeDevice _device;
    private readonly bool _markers;
    private readonly Tensor? _sink;
    private readonly Stopwatch _call = new();
    private readonly Stopwatch _sinceBlocker = new();
    private readonly Dictionary<(string Kernel, Phase Phase), (int Calls, double Device, double Host)> _times = new();
    private int _blockerIterations;
    private double _blockerUs;
    private ProfilingMarker? _start;
    private Phase _phase;
    private bool _blocking;
    private bool _attached;

    public LaunchProfiler(ComputeDevice device)
    {
        if (device.LaunchListener is not null) throw new InvalidOperationException("another launch listener is attached to this device");
        _device = device;
        _markers = device.Context.Properties.EnableProfiling;
        if (_markers && device.IsCuda)
        {
            _sink = Tensor.Zeros(device, new Shape(1), DType.F32, MemoryCategory.Workspace, "profiler.blocker_sink");
            Calibrate();
        }
        device.Synchronize();
        device.LaunchListener = this;
        _attached = true;
    }

    public int Launches { get; private set; }
    public int Uncovered { get; private set; }

    /// <summary>Sizes the blocker to <see cref="BlockerTargetUs"/> from one timed run of a known length.</summary>
    private void Calibrate()
    {
        const int probe = 1 << 14;
        StreamBlocker.Launch(_sink!, probe); // compiles
        _device.Synchronize();
        using var a = _device.Accelerator.DefaultStream.AddProfilingMarker();
        StreamBlocker.Launch(_sink!, probe);
        using var b = _device.Accelerator.DefaultStream.AddProfilingMarker();
        double us = Math.Max(1e-3, b.MeasureFrom(a).TotalMilliseconds * 1000);
        _blockerIterations = (int)Math.Clamp(probe * BlockerTargetUs / us, 1024, 1 << 28);
        _blockerUs = us * _blockerIterations / probe;
    }

    public void Launching(ComputeDevice device, string kernel)
    {
        if (_blocking) return;
        device.Synchronize();
        _phase = device.Tracker.Phase;
        if (_sink is not null)
        {
            _blocking = true;
            StreamBlocker.Launch(_sink, _blockerIterations);
            _blocking = false;
            _sinceBlocker.Restart();
        }
        _start = _markers ? device.Accelerator.DefaultStream.AddProfilingMarker() : null;
        _call.Restart();
    }

    public void Launched(ComputeDevice device, string kernel)
    {
        if (_blocking) return;
        double host = _call.Elapsed.TotalMilliseconds;
        using var end = _markers ? device.Accelerator.DefaultStream.AddProfilingMarker() : null;
        if (_sink is not null && _sinceBlocker.Elapsed.TotalMilliseconds * 1000 > 0.8 * _blockerUs)
        {
            // The host may have queued the kernel after the blocker ended: its device time may hold part of the call.
            Uncovered++;
            _blockerIterations = (int)Math.Min(2L * _blockerIterations, 1 << 28);
            _blockerUs *= 2;
        }
        device.Synchronize();
        double onDevice = end is not null && _start is not null ? end.MeasureFrom(_start).TotalMilliseconds : double.NaN;
        _start?.Dispose();
        _start = null;
        var key = (kernel, _phase);
        var (calls, d, h) = _times.GetValueOrDefault(key);
        _times[key] = (calls + 1, d + onDevice, h + host);
        Launches++;
    }

    /// <summary>The launches seen so far, per kernel and phase, largest first, against an unprofiled step of <paramref name="stepMs"/>.</summary>
    public StepProfile Summarize(double stepMs, double profiledStepMs)
    {
        var kernels = _times
            .Select(kv => new KernelTime(kv.Key.Kernel, kv.Key.Phase.Label(), kv.Value.Calls, _markers ? kv.Value.Device : null, kv.Value.Host,
                100 * (_markers ? kv.Value.Device : kv.Value.Host) / stepMs))
            .OrderByDescending(k => k.Ms)
            .ToList();
        var phases = kernels.GroupBy(k => k.Phase).ToDictionary(g => g.Key, g => g.Sum(k => k.Ms));
        double? device = _markers ? kernels.Sum(k => k.DeviceMs!.Value) : null;
        return new StepProfile(stepMs, profiledStepMs, Launches, kernels.Sum(k => k.Ms), device, kernels.Sum(k => k.HostMs), Uncovered, phases, kernels);
    }

    public void Dispose()
    {
        if (!_attached) return;
        _attached = false;
        _start?.Dispose();
        if (ReferenceEquals(_device.LaunchListener, this)) _device.LaunchListener = null;
        _sink?.Dispose();
    }
}
