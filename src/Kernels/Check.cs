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
