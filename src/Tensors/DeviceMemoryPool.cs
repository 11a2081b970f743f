using ILGPU;
using ILGPU.Runtime;
using ILGPU.Runtime.Cuda;

namespace Memopt.Tensors;

/// <summary>
/// Caching allocator over the accelerator. A freed block goes to a free list keyed by its rounded size and is handed
/// to the next request of that size, so a training loop that repeats its shapes stops calling the driver after the
/// first step (cuMemFree synchronizes the device, which would serialize every step).
/// Reserved bytes (live + cached) are reported to the tracker beside live bytes, as PyTorch reports reserved vs allocated.
/// The budget bounds reserved bytes: before refusing, the pool gives its cached blocks back and tries again.
/// </summary>
public sealed class DeviceMemoryPool : IDisposable
{
    private readonly Accelerator _accelerator;
    private readonly MemoryTracker _tracker;
    private readonly Dictionary<long, Stack<MemoryBuffer1D<byte, Stride1D.Dense>>> _free = new();
    private long _reserved;
    private long _cached;

    internal DeviceMemoryPool(Accelerator accelerator, MemoryTracker tracker)
    {
        _accelerator = accelerator;
        _tracker = tracker;
    }

    public long Reserved => _reserved;
    public long Cached => _cached;

    /// <summary>Small blocks round to 512 B, large ones to 2 MiB, bounding waste while keeping the number of distinct sizes small.</summary>
    public static long RoundUp(long bytes)
    {
        long unit = bytes < (1L << 20) ? 512 : 2L << 20;
        return (bytes + unit - 1) / unit * unit;
    }

    internal MemoryBuffer1D<byte, Stride1D.Dense> Rent(long bytes, string op, Shape shape)
    {
        long size = RoundUp(bytes);
        if (_free.TryGetValue(size, out var stack) && stack.Count > 0)
        {
            _cached -= size;
            return stack.Pop();
        }
        if (_tracker.Budget is long budget && _reserved + size > budget)
        {
            ReleaseCached();
            if (_reserved + size > budget)
                throw new OutOfDeviceMemoryException(bytes, op, shape, budget, _reserved, _tracker.Current(), fromDriver: false);
        }
        var block = TryAllocate(size) ?? RetryAfterReleasing(size, bytes, op, shape);
        _reserved += size;
        _tracker.OnReserved(_reserved);
        return block;
    }

    private MemoryBuffer1D<byte, Stride1D.Dense> RetryAfterReleasing(long size, long bytes, string op, Shape shape)
    {
        ReleaseCached();
        try
        {
            return _accelerator.Allocate1D<byte>(size);
        }
        catch (Exception e) when (IsOutOfMemory(e))
        {
            throw new OutOfDeviceMemoryException(bytes, op, shape, _tracker.Budget, _reserved, _tracker.Current(), fromDriver: true, e);
        }
    }

    private MemoryBuffer1D<byte, Stride1D.Dense>? TryAllocate(long size)
    {
        try
        {
            return _accelerator.Allocate1D<byte>(size);
        }
        catch (Exception e) when (IsOutOfMemory(e))
        {
            return null;
        }
    }

    private static bool IsOutOfMemory(Exception e) =>
        e is OutOfMemoryException
        || (e is CudaException ce && ce.Message.Contains("OUT_OF_MEMORY", StringComparison.Ordinal))
        || e.Message.Contains("out of memory", StringComparison.OrdinalIgnoreCase);

    internal void Return(MemoryBuffer1D<byte, Stride1D.Dense> block)
    {
        long size = block.LengthInBytes;
        if (!_free.TryGetValue(size, out var stack)) _free[size] = stack = new Stack<MemoryBuffer1D<byte, Stride1D.Dense>>();
        stack.Push(block);
        _cached += size;
    }

    /// <summary>Gives every cached block back to the driver (torch.cuda.empty_cache()).</summary>
    internal void ReleaseCached()
    {
        foreach (var stack in _free.Values)
            while (stack.Count > 0)
            {
                var b = stack.Pop();
                _reserved -= b.LengthInBytes;
                b.Dispose();
            }
        _cached = 0;
        _tracker.OnReserved(_reserved);
    }

    public void Dispose() => ReleaseCached();
}
