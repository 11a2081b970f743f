using Memopt.Tensors;

namespace Memopt.Tests.Harness;

/// <summary>
/// Counts a device's kernel launches by kernel key while alive (it is the device's <see cref="ComputeDevice.LaunchListener"/>
/// until disposed). The suite runs its test classes one at a time, so the counts are this test's own.
/// </summary>
internal sealed class LaunchCounter : IKernelLaunchListener, IDisposable
{
    private readonly ComputeDevice _device;
    private readonly Dictionary<string, int> _counts = new();

    public LaunchCounter(ComputeDevice device)
    {
        if (device.LaunchListener is not null) throw new InvalidOperationException("the device already has a launch listener");
        _device = device;
        device.LaunchListener = this;
    }

    /// <summary>Launches of <paramref name="kernel"/> so far.</summary>
    public int this[string kernel] => _counts.GetValueOrDefault(kernel);

    /// <summary>The kernel keys launched so far.</summary>
    public IEnumerable<string> Keys => _counts.Keys;

    /// <summary>All launches so far.</summary>
    public int Total => _counts.Values.Sum();

    public void Launching(ComputeDevice device, string kernel) => _counts[kernel] = this[kernel] + 1;
    public void Launched(ComputeDevice device, string kernel) { }

    public void Dispose() => _device.LaunchListener = null;
}
