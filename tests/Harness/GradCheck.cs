using Memopt.Autograd;
using Memopt.Tensors;

namespace Memopt.Tests.Harness;

/// <summary>
/// Checks an autograd op against a float64 reference of the same function:
/// (a) forward: the device output against the reference evaluated on the same (float32-exact) inputs;
/// (b) backward: the gradients autograd produces for L = Σ r·f(x) (r random) against float64 central
///     finite differences of the reference, (L(x+h) − L(x−h)) / 2h.
/// Errors are measured as max|got − want| / (max|want| + floor), so a tolerance reads as a fraction of the tensor's scale.
/// </summary>
public static class GradCheck
{
    public delegate double[] Reference(double[][] inputs);

    public sealed record Result(double ForwardError, double[] GradientErrors)
    {
        public override string ToString() => $"forward {ForwardError:E2}, gradients [{string.Join(", ", GradientErrors.Select(e => e.ToString("E2")))}]";
    }

    /// <param name="inputs">float32 values and shapes of the inputs</param>
    /// <param name="differentiable">which inputs get a gradient check (e.g. not integer indices)</param>
    /// <param name="op">builds the output from device Vars</param>
    public static Result Run(ComputeDevice device, (float[] Values, Shape Shape)[] inputs, bool[] differentiable,
        Func<Var[], Var> op, Reference reference, int seed, double fdStep = 1e-6)
    {
        var rng = new Random(seed);
        var vars = inputs.Select((x, i) => new Var(Tensor.FromHost(device, x.Values, x.Shape, MemoryCategory.Data, $"input{i}"), differentiable[i])).ToArray();
        try
        {
            double[][] x64 = inputs.Select(x => x.Values.Select(v => (double)v).ToArray()).ToArray();
            double[] want = reference(x64);
            using var tape = new Tape();
            using var y = op(vars);
            double[] got = y.Value.ToFloatArray().Select(v => (double)v).ToArray();
            if (got.Length != want.Length) throw new InvalidOperationException($"output has {got.Length} elements, reference {want.Length}");
            double forwardError = RelativeError(got, want);

            var r = Enumerable.Range(0, want.Length).Select(_ => rng.NextDouble() * 2 - 1).ToArray();
            var grads = new double[inputs.Length];
            if (differentiable.Any(d => d))
            {
                using var seedGrad = Tensor.FromHost(device, r.Select(v => (float)v).ToArray(), y.Shape, MemoryCategory.Data, "seed");
                tape.Backward(y, seedGrad);
            }
            for (int i = 0; i < inputs.Length; i++)
            {
                if (!differentiable[i]) continue;
                double[] autograd = vars[i].Grad is { } g ? g.ToFloatArray().Select(v => (double)v).ToArray() : new double[x64[i].Length];
                double[] fd = FiniteDifference(reference, x64, i, r, fdStep);
                grads[i] = RelativeError(autograd, fd);
            }
            return new Result(forwardError, grads);
        }
        finally
        {
            foreach (var v in vars) { v.Grad?.Dispose(); v.Dispose(); }
        }
    }

    public static double[] FiniteDifference(Reference reference, double[][] x, int input, double[] r, double step)
    {
        var grad = new double[x[input].Length];
        for (int j = 0; j < grad.Length; j++)
        {
            double original = x[input][j];
            double h = step * Math.Max(1.0, Math.Abs(original));
            x[input][j] = original + h;
            double plus = Dot(reference(x), r);
            x[input][j] = original - h;
            double minus = Dot(reference(x), r);
            x[input][j] = original;
            grad[j] = (plus - minus) / (2 * h);
        }
        return grad;
    }

    private static double Dot(double[] a, double[] b)
    {
        double s = 0;
        for (int i = 0; i < a.Length; i++) s += a[i] * b[i];
        return s;
    }

    /// <summary>
    /// max|got − want| / (max|want| + 1e-6). NaN anywhere gives +∞, so NaN never passes. With an
    /// <paramref name="allowance"/>, each element's difference counts only past its own allowance (a storage rounding
    /// that is not the computation's).
    /// </summary>
    public static double RelativeError(double[] got, double[] want, double[]? allowance = null)
    {
        double maxDiff = 0, scale = 0;
        for (int i = 0; i < got.Length; i++)
        {
            if (double.IsNaN(got[i]) || double.IsNaN(want[i]) || double.IsInfinity(got[i])) return double.PositiveInfinity;
            maxDiff = Math.Max(maxDiff, Math.Abs(got[i] - want[i]) - (allowance?[i] ?? 0));
            scale = Math.Max(scale, Math.Abs(want[i]));
        }
        return maxDiff / (scale + 1e-6);
    }

    public static float[] RandomValues(Random rng, long n, double scale = 1.0) =>
        Enumerable.Range(0, checked((int)n)).Select(_ => (float)((rng.NextDouble() * 2 - 1) * scale)).ToArray();
}
