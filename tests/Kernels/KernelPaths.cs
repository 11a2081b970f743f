using Memopt.Kernels;

namespace Memopt.Tests.Kernels;

/// <summary>
/// Runs a check on both implementations of the kernel families that have a portable twin (GEMM, the row reductions,
/// column sums; see <see cref="KernelPath"/>). The suite runs on the CPU accelerator, whose default is the portable
/// path, while CUDA defaults to the cooperative one: each case is checked on both, so neither goes untested in CI.
/// </summary>
internal static class KernelPaths
{
    public static readonly KernelPath[] Both = [KernelPath.Cooperative, KernelPath.Portable];

    /// <summary>Runs <paramref name="check"/> once per path inside a <see cref="Launch.UsePath"/> scope; a failure names the path.</summary>
    public static void ForEach(Action check)
    {
        foreach (var path in Both)
        {
            using var scope = Launch.UsePath(path);
            try
            {
                check();
            }
            catch (Exception e)
            {
                throw new Xunit.Sdk.XunitException($"{path} path: {e.Message}", e);
            }
        }
    }
}
