using ILGPU;
using Memopt.Tensors;

namespace Memopt.Kernels;

/// <summary>
/// A float tensor seen as quads: elements 4q..4q+3 read and written together, through the widest access the dtype
/// and alignment allow (an 8-byte word of four bf16, a 16-byte float4, or four scalar accesses). Row kernels that
/// stream a whole row (bias gradient, the fused head's cross-entropy) are bandwidth-bound, and 2- or 4-byte accesses
/// held them to 40–50% of the H100's; the math stays float32 whatever the storage. Public for ILGPU's CPU backend.
/// </summary>
public interface IQuads
{
    MatMul.Quad Load(long q);

    /// <summary>Writes the quad (a bf16 tensor rounds each value once).</summary>
    void Store(long q, MatMul.Quad v);
}

/// <summary>Which quad accessor a set of tensors can share (<see cref="Quads.KindOf"/>).</summary>
public enum QuadKind { Scalar, Bf16, F32 }

/// <summary>The quad accessors of a kernel's hot loop, and element access by a constant index (unrolled loops fold it).</summary>
public static class Quads
{
    /// <summary>
    /// The one quad accessor every tensor fits, where the first's element count is a multiple of 4:
    /// <see cref="QuadKind.Bf16"/> when all are bf16 and 8-byte aligned, <see cref="QuadKind.F32"/> when all are float32
    /// and 16-byte aligned, else <see cref="QuadKind.Scalar"/>. A kernel takes one accessor type for all its quad
    /// tensors, so one misfit (another dtype, an unaligned view) sends the whole op to its scalar kernel (two- and
    /// four-byte accesses held the streaming kernels to about half the H100's bandwidth). Row kernels check that their
    /// row length is a multiple of 4 themselves.
    /// </summary>
    public static QuadKind KindOf(params ReadOnlySpan<Tensor> tensors)
    {
        if (tensors[0].Numel % 4 != 0) return QuadKind.Scalar;
        bool bf16 = true, f32 = true;
        foreach (var t in tensors)
        {
            bf16 &= Bf16Quads.Fits(t);
            f32 &= F32Quads.Fits(t);
        }
        return bf16 ? QuadKind.Bf16 : f32 ? QuadKind.F32 : QuadKind.Scalar;
    }

    public static float Get(in MatMul.Quad q, int i) => i == 0 ? q.X : i == 1 ? q.Y : i == 2 ? q.Z : q.W;

    public static void Set(ref MatMul.Quad q, int i, float v)
    {
        if (i == 0) q.X = v;
        else if (i == 1) q.Y = v;
        else if (i == 2) q.Z = v;
        else q.W = v;
    }
}

/// <summary>bf16, one 8-byte word per quad (element j in bits 16j..16j+15); the tensor's start must be 8-byte aligned.</summary>
public readonly struct Bf16Quads(ArrayView<ulong> words) : IQuads
{
    private readonly ArrayView<ulong> _words = words;

    /// <summary>Whether <paramref name="t"/> is bf16 and starts on an 8-byte boundary.</summary>
    public static bool Fits(Tensor t) => t.DType == DType.BF16 && t.Address % 8 == 0;

    public static Bf16Quads Of(Tensor t) => new(t.Raw.SubView(0, t.Bytes / 8 * 8).Cast<ulong>());

    public MatMul.Quad Load(long q)
    {
        ulong w = _words[q];
        return new MatMul.Quad(BFloat16.ToFloat((ushort)w), BFloat16.ToFloat((ushort)(w >> 16)),
            BFloat16.ToFloat((ushort)(w >> 32)), BFloat16.ToFloat((ushort)(w >> 48)));
    }

    public void Store(long q, MatMul.Quad v) =>
        _words[q] = BFloat16.FromFloat(v.X) | ((ulong)BFloat16.FromFloat(v.Y) << 16) | ((ulong)BFloat16.FromFloat(v.Z) << 32) | ((ulong)BFloat16.FromFloat(v.W) << 48);
}

/// <summary>float32, one 16-byte access per quad; the tensor's start must be 16-byte aligned.</summary>
public readonly struct F32Quads(ArrayView<MatMul.Quad> quads) : IQuads
{
    private readonly ArrayView<MatMul.Quad> _quads = quads;

    /// <summary>Whether <paramref name="t"/> is float32 and starts on a 16-byte boundary.</summary>
    public static bool Fits(Tensor t) => t.DType == DType.F32 && t.Address % 16 == 0;

    public static F32Quads Of(Tensor t) => new(t.Raw.SubView(0, t.Bytes / 16 * 16).Cast<MatMul.Quad>());

    public MatMul.Quad Load(long q) => _quads[q];

    public void Store(long q, MatMul.Quad v) => _quads[q] = v;
}

/// <summary>Either dtype where the wide access is not aligned: four scalar accesses (the same values, in the same order).</summary>
public readonly struct ScalarQuads(FloatView view) : IQuads
{
    private readonly FloatView _view = view;

    public MatMul.Quad Load(long q) => new(_view.Load(4 * q), _view.Load(4 * q + 1), _view.Load(4 * q + 2), _view.Load(4 * q + 3));

    public void Store(long q, MatMul.Quad v)
    {
        _view.Store(4 * q, v.X);
        _view.Store(4 * q + 1, v.Y);
        _view.Store(4 * q + 2, v.Z);
        _view.Store(4 * q + 3, v.W);
    }
}
