using System.Collections.Concurrent;
using ILGPU;
using ILGPU.Runtime;
using ILGPU.Runtime.CPU;
using ILGPU.Runtime.Cuda;

namespace Memopt.Tensors;

public enum DeviceKind { Auto, Cuda, Cpu }

/// <summary>Hardware facts for `memopt info` and the results files.</summary>
public sealed record DeviceInfo(
    string Kind, string Name, long TotalMemory, string ComputeCapability, string Driver, bool Bf16TensorCores,
    int Multiprocessors, int MaxSharedMemoryPerGroup, int WarpSize, string IlgpuVersion);

/// <summary>
/// One ILGPU context and accelerator, the memory tracker and the caching pool every tensor allocates from,
/// and the cache of compiled kernels (ILGPU compiles a kernel on load; each is loaded once per device).
/// </summary>
public sealed class ComputeDevice : IDisposable
{
    private readonly ConcurrentDictionary<string, Delegate> _kernels = new();
    /// <summary>The launchers handed out while a <see cref="LaunchListener"/> is set (built on first use, kept).</summary>
    private readonly ConcurrentDictionary<string, Delegate> _observedKernels = new();
    private readonly DeviceMemoryPool _pool;

    private ComputeDevice(Context context, Accelerator accelerator)
    {
        Context = context;
        Accelerator = accelerator;
        Tracker = new MemoryTracker();
        _pool = new DeviceMemoryPool(accelerator, Tracker);
    }

    public Context Context { get; }
    public Accelerator Accelerator { get; }
    public MemoryTracker Tracker { get; }
    public bool IsCuda => Accelerator.AcceleratorType == AcceleratorType.Cuda;
    public string Name => Accelerator.Name;
    public long TotalMemory => Accelerator.MemorySize;
    public int MaxGroupSize => Accelerator.MaxNumThreadsPerGroup;
    public int Multiprocessors => Accelerator.NumMultiprocessors;

    /// <summary>How GEMMs with two float32 operands run here (IEEE by default); see <see cref="Tensors.Fp32Matmul"/>.</summary>
    public Fp32Matmul Fp32Matmul { get; set; } = Fp32Matmul.Ieee;
    /// <summary>Bytes the pool holds free for reuse (reserved minus live).</summary>
    public long CachedBytes => _pool.Cached;

    /// <summary>
    /// Opens the device. Auto takes the first CUDA GPU and falls back to ILGPU's CPU accelerator.
    /// The CPU accelerator simulates 4 warps of 4 threads: each simulated thread is an OS thread and a group barrier
    /// is an OS-level rendezvous, so small groups keep CI fast (measured on 2 cores: a 16-thread group runs a
    /// grid-stride elementwise kernel at ~30 ns/element, a 1024-thread group 50x slower). Kernels therefore take
    /// their group size from <see cref="MaxGroupSize"/> and never assume one.
    /// </summary>
    /// <param name="profiling">
    /// Allow stream markers (CUDA events), which the launch profiler times kernels with; off unless asked for, so the
    /// contexts that train and measure are the ones every run uses.
    /// </param>
    public static ComputeDevice Create(DeviceKind kind = DeviceKind.Auto, long? memoryLimit = null, bool profiling = false) =>
        Open(kind, new CPUDevice(CpuThreadsPerWarp, CpuWarpsPerGroup, 1), memoryLimit, profiling);

    /// <summary>The CPU accelerator's groups as <see cref="Create"/> opens it: 4 warps of 4 threads.</summary>
    public const int CpuThreadsPerWarp = 4, CpuWarpsPerGroup = 4;

    /// <summary>
    /// ILGPU's CPU accelerator with groups of <paramref name="warpsPerGroup"/> warps of <paramref name="threadsPerWarp"/>
    /// threads on one multiprocessor, for tests of kernels whose CUDA shapes need bigger groups than <see cref="Create"/>'s
    /// 16 threads (e.g. 8 warps of 32: the SIMT GEMM's 256-thread tiles). Every simulated thread is an OS thread and a
    /// barrier a rendezvous of all of them, so such a device is slow: keep its work small.
    /// </summary>
    public static ComputeDevice CreateCpu(int threadsPerWarp, int warpsPerGroup, long? memoryLimit = null, bool profiling = false)
    {
        if (threadsPerWarp <= 0 || warpsPerGroup <= 0)
            throw new ArgumentOutOfRangeException(nameof(threadsPerWarp), $"a CPU accelerator needs warps of ≥ 1 thread and groups of ≥ 1 warp, got {warpsPerGroup} warps of {threadsPerWarp}");
        return Open(DeviceKind.Cpu, new CPUDevice(threadsPerWarp, warpsPerGroup, 1), memoryLimit, profiling);
    }

    /// <summary>One context with the CUDA backend (unless <paramref name="kind"/> is Cpu) and <paramref name="cpu"/>, and the device on its accelerator.</summary>
    private static ComputeDevice Open(DeviceKind kind, CPUDevice cpu, long? memoryLimit, bool profiling)
    {
        var context = Context.Create(builder =>
        {
            builder.Optimize(OptimizationLevel.O2).EnableAlgorithms();
            if (profiling) builder.Profiling();
            if (kind != DeviceKind.Cpu) builder.Cuda();
            builder.CPU(cpu);
        });
        try
        {
            Accelerator accelerator;
            var gpus = context.GetCudaDevices();
            if (kind == DeviceKind.Cuda && gpus.Count == 0)
                throw new InvalidOperationException("--device cuda: no CUDA GPU found (is the NVIDIA driver installed and a GPU visible?)");
            if (kind != DeviceKind.Cpu && gpus.Count > 0)
                accelerator = gpus[0].CreateCudaAccelerator(context);
            else
                accelerator = context.GetCPUDevice(0).CreateCPUAccelerator(context);
            var device = new ComputeDevice(context, accelerator);
            device.Tracker.Budget = memoryLimit ?? (device.IsCuda ? device.TotalMemory : null);
            return device;
        }
        catch
        {
            context.Dispose();
            throw;
        }
    }

    public static DeviceKind ParseKind(string text) => text.ToLowerInvariant() switch
    {
        "auto" => DeviceKind.Auto,
        "cuda" or "gpu" => DeviceKind.Cuda,
        "cpu" => DeviceKind.Cpu,
        _ => throw new ArgumentException($"--device '{text}': expected auto, cuda or cpu"),
    };

    /// <summary>
    /// Loads a kernel once per device and returns the cached launcher afterwards. While a <see cref="LaunchListener"/>
    /// is set the launcher returned also reports each launch to it; without one this costs one null check.
    /// </summary>
    public TDelegate Kernel<TDelegate>(string key, Func<Accelerator, TDelegate> load) where TDelegate : Delegate
    {
        var launch = (TDelegate)_kernels.GetOrAdd(key, _ => load(Accelerator));
        return LaunchListener is null ? launch : (TDelegate)_observedKernels.GetOrAdd(key, _ => ObservedLauncher.Wrap(this, key, launch));
    }

    /// <summary>
    /// Told about every kernel launch made through <see cref="Kernel{TDelegate}"/> while set (a profiler; null: off).
    /// Launchers fetched before it was set are not observed: kernels fetch theirs right before each launch.
    /// </summary>
    public IKernelLaunchListener? LaunchListener { get; set; }

    internal void NotifyLaunching(string kernel) => LaunchListener?.Launching(this, kernel);
    internal void NotifyLaunched(string kernel) => LaunchListener?.Launched(this, kernel);

    public void Synchronize() => Accelerator.Synchronize();

    internal MemoryBuffer1D<byte, Stride1D.Dense> Rent(long bytes, string op, Shape shape) => _pool.Rent(bytes, op, shape);
    internal void Return(MemoryBuffer1D<byte, Stride1D.Dense> block) => _pool.Return(block);

    /// <summary>Returns cached blocks to the driver, so reserved falls to live.</summary>
    public void ReleaseCachedMemory() => _pool.ReleaseCached();

    /// <summary>Device memory in use according to the CUDA driver (cuMemGetInfo: total − free); null on the CPU accelerator.</summary>
    public long? DriverUsedBytes()
    {
        if (!IsCuda) return null;
        var err = CudaAPI.CurrentAPI.GetMemoryInfo(out long free, out long total);
        return err == CudaError.CUDA_SUCCESS ? total - free : null;
    }

    public DeviceInfo Info()
    {
        string ilgpu = typeof(Context).Assembly.GetName().Version?.ToString() ?? "?";
        if (Accelerator is CudaAccelerator cuda)
        {
            var arch = cuda.Architecture;
            bool bf16 = arch.Major >= 8;
            return new DeviceInfo("cuda", cuda.Name, cuda.MemorySize,
                $"{arch.Major}.{arch.Minor}",
                $"{cuda.DriverVersion.Major}.{cuda.DriverVersion.Minor}", bf16,
                cuda.NumMultiprocessors, cuda.MaxSharedMemoryPerGroup, cuda.WarpSize, ilgpu);
        }
        return new DeviceInfo("cpu", Accelerator.Name, Accelerator.MemorySize, "-", "-", false,
            Accelerator.NumMultiprocessors, Accelerator.MaxSharedMemoryPerGroup, Accelerator.WarpSize, ilgpu);
    }

    public void Dispose()
    {
        _pool.Dispose();
        Accelerator.Dispose();
        Context.Dispose();
    }
}
