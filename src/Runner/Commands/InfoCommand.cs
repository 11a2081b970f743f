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
        if (device.DriverUsedBytes() is long used) Console.WriteLine($"driver used memory  {ByteSize.Format(used)}");
        return 0;
    }
}
