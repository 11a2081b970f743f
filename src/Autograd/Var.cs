using Memopt.Tensors;

namespace Memopt.Autograd;

/// <summary>
/// A value in the graph: a tensor, and the gradient that flows back to it. Disposing a Var releases the caller's
/// handle on its value; the tape keeps its own handles on what backward needs, so memory is freed as soon as
/// neither the model code nor the tape holds it.
/// </summary>
public class Var : IDisposable
{
    public Var(Tensor value, bool requiresGrad = false, string name = "")
    {
        Value = value;
        RequiresGrad = requiresGrad;
        Name = name;
    }

    public Tensor Value { get; }
    public Tensor? Grad { get; internal set; }
    public bool RequiresGrad { get; internal set; }
    public string Name { get; }
    public Shape Shape => Value.Shape;
    public ComputeDevice Device => Value.Device;

    /// <summary>The gradient buffer backward kernels add into (+=), made and zeroed on first use.</summary>
    public Tensor GradBuffer(string op)
    {
        Grad ??= Tensor.Zeros(Device, Value.Shape, DType.F32, GradCategory, "grad:" + op);
        return Grad;
    }

    /// <summary>
    /// Takes <paramref name="g"/> (viewed in this value's shape) as the gradient without copying when there is none
    /// yet; adds it otherwise. Only for a gradient nothing else will write to (the sole consumer's output gradient).
    /// </summary>
    internal void AdoptOrAddGrad(Tensor g, string op)
    {
        if (Grad is null && this is not Parameter)
        {
            Grad = g.View(Value.Shape);
            return;
        }
        using var view = g.View(Value.Shape);
        Memopt.Kernels.Elementwise.AddInto(view, GradBuffer(op), 1f);
    }

    protected virtual MemoryCategory GradCategory => MemoryCategory.ActivationGradients;

    /// <summary>Frees a non-parameter gradient once the op that produced this value has consumed it.</summary>
    internal virtual void ReleaseGrad()
    {
        Grad?.Dispose();
        Grad = null;
    }

    public virtual void Dispose()
    {
        Value.Dispose();
        GC.SuppressFinalize(this);
    }

    public override string ToString() => $"Var({Name}) {Value}";
}

/// <summary>A trainable leaf: its gradient buffer is allocated up front (category gradients) and kept across steps.</summary>
public sealed class Parameter : Var
{
    public Parameter(Tensor value, string name) : base(value, requiresGrad: true, name)
    {
        Grad = Tensor.Zeros(value.Device, value.Shape, DType.F32, MemoryCategory.Gradients, "grad:" + name);
    }

    protected override MemoryCategory GradCategory => MemoryCategory.Gradients;

    /// <summary>Parameter gradients accumulate across backward passes until <see cref="ZeroGrad"/>.</summary>
    internal override void ReleaseGrad() { }

    public void ZeroGrad() => Grad!.Zero();

    public override void Dispose()
    {
        Grad?.Dispose();
        base.Dispose();
    }
}
