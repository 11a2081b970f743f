using ILGPU;

namespace Memopt.Kernels;

/// <summary>
/// Sums and maxima over consecutive lanes of one warp by butterfly shuffles (lanes a power of two, at most the warp):
/// every lane ends with the result, and since each lane combines the same pairs (a + b = b + a), all agree bit for
/// bit. Flash attention reduces a score row over the lanes that share it, LayerNorm a whole row over the warp.
/// </summary>
public static class WarpReduce
{
    public static float Sum(float v, int lanes)
    {
        for (int o = lanes >> 1; o > 0; o >>= 1) v += Warp.ShuffleXor(v, o);
        return v;
    }

    public static float Max(float v, int lanes)
    {
        for (int o = lanes >> 1; o > 0; o >>= 1) v = MathF.Max(v, Warp.ShuffleXor(v, o));
        return v;
    }
}
