using Memopt.Tensors;

namespace Memopt.Kernels;

/// <summary>Argument checks at the op boundary: each failure names the op and the shapes involved.</summary>
public static class Check
{
    public static void SameShape(string op, Tensor a, Tensor b)
    {
        if (!a.Shape.Equals(b.Shape)) throw new ShapeException(op, $"shapes differ: {a.Shape} vs {b.Shape}");
    }

    public static void DType(string op, Tensor t, Tensors.DType expected, string role = "input")
    {
        if (t.DType != expected) throw new ShapeException(op, $"{role} {t.Shape} is {t.DType.Name()}, expected {expected.Name()}");
    }

    /// <summary>A floating-point tensor: float32 or bfloat16 (what the float kernels take, through <see cref="FloatView"/>).</summary>
    public static void Float(string op, Tensor t, string role = "input")
    {
        if (t.DType is not (Tensors.DType.F32 or Tensors.DType.BF16))
            throw new ShapeException(op, $"{role} {t.Shape} is {t.DType.Name()}, expected float32 or bfloat16");
    }

    /// <summary>Two tensors of one dtype (activations that meet in an op: both float32 or both bfloat16).</summary>
    public static void SameDType(string op, Tensor a, Tensor b, string roleA = "input", string roleB = "output")
    {
        if (a.DType != b.DType)
            throw new ShapeException(op, $"{roleA} {a.Shape} is {a.DType.Name()} but {roleB} {b.Shape} is {b.DType.Name()}; they must match");
    }

    public static void SameDevice(string op, Tensor a, Tensor b)
    {
        if (!ReferenceEquals(a.Device, b.Device)) throw new ShapeException(op, "tensors live on different devices");
    }

    public static void That(bool condition, string op, string message)
    {
        if (!condition) throw new ShapeException(op, message);
    }
}

/// <summary>A shape, dtype or size that an op cannot accept.</summary>
public sealed class ShapeException(string op, string message) : ArgumentException($"{op}: {message}")
{
    public string Op { get; } = op;
}
