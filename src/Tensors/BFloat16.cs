using ILGPU;

namespace Memopt.Tensors;

/// <summary>
/// bfloat16 <-> float32 conversion: the top 16 bits of an IEEE float32, rounded to nearest even.
/// The same static methods run on the host and inside ILGPU kernels (ILGPU's Interop maps the bit casts
/// to register moves), so the host reference and the device conversion cannot drift apart.
/// </summary>
public static class BFloat16
{
    /// <summary>Round-to-nearest-even; NaN stays NaN (quiet bit forced so a payload in the low bits is not lost), ±Inf stays ±Inf.</summary>
    public static ushort FromFloat(float value)
    {
        uint bits = Interop.FloatAsInt(value);
        if ((bits & 0x7F80_0000u) == 0x7F80_0000u && (bits & 0x007F_FFFFu) != 0)
            return (ushort)((bits >> 16) | 0x0040u);
        // Adding 0x7FFF plus the lowest kept bit rounds halves toward the even neighbour;
        // a carry out of the mantissa correctly bumps the exponent (and rounds huge values to Inf).
        uint lsb = (bits >> 16) & 1u;
        return (ushort)((bits + 0x7FFFu + lsb) >> 16);
    }

    public static float ToFloat(ushort value) => Interop.IntAsFloat((uint)value << 16);

    /// <summary>Rounds a float to the nearest bfloat16 and back: the value a bf16 store would keep.</summary>
    public static float Round(float value) => ToFloat(FromFloat(value));

    /// <summary>Two bf16 values packed in one 32-bit word, low half first (the operand layout of mma.sync).</summary>
    public static uint Pack(float lo, float hi) => FromFloat(lo) | ((uint)FromFloat(hi) << 16);
}
