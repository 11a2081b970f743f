using ILGPU;
using ILGPU.Runtime;
using Memopt.Tensors;

namespace Memopt.Kernels;

/// <summary>
/// Launch shapes shared by every kernel family. Kernels are written for any group size: they read
/// Grid/Group indices once into locals (each read is a thread-static lookup on the CPU accelerator) and
/// loop grid-stride, so one launch shape serves a 16-thread CPU group and a 256-thread CUDA group.
/// </summary>
public static class Launch
{
    /// <summary>The group size to use: the preferred one, capped by what the device allows.</summary>
    public static int GroupSize(ComputeDevice device, int preferred = 256) => Math.Min(preferred, device.MaxGroupSize);

    /// <summary>A grid-stride launch over <paramref name="work"/> independent items.</summary>
    public static KernelConfig Elementwise(ComputeDevice device, long work, int preferredGroup = 256)
    {
        if (work <= 0) throw new ArgumentOutOfRangeException(nameof(work), work, "a kernel needs at least one item of work");
        int group = GroupSize(device, preferredGroup);
        // Enough groups to fill the GPU several times over; on the CPU one group per simulated multiprocessor.
        long maxGroups = device.IsCuda ? device.Multiprocessors * 32L : Math.Max(1, device.Multiprocessors);
        long groups = Math.Clamp((work + group - 1) / group, 1, maxGroups);
        return new KernelConfig((int)groups, group);
    }

    /// <summary>One group per row (reductions over a row: softmax, LayerNorm, cross-entropy).</summary>
    public static KernelConfig PerRow(ComputeDevice device, long rows, int preferredGroup = 256)
    {
        if (rows <= 0 || rows > int.MaxValue) throw new ArgumentOutOfRangeException(nameof(rows), rows, "row count must be in 1..2^31-1");
        return new KernelConfig((int)rows, GroupSize(device, preferredGroup));
    }
}
