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
