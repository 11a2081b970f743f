using ILGPU;
using ILGPU.Runtime;
using Memopt.Tensors;

namespace Memopt.Kernels;

/// <summary>
/// A floating-point tensor as a kernel argument, stored as float32 or bfloat16: both typed views of the tensor's
/// memory and a flag saying which one holds the data. Kernels read and write through <see cref="Load"/> and
/// <see cref="Store"/>, so one kernel serves both dtypes and every combination of them (a bf16 activation with a
/// float32 bias, bf16 operands with a float32 gradient). The branch on the flag is uniform (the same for every
/// thread), so it costs a predicated instruction, not divergence; all arithmetic stays float32 — bf16 is only how
/// values are stored: a load widens exactly, a store rounds to nearest even (<see cref="BFloat16.FromFloat"/>),
/// keeping NaN and ±Inf.
/// The unused view is the same memory reinterpreted (never dereferenced), so no dummy buffer is needed.
/// </summary>
public readonly struct FloatView
{
    /// <summary>The data when the tensor is float32 (else the same bytes seen as floats, unused).</summary>
    public readonly ArrayView<float> F32;
    /// <summary>The data as bfloat16 words when the tensor is bfloat16 (else the same bytes seen as words, unused).</summary>
    public readonly ArrayView<ushort> Bf16;
    /// <summary>1 when the tensor is bfloat16.</summary>
    public readonly int IsBf16;

    private FloatView(ArrayView<float> f32, ArrayView<ushort> bf16, int isBf16)
    {
        F32 = f32;
        Bf16 = bf16;
        IsBf16 = isBf16;
    }

    /// <summary>The kernel argument for a float32 or bfloat16 tensor (other dtypes are rejected at the op boundary first).</summary>
    public static FloatView Of(Tensor t) => t.DType switch
    {
        DType.F32 => new FloatView(t.F32, t.Raw.Cast<ushort>(), 0),
        DType.BF16 => new FloatView(t.Raw.Cast<float>(), t.BF16, 1),
        _ => throw new InvalidOperationException($"tensor {t.Shape} is {t.DType.Name()}: kernels take float32 or bfloat16 values"),
    };

    /// <summary>Element i widened to float32 (exact for bf16).</summary>
    public float Load(long i) => IsBf16 != 0 ? BFloat16.ToFloat(Bf16[i]) : F32[i];

    /// <summary>Writes v to element i, rounded to nearest even when the tensor is bf16.</summary>
    public void Store(long i, float v)
    {
        if (IsBf16 != 0) Bf16[i] = BFloat16.FromFloat(v);
        else F32[i] = v;
    }

    /// <summary>element i += v: the add is float32, the result is rounded once when stored (gradient accumulation).</summary>
    public void Add(long i, float v) => Store(i, Load(i) + v);
}
