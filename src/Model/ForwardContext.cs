namespace Memopt.Model;

/// <summary>
/// Per-forward settings: whether dropout is active and the counter-RNG coordinates it uses. Each dropout site draws
/// from (seed, offset) with offset = step·2^20 + site, so a re-run of the same step (gradient-checkpoint recompute,
/// a resumed run) regenerates identical masks without storing them.
/// </summary>
public sealed record ForwardContext(bool Training, ulong Seed, long Step)
{
    public static readonly ForwardContext Evaluation = new(false, 0, 0);

    public ulong DropoutOffset(int layer, int site) => ((ulong)Step << 20) | (uint)((layer + 1) * 16 + site);
}
