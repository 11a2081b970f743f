using ILGPU;
using ILGPU.Runtime;
using Memopt.Tensors;

namespace Memopt.Kernels;

/// <summary>
/// The Adam / AdamW parameter update, fused into one pass per parameter tensor (PyTorch's torch.optim.Adam and
/// AdamW, single-tensor path, amsgrad off). For step t (1-based), learning rate lr and weight decay wd:
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
    /// Updates <paramref name="param"/>, <paramref name="m"/> and <paramref name="v"/> in place from <paramref name="grad"/>,
    /// and writes the updated parameter rounded to bf16 into <paramref name="bf16Copy"/> when one is given.
    /// </summary>
    public static void Update(Tensor param, Tensor grad, Tensor m, Tensor v, Coefficients c, Tensor? bf16Copy = null)
    {
        const string op = "adamw";
        Check.DType(op, param, DType.F32, "parameter");
        Check.DType(op, grad, DType.F32, "gradient");
        Check.DType(op, m, DType.F32, "first moment");
        Check.DType(op, v, DType.F32, "second moment");
        Check.SameShape(op, param, grad);
        Check.SameShape(op, param, m);
        Check.SameShape(op, param, v);
        Check.SameDevice(op, param, grad);
        Check.SameDevice(op, param, m);
        Check.SameDevice(op, param, v);
        if (bf16Copy is not null)
        {
            Check.DType(op, bf16Copy, DType.BF16, "bf16 copy");
            Check.SameShape(op, param, bf16Copy);
            Check.SameDevice(op, param, bf16Copy);
        }
        var device = param.Device;
        var k = device.Kernel("adamw.update", acc => acc.LoadStreamKernel<
            ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<float>, ArrayView<ushort>, int, Coefficients, long>(UpdateKernel));
        // Without a copy the flag is 0 and the kernel never touches the stand-in view (the parameter's own bytes).
        var copy = bf16Copy?.BF16 ?? param.Raw.Cast<ushort>();
        k(Launch.Elementwise(device, param.Numel), param.F32, grad.F32, m.F32, v.F32, copy, bf16Copy is null ? 0 : 1, c, param.Numel);
    }

    private static void UpdateKernel(ArrayView<float> param, ArrayView<float> grad, ArrayView<float> m, ArrayView<float> v,
        ArrayView<ushort> bf16Copy, int writeCopy, Coefficients c, long n)
    {
        long stride = (long)Grid.DimX * Group.DimX;
        for (long i = Grid.GlobalIndex.X; i < n; i += stride)
        {
            float p = param[i];
            float g = grad[i] + c.L2 * p;
            float mi = m[i];
            mi += c.OneMinusBeta1 * (g - mi);
            float vi = c.Beta2 * v[i] + c.OneMinusBeta2 * g * g;
            m[i] = mi;
            v[i] = vi;
            float updated = p * c.DecayFactor - c.StepSize * mi / (MathF.Sqrt(vi) * c.InvSqrtBias2 + c.Eps);
            param[i] = updated;
            if (writeCopy != 0) bf16Copy[i] = BFloat16.FromFloat(updated);
        }
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
