using Memopt.Autograd;
using Memopt.Tensors;

namespace Memopt.Model;

/// <summary>
/// Creates parameters with GPT-2's initialization: weights N(0, 0.02), residual output projections
/// N(0, 0.02/√(2·layers)), biases 0, LayerNorm weights 1. Values come from a seeded generator on the host,
/// so the same seed gives the same model on every device.
/// </summary>
public sealed class ParameterInit(ComputeDevice device, int seed)
{
    private readonly Random _rng = new(seed);
    private readonly List<Parameter> _created = new();

    public IReadOnlyList<Parameter> Created => _created;

    public Parameter Normal(string name, float std, params int[] shape) => Make(name, shape, n => Gaussian(n, std));
    public Parameter Constant(string name, float value, params int[] shape) => Make(name, shape, n => Enumerable.Repeat(value, n).ToArray());

    private Parameter Make(string name, int[] shape, Func<int, float[]> values)
    {
        var s = new Shape(shape);
        var data = values(checked((int)s.Numel));
        var p = new Parameter(Tensor.FromHost(device, data, s, MemoryCategory.Parameters, name), name);
        _created.Add(p);
        return p;
    }

    private float[] Gaussian(int n, float std)
    {
        var v = new float[n];
        for (int i = 0; i < n; i += 2)
        {
            // Box–Muller: two independent normals per pair of uniforms.
            double u1 = 1.0 - _rng.NextDouble(), u2 = _rng.NextDouble();
            double r = Math.Sqrt(-2.0 * Math.Log(u1));
            v[i] = (float)(std * r * Math.Cos(2 * Math.PI * u2));
            if (i + 1 < n) v[i + 1] = (float)(std * r * Math.Sin(2 * Math.PI * u2));
        }
        return v;
    }
}
