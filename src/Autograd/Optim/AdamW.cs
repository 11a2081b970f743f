using Memopt.Tensors;

namespace Memopt.Autograd.Optim;

/// <summary>
/// Hyper-parameters of <see cref="AdamW"/>; the defaults are torch.optim.AdamW's.
/// <paramref name="Decoupled"/> true is AdamW (p ← p·(1 − lr·wd) before the Adam step); false is Adam with the
/// classic L2 term (g ← g + wd·p), i.e. torch.optim.Adam(weight_decay=wd). With WeightDecay 0 both are plain Adam.
/// </summary>
public sealed record AdamWOptions(
    float LearningRate = 1e-3f,
    float Beta1 = 0.9f,
    float Beta2 = 0.999f,
    float Eps = 1e-8f,
    float WeightDecay = 0.01f,
    bool Decoupled = true)
{
    /// <summary>torch.optim.Adam's defaults: no weight decay (or L2 when <paramref name="weightDecay"/> &gt; 0).</summary>
    public static AdamWOptions Adam(float learningRate = 1e-3f, float weightDecay = 0f) =>
        new(learningRate, WeightDecay: weightDecay, Decoupled: false);

    internal void Validate()
    {
        if (!(LearningRate >= 0f)) throw new ArgumentOutOfRangeException(nameof(LearningRate), LearningRate, "adamw: learning rate must be >= 0");
        if (!(Beta1 >= 0f && Beta1 < 1f)) throw new ArgumentOutOfRangeException(nameof(Beta1), Beta1, "adamw: beta1 must be in [0, 1)");
        if (!(Beta2 >= 0f && Beta2 < 1f)) throw new ArgumentOutOfRangeException(nameof(Beta2), Beta2, "adamw: beta2 must be in [0, 1)");
        if (!(Eps > 0f)) throw new ArgumentOutOfRangeException(nameof(Eps), Eps, "adamw: eps must be > 0");
        if (!(WeightDecay >= 0f)) throw new ArgumentOutOfRangeException(nameof(WeightDecay), WeightDecay, "adamw: weight decay must be >= 0");
    }
}

/// <summary>
/// Adam / AdamW over a fixed list of parameters. The moment buffers m and v (float32, category optimizer state,
/// zeroed) are allocated in the constructor, so a step allocates nothing (on the device); each step is one fused pass
/// over every parameter in a few multi-tensor launches (<see cref="Kernels.AdamW.UpdateMany"/>), run in the optimizer
/// phase (which also refreshes each parameter's bf16 shadow, if it has one). The state (<see cref="ExpAvg"/>, <see cref="ExpAvgSq"/>,
/// <see cref="StepCount"/>) is exposed for checkpointing: copy into the tensors and set the step count to restore.
/// </summary>
public sealed class AdamW : IDisposable
{
    private readonly Parameter[] _parameters;
    private readonly Tensor[] _m;
    private readonly Tensor[] _v;
    private readonly bool[] _decays;
    private long _step;
    private bool _disposed;

    /// <param name="weightDecayApplies">which parameters get weight decay (commonly not biases and norm gains); all when null</param>
    public AdamW(IReadOnlyList<Parameter> parameters, AdamWOptions? options = null, Func<Parameter, bool>? weightDecayApplies = null)
    {
        Options = options ?? new AdamWOptions();
        Options.Validate();
        _parameters = parameters.ToArray();
        if (_parameters.Distinct(ReferenceEqualityComparer.Instance).Count() != _parameters.Length)
            throw new ArgumentException("adamw: a parameter appears twice in the list (it would be updated twice per step)");
        foreach (var p in _parameters)
        {
            if (p.Value.DType != DType.F32) throw new ArgumentException($"adamw: parameter {p.Name} {p.Shape} is {p.Value.DType.Name()}, expected float32");
            if (!ReferenceEquals(p.Device, _parameters[0].Device)) throw new ArgumentException($"adamw: parameter {p.Name} lives on another device");
        }
        _decays = _parameters.Select(p => weightDecayApplies?.Invoke(p) ?? true).ToArray();
        _m = new Tensor[_parameters.Length];
        _v = new Tensor[_parameters.Length];
        try
        {
            for (int i = 0; i < _parameters.Length; i++)
            {
                var p = _parameters[i];
                _m[i] = Tensor.Zeros(p.Device, p.Shape, DType.F32, MemoryCategory.OptimizerState, "adam_m:" + p.Name);
                _v[i] = Tensor.Zeros(p.Device, p.Shape, DType.F32, MemoryCategory.OptimizerState, "adam_v:" + p.Name);
            }
        }
        catch
        {
            Dispose();
            throw;
        }
    }

    public AdamWOptions Options { get; }
    public IReadOnlyList<Parameter> Parameters => _parameters;
    /// <summary>First moments m, one per parameter, in <see cref="Parameters"/> order.</summary>
    public IReadOnlyList<Tensor> ExpAvg => _m;
    /// <summary>Second moments v, one per parameter, in <see cref="Parameters"/> order.</summary>
    public IReadOnlyList<Tensor> ExpAvgSq => _v;
    public bool AppliesWeightDecay(int parameterIndex) => _decays[parameterIndex];

    /// <summary>Steps taken so far (the next step's bias correction uses StepCount + 1). Settable to restore a checkpoint.</summary>
    public long StepCount
    {
        get => _step;
        set
        {
            if (value < 0) throw new ArgumentOutOfRangeException(nameof(value), value, "adamw: the step count must be >= 0");
            _step = value;
        }
    }

    /// <summary>
    /// Every state tensor under a stable name, for checkpoints: "exp_avg.{parameter}" and "exp_avg_sq.{parameter}" in
    /// <see cref="Parameters"/> order. Export reads them; import copies the saved bytes back into the same tensors and
    /// sets <see cref="StepCount"/>. A later kind of state adds its tensors here and checkpoints carry it unchanged.
    /// </summary>
    public IReadOnlyList<KeyValuePair<string, Tensor>> StateTensors()
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        var state = new List<KeyValuePair<string, Tensor>>(2 * _parameters.Length);
        for (int i = 0; i < _parameters.Length; i++) state.Add(new("exp_avg." + _parameters[i].Name, _m[i]));
        for (int i = 0; i < _parameters.Length; i++) state.Add(new("exp_avg_sq." + _parameters[i].Name, _v[i]));
        return state;
    }

    /// <summary>Bytes of optimizer state (m and v).</summary>
    public long StateBytes => _m.Sum(t => t.Bytes) + _v.Sum(t => t.Bytes);

    /// <summary>One step with the options' learning rate.</summary>
    public void Step() => Step(Options.LearningRate);

    /// <summary>One step with learning rate <paramref name="lr"/> (e.g. from an <see cref="LrSchedule"/>), from each parameter's Grad.</summary>
    public void Step(float lr)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        if (!(lr >= 0f) || float.IsInfinity(lr)) throw new ArgumentOutOfRangeException(nameof(lr), lr, "adamw: learning rate must be finite and >= 0");
        _step++;
        if (_parameters.Length == 0) return;
        using var phase = _parameters[0].Device.Tracker.EnterPhase(Phase.Optimizer);
        var o = Options;
        var withDecay = Kernels.AdamW.Coefficients.For(_step, lr, o.Beta1, o.Beta2, o.Eps, o.WeightDecay, o.Decoupled);
        var withoutDecay = Kernels.AdamW.Coefficients.For(_step, lr, o.Beta1, o.Beta2, o.Eps, 0f, o.Decoupled);
        // One pass over every parameter in ⌈count/16⌉ launches; a parameter with a bf16 shadow (mixed precision) gets it
        // rewritten in the same pass. Built per step: a shadow may be enabled after the optimizer was made.
        var tensors = new Kernels.AdamW.ParameterTensors[_parameters.Length];
        for (int i = 0; i < _parameters.Length; i++)
        {
            var p = _parameters[i];
            tensors[i] = new(p.Value, p.Grad!, _m[i], _v[i], p.Bf16Copy, _decays[i], p.Name);
        }
        Kernels.AdamW.UpdateMany(tensors, withDecay, withoutDecay);
    }

    /// <summary>Zeroes every parameter's gradient (they accumulate across backward passes until then): a memset each, no kernel.</summary>
    public void ZeroGrad()
    {
        foreach (var p in _parameters) p.ZeroGrad();
    }

    public void Dispose()
    {
        if (_disposed) return;
        _disposed = true;
        foreach (var t in _m) t?.Dispose();
        foreach (var t in _v) t?.Dispose();
    }
}
