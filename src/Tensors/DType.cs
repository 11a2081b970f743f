namespace Memopt.Tensors;

/// <summary>Element types a tensor can hold. bfloat16 is stored as raw 16-bit words (see <see cref="BFloat16"/>).</summary>
public enum DType
{
    F32,
    BF16,
    I32,
}

public static class DTypeInfo
{
    public static int SizeOf(this DType dtype) => dtype switch
    {
        DType.F32 => 4,
        DType.BF16 => 2,
        DType.I32 => 4,
        _ => throw new ArgumentOutOfRangeException(nameof(dtype), dtype, "unknown dtype"),
    };

    public static string Name(this DType dtype) => dtype switch
    {
        DType.F32 => "float32",
        DType.BF16 => "bfloat16",
        DType.I32 => "int32",
        _ => dtype.ToString(),
    };
}
