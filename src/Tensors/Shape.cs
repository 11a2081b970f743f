namespace Memopt.Tensors;

/// <summary>An immutable list of dimensions, row-major. Every dimension must be positive.</summary>
public sealed class Shape : IEquatable<Shape>
{
    private readonly int[] _dims;

    public Shape(params int[] dims)
    {
        if (dims.Length == 0) throw new ArgumentException("a shape needs at least one dimension");
        long n = 1;
        foreach (var d in dims)
        {
            if (d <= 0) throw new ArgumentException($"shape {Format(dims)}: every dimension must be > 0");
            n *= d;
        }
        _dims = (int[])dims.Clone();
        Numel = n;
    }

    public int Rank => _dims.Length;
    public long Numel { get; }
    public int this[int axis] => _dims[axis < 0 ? _dims.Length + axis : axis];
    public IReadOnlyList<int> Dims => _dims;

    /// <summary>Product of every dimension but the last: the number of rows when the tensor is seen as a matrix.</summary>
    public long Rows => Numel / _dims[^1];
    public int Last => _dims[^1];

    public Shape WithLast(int last)
    {
        var d = (int[])_dims.Clone();
        d[^1] = last;
        return new Shape(d);
    }

    public bool Equals(Shape? other) => other is not null && _dims.AsSpan().SequenceEqual(other._dims);
    public override bool Equals(object? obj) => Equals(obj as Shape);
    public override int GetHashCode()
    {
        var h = new HashCode();
        foreach (var d in _dims) h.Add(d);
        return h.ToHashCode();
    }
    public override string ToString() => Format(_dims);
    public static string Format(IEnumerable<int> dims) => "[" + string.Join(", ", dims) + "]";

    public static implicit operator Shape(int[] dims) => new(dims);
}
