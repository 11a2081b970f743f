using CommandLine;
using Memopt.Tensors;

namespace Memopt.Runner.Commands;

[Verb("info", HelpText = "Print the hardware summary: GPU, memory, compute capability, driver, BF16 support, ILGPU version.")]
public sealed class InfoOptions : DeviceOptions { }

public static class InfoCommand
{
    public static int Run(InfoOptions options)
    {
        using var device = options.OpenDevice();
        var i = device.Info();
        Console.WriteLine($"device              {i.Kind}: {i.Name}");
        Console.WriteLine($"memory              {(i.Kind == "cpu" ? "host memory" : ByteSize.Format(i.TotalMemory))}");
        Console.WriteLine($"compute capability  {i.ComputeCapability}");
        Console.WriteLine($"driver              {i.Driver}");
        Console.WriteLine($"bf16 tensor cores   {(i.Bf16TensorCores ? "yes" : "no")}");
        Console.WriteLine($"multiprocessors     {i.Multiprocessors}");
        Console.WriteLine($"shared mem / group  {ByteSize.Format(i.MaxSharedMemoryPerGroup)}");
        Console.WriteLine($"warp size           {i.WarpSize}");
        Console.WriteLine($"ILGPU               {i.IlgpuVersion}");
        Console.WriteLine($"tensor-core GEMM    {TensorCoreLine(device)}");
        if (device.DriverUsedBytes() is long used) Console.WriteLine($"driver used memory  {ByteSize.Format(used)}");
        return 0;
    }

    /// <summary>Which bf16 tensor-core GEMM kernels run here: mma.sync, the 64-deep tile (over 48 KB of shared memory), wgmma.</summary>
    private static string TensorCoreLine(ComputeDevice device)
    {
        if (Kernels.TensorCoreGemm.WhyNotOn(device) is string why) return $"none ({why})";
        string deep = Kernels.TensorCoreGemm.DeepAvailable(device) ? "64-deep tile" : $"no 64-deep tile ({Kernels.TensorCoreGemm.DeepUnavailableBecause(device)})";
        string wgmma = Kernels.TensorCoreGemm.WgmmaAvailable(device) ? "wgmma (sm_90a) for K >= 512"
            : Kernels.TensorCoreGemm.WgmmaUnavailableBecause(device) is string w ? $"no wgmma ({w})" : "no wgmma (needs compute capability 9.0)";
        return $"mma.sync, {deep}, {wgmma}";
    }
}
