using Memopt.Autograd;
using Memopt.Tensors;

namespace Memopt.Tests.Harness;

/// <summary>
/// Runs an autograd op twice from the same inputs — once on float32 storage, once with the chosen inputs stored as
/// bfloat16 — and measures what bf16 storage costs:
/// (a) forward: the bf16 run's output against the float64 reference evaluated on the same inputs, and the float32
///     run's output against it too (a sanity bound: the float32 path is correct to ~1e-6);
/// (b) backward: every gradient of the bf16 run against the float32 run's, both seeded with the same random r.
/// All inputs and r are rounded to bf16-representable values first, so both runs see exactly the same numbers: what
/// differs is only where the bf16 run rounds (its bf16 outputs, bf16 gradients and anything it saved in bf16).
/// Errors are max|got − want| / (max|want| + 1e-6), as in <see cref="GradCheck"/>: a fraction of the tensor's scale.
/// The unit roundoff of bf16 is u = 2^-8 ≈ 3.9e-3 (8 significant bits): one rounding of a value moves it by at most
/// u of itself, so one rounding of every element of a tensor is an error of at most u on this scale.
/// </summary>
public static class Bf16Check
{
    /// <summary>bf16 unit roundoff, 2^-8: a single round-to-nearest moves a value by at most this fraction of it.</summary>
    public const double U = 1.0 / 256;

    /// <summary>One input: its values and shape, and its dtype in the bf16 run (float32 in the float32 run).</summary>
    public sealed record Input(float[] Values, Shape Shape, DType Bf16RunDType, bool Differentiable = true);

    public sealed record Result(double ForwardError, double Float32ForwardError, double[] GradientErrors, DType OutputDType, DType?[] GradientDTypes)
    {
        public override string ToString() =>
            $"bf16 forward {ForwardError:E2} (float32 {Float32ForwardError:E2}), gradients vs float32 [{string.Join(", ", GradientErrors.Select(e => e.ToString("E2")))}], " +
            $"output {OutputDType.Name()}, gradient dtypes [{string.Join(", ", GradientDTypes.Select(d => d?.Name() ?? "-"))}]";
    }

    public static float[] RoundToBf16(IEnumerable<float> values) => values.Select(BFloat16.Round).ToArray();

    public static Result Run(ComputeDevice device, Input[] inputs, Func<Var[], Var> op, GradCheck.Reference reference, int seed)
    {
        var rounded = inputs.Select(x => RoundToBf16(x.Values)).ToArray();
        double[] want = reference(rounded.Select(v => v.Select(e => (double)e).ToArray()).ToArray());
        var rng = new Random(seed);
        var r = RoundToBf16(Enumerable.Range(0, want.Length).Select(_ => (float)(rng.NextDouble() * 2 - 1)));

        var (y32, g32, _, _) = Pass(device, inputs, rounded, bf16: false, op, r);
        var (y16, g16, outDType, gradDTypes) = Pass(device, inputs, rounded, bf16: true, op, r);
        var errors = new double[inputs.Length];
        for (int i = 0; i < inputs.Length; i++)
            if (inputs[i].Differentiable) errors[i] = GradCheck.RelativeError(g16[i], g32[i]);
        return new Result(GradCheck.RelativeError(y16, want), GradCheck.RelativeError(y32, want), errors, outDType, gradDTypes);
    }

    private static (double[] Y, double[][] Grads, DType OutDType, DType?[] GradDTypes) Pass(
        ComputeDevice device, Input[] inputs, float[][] rounded, bool bf16, Func<Var[], Var> op, float[] r)
    {
        var vars = inputs.Select((x, i) => new Var(Tensor.FromHost(device, rounded[i], x.Shape, MemoryCategory.Data, $"input{i}",
            bf16 ? x.Bf16RunDType : DType.F32), x.Differentiable)).ToArray();
        try
        {
            using var tape = new Tape();
            using var y = op(vars);
            var values = y.Value.ToFloatArray().Select(v => (double)v).ToArray();
            if (values.Length != r.Length) throw new InvalidOperationException($"output has {values.Length} elements, reference {r.Length}");
            if (inputs.Any(x => x.Differentiable))
            {
                using var seedGrad = Tensor.FromHost(device, r, y.Shape, MemoryCategory.Data, "seed", y.Value.DType);
                tape.Backward(y, seedGrad);
            }
            var grads = vars.Select((v, i) => v.Grad is { } g ? g.ToFloatArray().Select(e => (double)e).ToArray() : new double[rounded[i].Length]).ToArray();
            return (values, grads, y.Value.DType, vars.Select(v => v.Grad?.DType).ToArray());
        }
        finally
        {
            foreach (var v in vars) { v.Grad?.Dispose(); v.Dispose(); }
        }
    }
}
