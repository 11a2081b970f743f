using System.Diagnostics;
using ILGPU.Runtime;
using Memopt.Tensors;

namespace Memopt.Runner.Bench;

/// <summary>One kernel in one phase of a profiled step: launches, their summed times, and the share of the unprofiled step.</summary>
/// <param name="WallMs">Host clock from just after the synchronization before the launch to just after the one after it:
/// the launch call, the kernel, and one synchronization round trip.</param>
/// <param name="DeviceMs">Between stream markers (CUDA events) recorded right before and right after the launch: the
/// kernel's own time on the device; null where the device has no markers.</param>
/// <param name="PercentOfStep">DeviceMs (else WallMs) as a percentage of the unprofiled step's median time.</param>
public sealed record KernelTime(string Kernel, string Phase, int Calls, double WallMs, double? DeviceMs, double PercentOfStep);

/// <summary>
/// Where one training step's time goes, kernel by kernel. <see cref="StepMs"/> is the unprofiled median step; the
/// profiled step (<see cref="ProfiledStepMs"/>) is slower because every launch is synchronized on both sides.
/// <see cref="KernelDeviceMs"/> (else <see cref="KernelWallMs"/>) against <see cref="StepMs"/>: the rest of the step
/// is not kernel time (launch gaps, host work, copies and memsets, the loss read-back).
/// </summary>
public sealed record StepProfile(
    double StepMs, double ProfiledStepMs, int Launches, double KernelWallMs, double? KernelDeviceMs,
    IReadOnlyDictionary<string, double> PhaseMs, IReadOnlyList<KernelTime> Kernels)
{
    /// <summary>Kernel time as the profile counts it: device time where measured, else wall time.</summary>
    public double KernelMs => KernelDeviceMs ?? KernelWallMs;
}

/// <summary>
/// Times every kernel launched on a device while it is attached (it is the device's
/// <see cref="ComputeDevice.LaunchListener"/> until disposed): it synchronizes the device before and after each launch,
/// so each kernel runs alone, and reads the host clock and, where the context allows stream markers, the device's
/// own clock around it. Launches are attributed to the kernel's key and to the memory tracker's phase at launch
/// (forward, backward, recompute, optimizer). Work that is not a kernel launch (host-to-device copies, memsets,
/// read-backs) is not seen: it is what separates the kernel sum from the step time.
/// </summary>
public sealed class LaunchProfiler : IKernelLaunchListener, IDisposable
{
    private readonly ComputeDevice _device;
    private readonly bool _markers;
    private readonly Stopwatch _clock = new();
    private readonly Dictionary<(string Kernel, Phase Phase), (int Calls, double Wall, double Device)> _times = new();
    private ProfilingMarker? _start;
    private Phase _phase;
    private bool _attached;

    public LaunchProfiler(ComputeDevice device)
    {
        if (device.LaunchListener is not null) throw new InvalidOperationException("another launch listener is attached to this device");
        _device = device;
        _markers = device.Context.Properties.EnableProfiling;
        device.Synchronize();
        device.LaunchListener = this;
        _attached = true;
    }

    public int Launches { get; private set; }

    public void Launching(ComputeDevice device, string kernel)
    {
        device.Synchronize();
        _phase = device.Tracker.Phase;
        _clock.Restart();
        _start = _markers ? device.Accelerator.DefaultStream.AddProfilingMarker() : null;
    }

    public void Launched(ComputeDevice device, string kernel)
    {
        using var end = _markers ? device.Accelerator.DefaultStream.AddProfilingMarker() : null;
        device.Synchronize();
        double wall = _clock.Elapsed.TotalMilliseconds;
        double onDevice = end is not null && _start is not null ? end.MeasureFrom(_start).TotalMilliseconds : double.NaN;
        _start?.Dispose();
        _start = null;
        var key = (kernel, _phase);
        var (calls, w, d) = _times.GetValueOrDefault(key);
        _times[key] = (calls + 1, w + wall, d + onDevice);
        Launches++;
    }

    /// <summary>The launches seen so far, per kernel and phase, largest first, against an unprofiled step of <paramref name="stepMs"/>.</summary>
    public StepProfile Summarize(double stepMs, double profiledStepMs)
    {
        double? Device(double d) => _markers ? d : null;
        var kernels = _times
            .Select(kv => new KernelTime(kv.Key.Kernel, kv.Key.Phase.Label(), kv.Value.Calls, kv.Value.Wall, Device(kv.Value.Device),
                100 * (_markers ? kv.Value.Device : kv.Value.Wall) / stepMs))
            .OrderByDescending(k => k.DeviceMs ?? k.WallMs)
            .ToList();
        var phases = kernels.GroupBy(k => k.Phase).ToDictionary(g => g.Key, g => g.Sum(k => k.DeviceMs ?? k.WallMs));
        return new StepProfile(stepMs, profiledStepMs, Launches, kernels.Sum(k => k.WallMs),
            _markers ? kernels.Sum(k => k.DeviceMs!.Value) : null, phases, kernels);
    }

    public void Dispose()
    {
        if (!_attached) return;
        _attached = false;
        _start?.Dispose();
        if (ReferenceEquals(_device.LaunchListener, this)) _device.LaunchListener = null;
    }
}
