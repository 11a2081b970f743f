using Memopt.Tensors;

namespace Memopt.Tests.Harness;

/// <summary>
/// Tensors that start a given number of elements into their storage: offset 0 is the storage's own start (a pool
/// block, aligned for every wide access), 1 is one element past it (misaligned for 8- and 16-byte accesses). The
/// four-per-access kernels' tests run the same values both ways to compare them with the scalar kernels.
/// </summary>
internal static class OffsetTensor
{
    /// <summary>The values as a tensor of <paramref name="shape"/> at element <paramref name="offset"/> of its storage (the view keeps the storage alive).</summary>
    public static Tensor FromHost(ComputeDevice device, float[] values, Shape shape, int offset, DType dtype, string name = "t")
    {
        using var storage = Tensor.FromHost(device, [.. new float[offset], .. values], new Shape(values.Length + offset), MemoryCategory.Data, name, dtype);
        return storage.View(shape, offset);
    }
}
