using Memopt.Tensors;

namespace Memopt.Tests.Harness;

/// <summary>
/// The device the suite runs on: the CPU accelerator by default (CI has no GPU), or the one named by
/// MEMOPT_TEST_DEVICE=cuda|cpu|auto, so the same suite checks every kernel on the GPU host.
/// One device for the whole run: kernels compile once per device, and that dominates a small test's time.
/// </summary>
public static class TestDevice
{
    private static readonly Lazy<ComputeDevice> Shared = new(() =>
        ComputeDevice.Create(ComputeDevice.ParseKind(Environment.GetEnvironmentVariable("MEMOPT_TEST_DEVICE") ?? "cpu")));

    public static ComputeDevice Get() => Shared.Value;
}
