namespace Memopt.Kernels;

/// <summary>
/// A counter-based random number generator: Philox4x32-10 (Salmon et al., "Parallel random numbers: as easy as
/// 1, 2, 3", SC'11; the generator behind cuRAND's and PyTorch's dropout). It is a pure function of a 128-bit counter
/// and a 64-bit key, so any element's random bits can be computed on their own, in any order, any number of times,
/// on the device or on the host: nothing is stored and a replay (backward, gradient-checkpointing recompute) gets
/// exactly the same bits.
///
/// Stream layout: element <c>index</c> of stream (<c>seed</c>, <c>offset</c>) is lane <c>index &amp; 3</c> of
/// Philox(counter = (index &gt;&gt; 2 as 64 bits, offset as 64 bits), key = seed as 64 bits). A kernel that handles
/// four consecutive elements per thread computes one Philox block for all four.
/// The same static methods run inside ILGPU kernels and on the host (plain uint/ulong arithmetic).
/// </summary>
public static class CounterRng
{
    private const uint MulA = 0xD2511F53u;
    private const uint MulB = 0xCD9E8D57u;
    private const uint WeylA = 0x9E3779B9u; // golden ratio
    private const uint WeylB = 0xBB67AE85u; // sqrt(3) - 1

    /// <summary>Four 32-bit random words: one Philox block.</summary>
    public struct Block
    {
        public uint X0, X1, X2, X3;

        public readonly uint Lane(int lane) => lane switch { 0 => X0, 1 => X1, 2 => X2, _ => X3 };
    }

    /// <summary>Philox4x32 with 10 rounds on counter (c0..c3) and key (k0, k1).</summary>
    public static Block Philox(uint c0, uint c1, uint c2, uint c3, uint k0, uint k1)
    {
        // Rounds written out by hand (no arrays: kernels must not allocate); the key is bumped between rounds.
        for (int round = 0; round < 10; round++)
        {
            ulong pa = (ulong)MulA * c0;
            ulong pb = (ulong)MulB * c2;
            uint n0 = (uint)(pb >> 32) ^ c1 ^ k0;
            uint n2 = (uint)(pa >> 32) ^ c3 ^ k1;
            c1 = (uint)pb;
            c3 = (uint)pa;
            c0 = n0;
            c2 = n2;
            k0 += WeylA;
            k1 += WeylB;
        }
        return new Block { X0 = c0, X1 = c1, X2 = c2, X3 = c3 };
    }

    /// <summary>The block holding elements 4·<paramref name="block"/> .. 4·block+3 of stream (seed, offset).</summary>
    public static Block BlockAt(ulong seed, ulong offset, long block) =>
        Philox((uint)block, (uint)((ulong)block >> 32), (uint)offset, (uint)(offset >> 32), (uint)seed, (uint)(seed >> 32));

    /// <summary>The 32 random bits of element <paramref name="index"/> of stream (seed, offset).</summary>
    public static uint Bits(ulong seed, ulong offset, long index) => BlockAt(seed, offset, index >> 2).Lane((int)(index & 3));

    /// <summary>Uniform in [0, 1) of element <paramref name="index"/> of stream (seed, offset).</summary>
    public static float Uniform(ulong seed, ulong offset, long index) => ToUniform(Bits(seed, offset, index));

    /// <summary>
    /// The top 24 bits as a float in [0, 1): every value k·2⁻²⁴ exactly, so host and device agree bit for bit
    /// and the result is never rounded up to 1.
    /// </summary>
    public static float ToUniform(uint bits) => (bits >> 8) * (1f / 16777216f);
}
