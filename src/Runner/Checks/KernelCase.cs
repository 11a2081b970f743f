using Memopt.Tensors;

namespace Memopt.Runner.Checks;

/// <summary>
/// One kernel checked against its CPU reference: <see cref="Prepare"/> builds inputs on the device and returns the
/// launch to time and the comparison to make. The check runner times the launch (device-synchronized, warm-up, median)
/// and the reference, and compares the two with the case's tolerance.
/// </summary>
public sealed record KernelCase(string Family, string Name, double Tolerance, Func<ComputeDevice, Random, PreparedCase> Prepare);

/// <param name="Run">the device work to time (launches only; no host copies)</param>
/// <param name="Error">after Run: max|device − reference| / max|reference| (reference computed on the host, timed)</param>
/// <param name="Bytes">bytes the kernel must move at least (for GB/s)</param>
/// <param name="Flops">floating-point operations (for GFLOP/s), 0 if not meaningful</param>
public sealed record PreparedCase(Action Run, Func<double> Error, long Bytes, double Flops, IDisposable Resources, string Size);

public sealed record CaseResult(KernelCase Case, string Size, double Error, double DeviceMs, double ReferenceMs, long Bytes, double Flops)
{
    public bool Passed => Error <= Case.Tolerance;
    public double GBps => Bytes / (DeviceMs * 1e6);
    public double GFlops => Flops / (DeviceMs * 1e6);
}
