using ILGPU;
using ILGPU.Runtime;
using Memopt.Tensors;

namespace Memopt.Kernels;

/// <summary>
/// float32 ⇄ bfloat16 conversion. Both directions call <see cref="BFloat16"/>, the same static methods the host uses,
/// so device and host results are bit-identical by construction (and tested so on every bf16 value).
/// One read and one write per element.
/// </summary>
public static class Convert
{
    public static void ToBf16(Tensor x, Tensor y)
    {
        Check.DType("to_bf16", x, DType.F32);
        Check.DType("to_bf16", y, DType.BF16, "output");
        Check.That(x.Numel == y.Numel, "to_bf16", $"{x.Shape} and {y.Shape} differ in size");
        var k = x.Device.Kernel("convert.to_bf16", acc => acc.LoadStreamKernel<ArrayView<float>, ArrayView<ushort>, long>(ToBf16Kernel));
        k(Launch.Elementwise(x.Device, x.Numel), x.F32, y.BF16, x.Numel);
    }

    public static void ToF32(Tensor x, Tensor y)
    {
        Check.DType("to_f32", x, DType.BF16);
        Check.DType("to_f32", y, DType.F32, "output");
        Check.That(x.Numel == y.Numel, "to_f32", $"{x.Shape} and {y.Shape} differ in size");
        var k = x.Device.Kernel("convert.to_f32", acc => acc.LoadStreamKernel<ArrayView<ushort>, ArrayView<float>, long>(ToF32Kernel));
        k(Launch.Elementwise(x.Device, x.Numel), x.BF16, y.F32, x.Numel);
    }

    private static void ToBf16Kernel(ArrayView<float> x, ArrayView<ushort> y, long n)
    {
        long stride = (long)Grid.DimX * Group.DimX;
        for (long i = Grid.GlobalIndex.X; i < n; i += stride) y[i] = BFloat16.FromFloat(x[i]);
    }

    private static void ToF32Kernel(ArrayView<ushort> x, ArrayView<float> y, long n)
    {
        long stride = (long)Grid.DimX * Group.DimX;
        for (long i = Grid.GlobalIndex.X; i < n; i += stride) y[i] = BFloat16.ToFloat(x[i]);
    }

    public static class Reference
    {
        /// <summary>
        /// Round to nearest bf16, ties to even, computed differently from <see cref="BFloat16.FromFloat"/> (by comparing
        /// distances to the two neighbours in float64) so the test checks the bit trick against arithmetic.
        /// </summary>
        public static ushort ToBf16(float x)
        {
            uint bits = BitConverter.SingleToUInt32Bits(x);
            if (float.IsNaN(x)) return (ushort)((bits >> 16) | 0x40);
            ushort down = (ushort)(bits >> 16);               // truncation: toward zero in magnitude
            if ((bits & 0xFFFF) == 0) return down;
            ushort up = (ushort)(down + 1);                    // next bf16 away from zero (may become Inf)
            // IEEE overflow: past the largest finite bf16, Inf counts as the value 2^128 it would have had.
            double dx = x, dDown = BFloat16.ToFloat(down);
            double dUp = (up & 0x7FFF) == 0x7F80 ? Math.CopySign(Math.Pow(2, 128), dx) : BFloat16.ToFloat(up);
            double toDown = Math.Abs(dx - dDown), toUp = Math.Abs(dUp - dx);
            if (toDown < toUp) return down;
            if (toUp < toDown) return up;
            return (down & 1) == 0 ? down : up;
        }
    }
}
