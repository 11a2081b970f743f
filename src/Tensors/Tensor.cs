using ILGPU;
using ILGPU.Runtime;

namespace Memopt.Tensors;

/// <summary>
/// A block of device memory from the pool, shared by the tensors that view it and returned when the last one lets go.
/// Its tracker entry is freed at the same moment, so the tracker's live bytes are exactly the bytes tensors hold.
/// </summary>
public sealed class Storage
{
    private int _refs = 1;

    internal Storage(ComputeDevice device, MemoryBuffer1D<byte, Stride1D.Dense> block, Allocation allocation)
    {
        Device = device; Block = block; Allocation = allocation;
    }

    public ComputeDevice Device { get; }
    internal MemoryBuffer1D<byte, Stride1D.Dense> Block { get; }
    public Allocation Allocation { get; }
    public bool IsReleased => _refs <= 0;

    internal void Retain()
    {
        if (_refs <= 0) throw new ObjectDisposedException(nameof(Storage), $"storage of {Allocation} was already released");
        _refs++;
    }

    internal void Release()
    {
        if (--_refs == 0)
        {
            Device.Tracker.OnFree(Allocation);
            Device.Return(Block);
        }
    }
}

/// <summary>
/// A contiguous, row-major view of device memory with a shape and a dtype. Every tensor's memory comes from the
/// device's tracked pool: there is no other way to make one. Dispose releases this view's hold on the storage.
/// </summary>
public sealed class Tensor : IDisposable
{
    private bool _disposed;

    private Tensor(Storage storage, Shape shape, DType dtype, long offsetElements)
    {
        Storage = storage; Shape = shape; DType = dtype; Offset = offsetElements;
    }

    public Storage Storage { get; }
    public Shape Shape { get; }
    public DType DType { get; }
    /// <summary>Start of this view inside its storage, in elements.</summary>
    public long Offset { get; }
    public ComputeDevice Device => Storage.Device;
    public long Numel => Shape.Numel;
    public long Bytes => Numel * DType.SizeOf();
    public bool IsDisposed => _disposed;
    public MemoryCategory Category => Storage.Allocation.Category;

    public static Tensor Empty(ComputeDevice device, Shape shape, DType dtype, MemoryCategory category, string op)
    {
        long bytes = shape.Numel * dtype.SizeOf();
        var block = device.Rent(bytes, op, shape);
        var allocation = device.Tracker.OnAllocate(bytes, category, op, shape, dtype);
        return new Tensor(new Storage(device, block, allocation), shape, dtype, 0);
    }

    public static Tensor Zeros(ComputeDevice device, Shape shape, DType dtype, MemoryCategory category, string op)
    {
        var t = Empty(device, shape, dtype, category, op);
        t.Zero();
        return t;
    }

    public static Tensor FromHost(ComputeDevice device, ReadOnlySpan<float> data, Shape shape, MemoryCategory category, string op, DType dtype = DType.F32)
    {
        var t = Empty(device, shape, dtype, category, op);
        t.CopyFrom(data);
        return t;
    }

    public static Tensor FromHost(ComputeDevice device, ReadOnlySpan<int> data, Shape shape, MemoryCategory category, string op)
    {
        var t = Empty(device, shape, DType.I32, category, op);
        t.CopyFrom(data);
        return t;
    }

    /// <summary>Another view of the same storage (a reshape or a contiguous slice); it holds the storage alive on its own.</summary>
    public Tensor View(Shape shape, long offsetElements = 0)
    {
        ThrowIfDisposed();
        if (offsetElements < 0 || offsetElements + shape.Numel > Numel)
            throw new ArgumentException($"view {shape} at offset {offsetElements} does not fit in tensor {Shape}");
        Storage.Retain();
        return new Tensor(Storage, shape, DType, Offset + offsetElements);
    }

    /// <summary>A second handle on this tensor (same shape and storage), for the tape to keep a tensor the caller may dispose.</summary>
    public Tensor Share() => View(Shape);

    /// <summary>The address of the first element in its device's memory (host memory on the CPU accelerator): what
    /// alignment checks and kernels that take raw device pointers use.</summary>
    public ulong Address
    {
        get
        {
            var view = (IContiguousArrayView)Raw;
            return (ulong)(view.Buffer.NativePtr.ToInt64() + view.IndexInBytes);
        }
    }

    public ArrayView<byte> Raw
    {
        get
        {
            ThrowIfDisposed();
            int size = DType.SizeOf();
            return ((ArrayView<byte>)Storage.Block.View).SubView(Offset * size, Numel * size);
        }
    }

    public ArrayView<float> F32 => Typed<float>(DType.F32);
    public ArrayView<ushort> BF16 => Typed<ushort>(DType.BF16);
    public ArrayView<int> I32 => Typed<int>(DType.I32);

    private ArrayView<T> Typed<T>(DType expected) where T : unmanaged
    {
        if (DType != expected)
            throw new InvalidOperationException($"tensor {Shape} is {DType.Name()}, not {expected.Name()}");
        return Raw.Cast<T>();
    }

    public void Zero() => Raw.MemSetToZero();

    public void CopyFrom(ReadOnlySpan<float> data)
    {
        CheckLength(data.Length);
        switch (DType)
        {
            case DType.F32:
                CopyIn(F32, data);
                break;
            case DType.BF16:
                var words = new ushort[data.Length];
                for (int i = 0; i < words.Length; i++) words[i] = BFloat16.FromFloat(data[i]);
                BF16.CopyFromCPU(words);
                break;
            default:
                throw new InvalidOperationException($"cannot copy float data into a {DType.Name()} tensor {Shape}");
        }
    }

    public void CopyFrom(ReadOnlySpan<int> data)
    {
        CheckLength(data.Length);
        CopyIn(I32, data);
    }

    /// <summary>Copies raw bfloat16 words into a bf16 tensor.</summary>
    public void CopyFrom(ReadOnlySpan<ushort> words)
    {
        CheckLength(words.Length);
        CopyIn(BF16, words);
    }

    public void CopyFromRaw(ReadOnlySpan<byte> bytes)
    {
        if (bytes.Length != Bytes) throw new ArgumentException($"tensor {Shape} {DType.Name()} holds {Bytes} bytes, got {bytes.Length}");
        CopyIn(Raw, bytes);
    }

    /// <summary>Host → device straight from the span: batches are copied every step, so no intermediate array.</summary>
    private void CopyIn<T>(ArrayView<T> view, ReadOnlySpan<T> data) where T : unmanaged =>
        ((ArrayView1D<T, Stride1D.Dense>)view).CopyFromCPU(Device.Accelerator.DefaultStream, data);

    /// <summary>Copies to the host as float32 (bf16 widened exactly; int32 converted).</summary>
    public float[] ToFloatArray()
    {
        switch (DType)
        {
            case DType.F32:
                return F32.GetAsArray();
            case DType.BF16:
                var words = BF16.GetAsArray();
                var result = new float[words.Length];
                for (int i = 0; i < words.Length; i++) result[i] = BFloat16.ToFloat(words[i]);
                return result;
            default:
                return Array.ConvertAll(I32.GetAsArray(), v => (float)v);
        }
    }

    public int[] ToIntArray() => I32.GetAsArray();
    public ushort[] ToBf16Array() => BF16.GetAsArray();
    public byte[] ToRawArray() => Raw.GetAsArray();

    private void CheckLength(int length)
    {
        if (length != Numel) throw new ArgumentException($"tensor {Shape} has {Numel} elements, the host data has {length}");
    }

    public void ThrowIfDisposed()
    {
        if (_disposed || Storage.IsReleased)
            throw new ObjectDisposedException(nameof(Tensor), $"tensor {Shape} ({Storage.Allocation.Op}) was released");
    }

    public void Dispose()
    {
        if (_disposed) return;
        _disposed = true;
        Storage.Release();
    }

    public override string ToString() => $"Tensor{Shape} {DType.Name()} {Category.Label()} ({Storage.Allocation.Op})";
}
