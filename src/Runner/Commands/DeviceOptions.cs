using CommandLine;
using Memopt.Tensors;

namespace Memopt.Runner.Commands;

/// <summary>Options every verb that touches the device shares.</summary>
public class DeviceOptions
{
    [Option("device", Default = "auto", HelpText = "auto (first CUDA GPU, else CPU), cuda or cpu.")]
    public string Device { get; set; } = "auto";

    [Option("memory-limit", HelpText = "Budget for device memory, e.g. 24GiB; an allocation past it is an out-of-memory. Default: the device's memory.")]
    public string? MemoryLimit { get; set; }

    public ComputeDevice OpenDevice(bool profiling = false)
    {
        DeviceKind kind;
        long? limit = null;
        try
        {
            kind = ComputeDevice.ParseKind(Device);
            if (MemoryLimit is not null) limit = ByteSize.Parse(MemoryLimit);
        }
        catch (Exception e) when (e is ArgumentException or FormatException)
        {
            throw new UserError(e.Message, e);
        }
        try
        {
            return ComputeDevice.Create(kind, limit, profiling);
        }
        catch (InvalidOperationException e)
        {
            throw new UserError(e.Message, e);
        }
    }
}
