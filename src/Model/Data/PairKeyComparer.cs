namespace Memopt.Model.Data;

/// <summary>
/// Equality for token pairs packed as (left &lt;&lt; 32 | right). long.GetHashCode() is left ^ right, which maps the
/// millions of pairs of a BPE training onto a few thousand hash codes (ids are &lt; 2^14): chains of hundreds. A
/// Fibonacci multiply spreads them.
/// </summary>
public sealed class PairKeyComparer : IEqualityComparer<long>
{
    public static readonly PairKeyComparer Instance = new();

    public bool Equals(long x, long y) => x == y;

    public int GetHashCode(long key) => (int)(((ulong)key * 0x9E3779B97F4A7C15UL) >> 32);
}
