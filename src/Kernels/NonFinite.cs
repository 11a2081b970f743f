using ILGPU;
using ILGPU.Runtime;
using Memopt.Tensors;

namespace Memopt.Kernels;

/// <summary>
/// Counts the NaN and ±Inf elements of float32 or bfloat16 tensors: the check behind non-finite gradient detection
/// (one count over every parameter gradient per step) and anomaly detection (every op's output and input gradients).
/// An element is non-finite when its exponent bits are all ones (float32 0x7F800000, bfloat16 0x7F80), so the test is
/// exact and, unlike a sum of squares, never flags a large finite value.
/// Memory flow: each thread walks its grid-stride share of one tensor and keeps a private count; only a thread that
/// found something adds it into a single int32 counter (integer atomics: the total is exact and order-free, and the
/// common all-finite case makes no atomic at all). Several tensors add into the same counter, one launch each, and the
/// host reads the counter back once.
/// </summary>
public static class NonFinite
{
    public const string Op = "non_finite";

    /// <summary>Non-finite elements of one tensor (one device read-back).</summary>
    public static long Count(Tensor x) => Count([x]);

    /// <summary>Non-finite elements over all tensors together (one launch per tensor, one device read-back).</summary>
    public static long Count(IReadOnlyList<Tensor> tensors)
    {
        if (tensors.Count == 0) return 0;
        var device = tensors[0].Device;
        foreach (var t in tensors)
        {
            Check.That(t.DType is DType.F32 or DType.BF16, Op, $"tensor {t.Shape} is {t.DType.Name()}, expected float32 or bfloat16");
            Check.SameDevice(Op, tensors[0], t);
        }
        using var counter = Tensor.Zeros(device, new Shape(1), DType.I32, MemoryCategory.Workspace, Op + ":count");
        foreach (var t in tensors)
        {
            if (t.Numel == 0) continue;
            if (t.DType == DType.F32)
            {
                var k = device.Kernel("non_finite.count_f32", acc => acc.LoadStreamKernel<ArrayView<float>, long, ArrayView<int>>(CountF32Kernel));
                k(Launch.Elementwise(device, t.Numel), t.F32, t.Numel, counter.I32);
            }
            else
            {
                var k = device.Kernel("non_finite.count_bf16", acc => acc.LoadStreamKernel<ArrayView<ushort>, long, ArrayView<int>>(CountBf16Kernel));
                k(Launch.Elementwise(device, t.Numel), t.BF16, t.Numel, counter.I32);
            }
        }
        // int32 counter: saturates meaningfully only past 2^31 bad elements, which still reads as "non-finite".
        return (uint)counter.ToIntArray()[0];
    }

    /// <summary>True when any element of any tensor is NaN or ±Inf.</summary>
    public static bool Any(IReadOnlyList<Tensor> tensors) => Count(tensors) > 0;

    private static void CountF32Kernel(ArrayView<float> x, long n, ArrayView<int> count)
    {
        long stride = (long)Grid.DimX * Group.DimX;
        int found = 0;
        for (long i = Grid.GlobalIndex.X; i < n; i += stride)
            if ((Interop.FloatAsInt(x[i]) & 0x7F800000u) == 0x7F800000u) found++;
        if (found != 0) Atomic.Add(ref count[0], found);
    }

    private static void CountBf16Kernel(ArrayView<ushort> x, long n, ArrayView<int> count)
    {
        long stride = (long)Grid.DimX * Group.DimX;
        int found = 0;
        for (long i = Grid.GlobalIndex.X; i < n; i += stride)
            if ((x[i] & 0x7F80) == 0x7F80) found++;
        if (found != 0) Atomic.Add(ref count[0], found);
    }

    public static class Reference
    {
        public static long Count(IEnumerable<float> values) => values.LongCount(v => !float.IsFinite(v));
    }
}
