namespace Memopt.Tensors;

/// <summary>
/// Thrown when an allocation would pass the memory budget or the driver itself runs out.
/// Carries the breakdown at that moment so the caller can report where the memory went.
/// </summary>
public sealed class OutOfDeviceMemoryException : Exception
{
    public OutOfDeviceMemoryException(long requested, string op, Shape shape, long? budget, long reserved,
        MemoryBreakdown live, bool fromDriver, Exception? inner = null)
        : base(Describe(requested, op, shape, budget, reserved, live, fromDriver), inner)
    {
        Requested = requested; Op = op; Shape = shape; Budget = budget; Reserved = reserved; Live = live; FromDriver = fromDriver;
    }

    public long Requested { get; }
    public string Op { get; }
    public Shape Shape { get; }
    public long? Budget { get; }
    public long Reserved { get; }
    public MemoryBreakdown Live { get; }
    /// <summary>True when the CUDA driver refused the allocation (real OOM) rather than the tracker's budget.</summary>
    public bool FromDriver { get; }

    private static string Describe(long requested, string op, Shape shape, long? budget, long reserved, MemoryBreakdown live, bool fromDriver)
    {
        var limit = fromDriver ? "the device has no free memory left" : $"budget {ByteSize.Format(budget ?? 0)}";
        return $"out of device memory: {op} asked for {ByteSize.Format(requested)} ({shape}); {limit}; " +
               $"reserved {ByteSize.Format(reserved)}; live {live}";
    }
}
