using ILGPU;
using ILGPU.Runtime;
using Memopt.Tensors;

namespace Memopt.Kernels;

/// <summary>
/// Which of a kernel family's two implementations runs. Families whose fast CUDA form needs groups that cooperate
/// (shared-memory tiles, group barriers, group reductions: GEMM, one-group-per-row reductions, column sums) also
/// have a portable twin in which every thread works alone (a register block of a GEMM, a whole row, a whole column).
/// </summary>
public enum KernelPath
{
    /// <summary>Cooperative on CUDA, portable elsewhere (the CPU accelerator).</summary>
    Auto,
    /// <summary>Groups cooperate through shared memory, barriers and group reductions: the CUDA form.</summary>
    Cooperative,
    /// <summary>
    /// No barriers, no group reductions, few groups: the CPU accelerator's form. There every simulated thread is an OS
    /// thread, each group of a grid costs ~0.1–0.2 ms to schedule and each barrier or group reduction is an OS-level
    /// rendezvous of ~0.3–1 ms (measured on 2 cores), so one group per row made LayerNorm, softmax and cross-entropy
    /// 50–100x slower than one thread per row, and the tiled GEMM's two barriers per K slice dominated its time.
    /// </summary>
    Portable,
}

/// <summary>
/// Launch shapes shared by every kernel family. Kernels are written for any group size: they read
/// Grid/Group indices once into locals (each read is a thread-static lookup on the CPU accelerator) and
/// loop grid-stride, so one launch shape serves a 16-thread CPU group and a 256-thread CUDA group.
/// </summary>
public static class Launch
{
    private static readonly LaunchOverride<KernelPath> PathOverride = new();

    /// <summary>The group size to use: the preferred one, capped by what the device allows.</summary>
    public static int GroupSize(ComputeDevice device, int preferred = 256) => Math.Min(preferred, device.MaxGroupSize);

    /// <summary>
    /// True when kernel families with two implementations should run the cooperative one on this device: on CUDA,
    /// unless a <see cref="UsePath"/> scope says otherwise.
    /// </summary>
    public static bool Cooperative(ComputeDevice device) => PathOverride.Value switch
    {
        KernelPath.Cooperative => true,
        KernelPath.Portable => false,
        _ => device.IsCuda,
    };

    /// <summary>
    /// Forces <paramref name="path"/> for the kernels launched on this logical thread of execution until the returned
    /// scope is disposed (an AsyncLocal, so concurrently running tests do not see each other's choice). Tests use it
    /// to run every property on both implementations on the CPU accelerator.
    /// </summary>
    public static IDisposable UsePath(KernelPath path) => PathOverride.Use(path);

    /// <summary>A grid-stride launch over <paramref name="work"/> independent items.</summary>
    public static KernelConfig Elementwise(ComputeDevice device, long work, int preferredGroup = 256)
    {
        if (work <= 0) throw new ArgumentOutOfRangeException(nameof(work), work, "a kernel needs at least one item of work");
        int group = GroupSize(device, preferredGroup);
        return new KernelConfig((int)Math.Clamp((work + group - 1) / group, 1, MaxGroups(device)), group);
    }

    /// <summary>A grid-stride launch's cap: enough groups to fill the GPU several times over; on the CPU one group per simulated multiprocessor.</summary>
    private static long MaxGroups(ComputeDevice device) => device.IsCuda ? device.Multiprocessors * 32L : Math.Max(1, device.Multiprocessors);

    /// <summary>One group per row (reductions over a row: softmax, LayerNorm, cross-entropy).</summary>
    public static KernelConfig PerRow(ComputeDevice device, long rows, int preferredGroup = 256)
    {
        if (rows <= 0 || rows > int.MaxValue) throw new ArgumentOutOfRangeException(nameof(rows), rows, "row count must be in 1..2^31-1");
        return new KernelConfig((int)rows, GroupSize(device, preferredGroup));
    }

    /// <summary>
    /// One group per row sized to the row: a power of two ≥ <paramref name="cols"/>/2 in 32..256, so each thread
    /// handles ~2 elements of a short row and groups stay full-width for long ones.
    /// </summary>
    public static KernelConfig Row(ComputeDevice device, long rows, int cols)
    {
        int preferred = 32;
        while (preferred < 256 && preferred * 2 < cols) preferred *= 2;
        return PerRow(device, rows, preferred);
    }

    /// <summary>
    /// One warp per row, grid-stride over rows: groups of whole warps (at most 256 threads), as many groups as rows
    /// need up to <see cref="MaxGroups"/>. Kernels launched with it take warp w = group·(DimX/WarpSize) +
    /// IdxX/WarpSize and loop <c>for (row = w; row &lt; rows; row += DimX/WarpSize·GridDimX)</c>, so every lane of a
    /// warp is on the same row (their shuffles stay uniform).
    /// </summary>
    public static KernelConfig WarpPerRow(ComputeDevice device, long rows)
    {
        if (rows <= 0 || rows > int.MaxValue) throw new ArgumentOutOfRangeException(nameof(rows), rows, "row count must be in 1..2^31-1");
        int warp = device.Accelerator.WarpSize;
        int group = Math.Max(warp, GroupSize(device) / warp * warp), warpsPerGroup = group / warp;
        return new KernelConfig((int)Math.Clamp((rows + warpsPerGroup - 1) / warpsPerGroup, 1, MaxGroups(device)), group);
    }

    /// <summary>
    /// The portable twin of <see cref="Row"/>: one thread per row, grid-stride over rows (one group on the CPU
    /// accelerator). Kernels launched with it must loop <c>for (row = Grid.GlobalIndex.X; row &lt; rows; row += stride)</c>.
    /// </summary>
    public static KernelConfig ThreadPerRow(ComputeDevice device, long rows)
    {
        if (rows <= 0 || rows > int.MaxValue) throw new ArgumentOutOfRangeException(nameof(rows), rows, "row count must be in 1..2^31-1");
        return Elementwise(device, rows);
    }

    /// <summary>
    /// One group whose first thread does all the work (a serial sum of a few partials in a fixed order): no barrier,
    /// no group reduction. Kernels launched with it return at once on every thread but global thread 0.
    /// </summary>
    public static KernelConfig SingleThread(ComputeDevice device) => new(1, GroupSize(device, 32));
}
