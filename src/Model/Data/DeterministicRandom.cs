namespace Memopt.Model.Data;

/// <summary>
/// xoshiro256** seeded through SplitMix64: the project's own PRNG, so corpora, splits and batch orders are identical on
/// every machine and .NET version (System.Random's algorithm is an implementation detail and has changed before).
/// Only integer arithmetic is used to draw values, so nothing depends on the platform's floating-point library.
/// </summary>
public sealed class DeterministicRandom
{
    private ulong _s0, _s1, _s2, _s3;

    public DeterministicRandom(ulong seed)
    {
        ulong sm = seed;
        _s0 = SplitMix64(ref sm);
        _s1 = SplitMix64(ref sm);
        _s2 = SplitMix64(ref sm);
        _s3 = SplitMix64(ref sm);
    }

    /// <summary>A generator for a named sub-stream (e.g. "split", "epoch 3"), independent of the others for practical purposes.</summary>
    public static DeterministicRandom ForStream(ulong seed, ulong stream) => new(Mix(seed ^ Mix(stream + 0x9E3779B97F4A7C15UL)));

    public static ulong SplitMix64(ref ulong state)
    {
        ulong z = state += 0x9E3779B97F4A7C15UL;
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9UL;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBUL;
        return z ^ (z >> 31);
    }

    /// <summary>The SplitMix64 finalizer as a stateless 64-bit mixing function.</summary>
    public static ulong Mix(ulong x)
    {
        ulong s = x;
        return SplitMix64(ref s);
    }

    public ulong NextUInt64()
    {
        ulong result = BitRotate(_s1 * 5, 7) * 9;
        ulong t = _s1 << 17;
        _s2 ^= _s0;
        _s3 ^= _s1;
        _s1 ^= _s2;
        _s0 ^= _s3;
        _s2 ^= t;
        _s3 = BitRotate(_s3, 45);
        return result;
    }

    /// <summary>Uniform in [0, n) by the multiply-high method (bias below 2^-64 · n, far below anything measurable here).</summary>
    public ulong NextBelow(ulong n)
    {
        if (n == 0) throw new ArgumentOutOfRangeException(nameof(n), "n must be positive");
        return (ulong)(((UInt128)NextUInt64() * n) >> 64);
    }

    public int NextInt(int n) => (int)NextBelow((ulong)n);

    /// <summary>Uniform in [0, 1) with 53 random bits.</summary>
    public double NextDouble() => (NextUInt64() >> 11) * (1.0 / (1UL << 53));

    /// <summary>Fisher–Yates shuffle in place.</summary>
    public void Shuffle<T>(Span<T> items)
    {
        for (int i = items.Length - 1; i > 0; i--)
        {
            int j = (int)NextBelow((ulong)(i + 1));
            (items[i], items[j]) = (items[j], items[i]);
        }
    }

    private static ulong BitRotate(ulong x, int k) => (x << k) | (x >> (64 - k));
}
