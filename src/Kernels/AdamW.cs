using System.Runtime.CompilerServices;
using ILGPU;
using ILGPU.Runtime;
using Memopt.Tensors;

namespace Memopt.Kernels;

/// <summary>
/// The Adam / AdamW parameter update, fused into one pass over each parameter (PyTorch's torch.optim.Adam and AdamW,
/// amsgrad off; the math of its single-tensor path). For step t (1-based), learning rate lr and weight decay wd:
///   g  = grad + wd·p                              (Adam with L2 only; AdamW leaves the gradient alone)
///   p  = p·(1 − lr·wd)                            (AdamW only: decoupled decay)
///   m  = m + (1−β1)·(g − m)                       (= β1·m + (1−β1)·g, PyTorch's lerp)
///   v  = β2·v + (1−β2)·g²
///   p  = p − (lr / (1−β1^t)) · m / (√v / √(1−β2^t) + eps)
/// The bias corrections are folded into two scalars on the host (in float64), so the kernel reads p, grad, m, v
/// once and writes p, m, v once: 28 bytes of traffic per parameter, nothing allocated.
/// Mixed precision: given a bf16 shadow of the parameter, the same pass also writes round(p) into it (+2 bytes per
/// parameter), so the matmuls' bf16 weights are refreshed without a second pass over p. Master weights, gradients
/// and both moments stay float32.
/// Launches: <see cref="UpdateMany"/> updates a whole parameter list in ⌈count/16⌉ launches (<see cref="MultiTensor"/>:
/// each tensor's views ride in the launch's parameter block, each tensor keeps the grid a launch of its own would
/// have), with two coefficient sets and a per-tensor flag choosing between them (decay or not). One thread per
/// element share, one copy of the formula (<c>UpdateElement</c>); <see cref="Update"/> is the one-tensor case.
/// </summary>
public static class AdamW
{
    /// <summary>Per-step scalars the kernel needs (computed on the host from the options and the step).</summary>
    public struct Coefficients
    {
        public float OneMinusBeta1;
        public float Beta2;
        public float OneMinusBeta2;
        /// <summary>lr / (1 − β1^t).</summary>
        public float StepSize;
        /// <summary>1 / √(1 − β2^t).</summary>
        public float InvSqrtBias2;
        public float Eps;
        /// <summary>1 − lr·wd for decoupled decay, else 1.</summary>
        public float DecayFactor;
        /// <summary>wd for Adam's L2 term, else 0.</summary>
        public float L2;

        public static Coefficients For(long step, float lr, float beta1, float beta2, float eps, float weightDecay, bool decoupled)
        {
            if (step < 1) throw new ArgumentOutOfRangeException(nameof(step), step, "adam: the step count starts at 1");
            double bias1 = 1 - Math.Pow(beta1, step), bias2 = 1 - Math.Pow(beta2, step);
            return new Coefficients
            {
                OneMinusBeta1 = 1f - beta1,
                Beta2 = beta2,
                OneMinusBeta2 = 1f - beta2,
                StepSize = (float)(lr / bias1),
                InvSqrtBias2 = (float)(1 / Math.Sqrt(bias2)),
                Eps = eps,
                DecayFactor = decoupled ? (float)(1 - (double)lr * weightDecay) : 1f,
                L2 = decoupled ? 0f : weightDecay,
            };
        }
    }

    /// <summary>
    /// One parameter's tensors for <see cref="UpdateMany"/>: the float32 parameter, its gradient and moments (same
    /// shape), an optional bf16 shadow rewritten from the updated parameter, and whether the decay coefficients apply.
    /// <paramref name="Name"/> (e.g. the parameter's name) labels argument errors.
    /// </summary>
    public sealed record ParameterTensors(Tensor Param, Tensor Grad, Tensor M, Tensor V, Tensor? Bf16Copy = null, bool Decay = true, string? Name = null);

    /// <summary>
    /// Updates <paramref name="param"/>, <paramref name="m"/> and <paramref name="v"/> in place from <paramref name="grad"/>,
    /// and writes the updated parameter rounded to bf16 into <paramref name="bf16Copy"/> when one is given
    /// (<see cref="UpdateMany"/> with one tensor).
    /// </summary>
    public static void Update(Tensor param, Tensor grad, Tensor m, Tensor v, Coefficients c, Tensor? bf16Copy = null) =>
        UpdateMany([new ParameterTensors(param, grad, m, v, bf16Copy)], c, c);

    /// <summary>
    /// Updates every parameter of <paramref name="tensors"/> (as <see cref="Update"/> does one), with
    /// <paramref name="withDecay"/> where <see cref="ParameterTensors.Decay"/> is set and <paramref name="withoutDecay"/>
    /// elsewhere, in ⌈count / <see cref="MultiTensor.Capacity"/>⌉ launches. Each element gets exactly the arithmetic of a
    /// launch per tensor, so the results are the same bits. The entries must not share memory (they update concurrently).
    /// </summary>
    public static void UpdateMany(IReadOnlyList<ParameterTensors> tensors, Coefficients withDecay, Coefficients withoutDecay)
    {
        if (tensors.Count == 0) return;
        for (int i = 0; i < tensors.Count; i++) CheckEntry(tensors, i);
        var device = tensors[0].Param.Device;
        var k = device.Kernel("adamw.update", acc => acc.LoadStreamKernel<TensorSlots<Slot>, Coefficients, Coefficients>(UpdateKernel));
        foreach (var batch in MultiTensor.Plan(device, tensors.Select(t => t.Param.Numel).ToArray()))
            k(batch.Config, batch.Slots(i => Slot.Of(tensors[i])), withDecay, withoutDecay);
    }

    private const string Op = "adamw";

    private static void CheckEntry(IReadOnlyList<ParameterTensors> tensors, int i)
    {
        var e = tensors[i];
        string who = e.Name is null ? $"tensor {i}" : $"tensor {i} ({e.Name})";
        var p = e.Param;
        Check.That(p.DType == DType.F32, Op, $"{who}: parameter {p.Shape} is {p.DType.Name()}, expected float32");
        Check.That(ReferenceEquals(p.Device, tensors[0].Param.Device), Op, $"{who}: parameter {p.Shape} lives on another device than tensor 0");
        foreach (var (t, role, dtype) in new[] { (e.Grad, "gradient", DType.F32), (e.M, "first moment", DType.F32), (e.V, "second moment", DType.F32), (e.Bf16Copy, "bf16 copy", DType.BF16) })
        {
            if (t is null) continue;
            Check.That(t.DType == dtype, Op, $"{who}: {role} {t.Shape} is {t.DType.Name()}, expected {dtype.Name()}");
            Check.That(t.Shape.Equals(p.Shape), Op, $"{who}: {role} {t.Shape} differs from parameter {p.Shape}");
            Check.That(ReferenceEquals(t.Device, p.Device), Op, $"{who}: {role} {t.Shape} lives on another device than its parameter");
        }
    }

    /// <summary>
    /// One parameter in a launch's slots: its four float32 views, the bf16 shadow and the two flags (public because
    /// ILGPU's generated launchers must see a kernel argument's types; built only by <see cref="UpdateMany"/>).
    /// </summary>
    public readonly struct Slot
    {
        public readonly ArrayView<float> Param, Grad, M, V;
        /// <summary>The bf16 shadow; without one, the parameter's own bytes, never touched (WriteCopy is 0).</summary>
        public readonly ArrayView<ushort> Copy;
        public readonly int WriteCopy;
        public readonly int Decay;

        private Slot(ParameterTensors t)
        {
            (Param, Grad, M, V) = (t.Param.F32, t.Grad.F32, t.M.F32, t.V.F32);
            Copy = t.Bf16Copy?.BF16 ?? t.Param.Raw.Cast<ushort>();
            WriteCopy = t.Bf16Copy is null ? 0 : 1;
            Decay = t.Decay ? 1 : 0;
        }

        internal static Slot Of(ParameterTensors t) => new(t);
    }

    /// <summary>Each thread updates its grid-stride share of its tensor (<see cref="TensorSlots{T}.ShareOf"/>).</summary>
    private static void UpdateKernel(TensorSlots<Slot> slots, Coefficients withDecay, Coefficients withoutDecay)
    {
        var share = slots.ShareOf(Grid.IdxX, Group.IdxX, Group.DimX);
        var s = slots.Get(share.Slot);
        var c = s.Decay != 0 ? withDecay : withoutDecay;
        long n = s.Param.Length;
        for (long i = share.First; i < n; i += share.Stride) UpdateElement(s, c, i);
    }

    /// <summary>The update of element i: the one place the formula is written (fp32, this expression order).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)] // on the CPU accelerator: no call (and slot copy) per element
    private static void UpdateElement(Slot s, Coefficients c, long i)
    {
        float p = s.Param[i];
        float g = s.Grad[i] + c.L2 * p;
        float mi = s.M[i];
        mi += c.OneMinusBeta1 * (g - mi);
        float vi = c.Beta2 * s.V[i] + c.OneMinusBeta2 * g * g;
        s.M[i] = mi;
        s.V[i] = vi;
        float updated = p * c.DecayFactor - c.StepSize * mi / (MathF.Sqrt(vi) * c.InvSqrtBias2 + c.Eps);
        s.Param[i] = updated;
        if (s.WriteCopy != 0) s.Copy[i] = BFloat16.FromFloat(updated);
    }

    /// <summary>Float64 CPU reference of PyTorch's formulas, updating the arrays in place.</summary>
    public static class Reference
    {
        public static void Step(double[] p, double[] grad, double[] m, double[] v, long step,
            double lr, double beta1, double beta2, double eps, double weightDecay, bool decoupled)
        {
            double bias1 = 1 - Math.Pow(beta1, step), bias2 = 1 - Math.Pow(beta2, step);
            for (int i = 0; i < p.Length; i++)
            {
                double g = grad[i];
                if (decoupled) p[i] *= 1 - lr * weightDecay;
                else g += weightDecay * p[i];
                m[i] = beta1 * m[i] + (1 - beta1) * g;
                v[i] = beta2 * v[i] + (1 - beta2) * g * g;
                p[i] -= lr / bias1 * m[i] / (Math.Sqrt(v[i]) / Math.Sqrt(bias2) + eps);
            }
        }
    }
}
