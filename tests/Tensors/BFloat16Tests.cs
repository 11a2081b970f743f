using Memopt.Tensors;
using Memopt.Tests.Harness;
using Conv = Memopt.Kernels.Convert;

namespace Memopt.Tests.Tensors;

public class BFloat16Tests
{
    [Fact]
    public void Every_bf16_value_widens_exactly_and_narrows_back_to_itself_on_host_and_device()
    {
        var dev = TestDevice.Get();
        var all = Enumerable.Range(0, 65536).Select(i => (ushort)i).ToArray();
        using var words = Tensor.Empty(dev, new Shape(65536), DType.BF16, MemoryCategory.Data, "bf16.all");
        words.CopyFrom(all);
        using var widened = Tensor.Empty(dev, new Shape(65536), DType.F32, MemoryCategory.Data, "bf16.widened");
        using var narrowed = Tensor.Empty(dev, new Shape(65536), DType.BF16, MemoryCategory.Data, "bf16.narrowed");
        Conv.ToF32(words, widened);
        Conv.ToBf16(widened, narrowed);
        var f = widened.ToFloatArray();
        var back = narrowed.ToBf16Array();
        for (int i = 0; i < 65536; i++)
        {
            uint expectedBits = (uint)i << 16;
            Assert.Equal(expectedBits, BitConverter.SingleToUInt32Bits(f[i]));
            bool nan = (i & 0x7F80) == 0x7F80 && (i & 0x7F) != 0;
            if (nan)
            {
                Assert.True(float.IsNaN(BFloat16.ToFloat(back[i])), $"NaN 0x{i:X4} became 0x{back[i]:X4}");
                Assert.Equal(i & 0x8000, back[i] & 0x8000);
            }
            else
            {
                Assert.Equal((ushort)i, back[i]);
                Assert.Equal((ushort)i, BFloat16.FromFloat(f[i]));
            }
        }
    }

    public static TheoryData<uint> EdgeFloats => new()
    {
        0x00000000, 0x80000000,             // ±0
        0x3F808000, 0x3F818000,             // 1 + half an ulp: tie to even (down), next: tie to even (up)
        0x3F808001, 0x3F807FFF,             // just above / below the tie
        0x7F7FFFFF, 0xFF7FFFFF,             // ±float max: rounds to ±Inf
        0x7F7F7FFF,                         // just below the bf16 overflow threshold: stays finite
        0x7F800000, 0xFF800000,             // ±Inf
        0x7FC00000, 0x7F800001, 0xFFFFFFFF, // quiet NaN, signalling NaN with a low payload, negative NaN
        0x00000001, 0x00008000, 0x00018000, // denormals including ties
        0x007FFFFF, 0x00800000,             // largest denormal, smallest normal
    };

    [Theory]
    [MemberData(nameof(EdgeFloats))]
    public void Edge_floats_round_to_nearest_even_on_host_and_device(uint bits)
    {
        float x = BitConverter.UInt32BitsToSingle(bits);
        ushort expected = Conv.Reference.ToBf16(x);
        ushort host = BFloat16.FromFloat(x);
        var dev = TestDevice.Get();
        using var src = Tensor.FromHost(dev, [x], new Shape(1), MemoryCategory.Data, "edge");
        using var dst = Tensor.Empty(dev, new Shape(1), DType.BF16, MemoryCategory.Data, "edge.bf16");
        Conv.ToBf16(src, dst);
        ushort device = dst.ToBf16Array()[0];
        if (float.IsNaN(x))
        {
            Assert.True(float.IsNaN(BFloat16.ToFloat(host)) && float.IsNaN(BFloat16.ToFloat(device)));
            Assert.Equal(bits >> 31, (uint)host >> 15);
        }
        else
        {
            Assert.Equal(expected, host);
            Assert.Equal(expected, device);
        }
    }

    /// <summary>
    /// Every float32 around every bf16 value that rounding can see: for each of the 65,536 upper halves, the low halves
    /// 0x0001 (just above the value), 0x7FFF (just below the tie), 0x8000 (the tie) and 0x8001 (just above it) —
    /// 262,144 floats covering round-down, ties to even both ways, round-up, carries into the exponent, overflow to Inf
    /// and NaN payloads. Converted by the Convert kernel and by the bf16 store every float kernel uses (<see cref="Memopt.Kernels.FloatView"/>,
    /// here through a scale by 1, which is exact in float32), bit for bit against the arithmetic reference.
    /// </summary>
    [Fact]
    public void Device_conversions_round_every_neighbourhood_like_the_reference()
    {
        var dev = TestDevice.Get();
        ushort[] lows = [0x0001, 0x7FFF, 0x8000, 0x8001];
        var x = new float[65536 * lows.Length];
        for (int hi = 0; hi < 65536; hi++)
            for (int j = 0; j < lows.Length; j++)
                x[hi * lows.Length + j] = BitConverter.UInt32BitsToSingle(((uint)hi << 16) | lows[j]);
        var shape = new Shape(x.Length);
        using var src = Tensor.FromHost(dev, x, shape, MemoryCategory.Data, "neighbourhoods");
        using var converted = Tensor.Empty(dev, shape, DType.BF16, MemoryCategory.Data, "converted");
        using var stored = Tensor.Empty(dev, shape, DType.BF16, MemoryCategory.Data, "stored");
        Conv.ToBf16(src, converted);
        Memopt.Kernels.Elementwise.Scale(src, 1f, stored);
        var byKernel = converted.ToBf16Array();
        var byStore = stored.ToBf16Array();
        for (int i = 0; i < x.Length; i++)
        {
            uint bits = BitConverter.SingleToUInt32Bits(x[i]);
            if (float.IsNaN(x[i]))
            {
                // NaN stays NaN; its sign and payload are not kept: GPU arithmetic returns the canonical NaN 0x7FFFFFFF
                // (seen on the H100 for the scale by 1), and IEEE 754 leaves a NaN result's sign unspecified.
                foreach (var got in new[] { byKernel[i], byStore[i] })
                    if (!float.IsNaN(BFloat16.ToFloat(got))) Assert.Fail($"NaN 0x{bits:X8} became 0x{got:X4}");
                continue;
            }
            ushort want = Conv.Reference.ToBf16(x[i]);
            if (want != byKernel[i]) Assert.Fail($"Convert.ToBf16(0x{bits:X8}) = 0x{byKernel[i]:X4}, reference 0x{want:X4}");
            if (want != byStore[i]) Assert.Fail($"bf16 store of 0x{bits:X8} = 0x{byStore[i]:X4}, reference 0x{want:X4}");
        }
    }

    [Fact]
    public void Float_kernels_widen_every_bf16_value_exactly()
    {
        // The load side of FloatView: each of the 65,536 words read by a kernel (a scale by 1 into float32) is the
        // word in the top half of a float32, NaNs staying NaN (not their sign or payload: GPU arithmetic returns the
        // canonical NaN, as seen on the H100).
        var dev = TestDevice.Get();
        var all = Enumerable.Range(0, 65536).Select(i => (ushort)i).ToArray();
        using var words = Tensor.Empty(dev, new Shape(65536), DType.BF16, MemoryCategory.Data, "words");
        words.CopyFrom(all);
        using var widened = Tensor.Empty(dev, new Shape(65536), DType.F32, MemoryCategory.Data, "widened");
        Memopt.Kernels.Elementwise.Scale(words, 1f, widened);
        var f = widened.ToFloatArray();
        for (int i = 0; i < 65536; i++)
        {
            bool nan = (i & 0x7F80) == 0x7F80 && (i & 0x7F) != 0;
            if (nan) { if (!float.IsNaN(f[i])) Assert.Fail($"0x{i:X4} widened to {f[i]}"); }
            else Assert.Equal((uint)i << 16, BitConverter.SingleToUInt32Bits(f[i]));
        }
    }

    [Fact]
    public void Random_floats_round_like_the_arithmetic_reference()
    {
        var rng = new Random(1234);
        for (int i = 0; i < 200_000; i++)
        {
            float x = BitConverter.UInt32BitsToSingle((uint)rng.NextInt64(0, 1L << 32));
            if (float.IsNaN(x)) continue;
            Assert.Equal(Conv.Reference.ToBf16(x), BFloat16.FromFloat(x));
        }
    }
}
