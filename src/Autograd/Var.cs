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

    /// <summary>
    /// The gradient buffer backward kernels add into (+=), made and zeroed on first use. An activation's gradient has
    /// the activation's dtype (bf16 activations get bf16 gradients, accumulated in float32 inside each kernel and
    /// rounded once per store): the N×V logits gradient and the per-layer activation gradients are the largest
    /// transient tensors of a step, so float32 ones would give back most of what bf16 activations save.
    /// Parameters override this: their gradients are float32 (<see cref="Parameter"/>).
    /// </summary>
    public Tensor GradBuffer(string op)
    {
        Grad ??= Tensor.Zeros(Device, Value.Shape, Value.DType, GradCategory, "grad:" + op);
        return Grad;
    }

    /// <summary>
    /// Takes <paramref name="g"/> (viewed in this value's shape) as the gradient without copying when there is none
    /// yet; adds it otherwise. Only for a gradient nothing else will write to (the sole consumer's output gradient).
    /// </summary>
    internal void AdoptOrAddGrad(Tensor g, string op)
    {
        if (Grad is null && this is not Parameter && g.DType == Value.DType)
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

/// <summary>
/// A trainable leaf: float32 master weights, and a float32 gradient buffer allocated up front (category gradients) and
/// kept across steps. Under bf16 mixed precision a parameter used as a GEMM operand also has a bf16 shadow copy
/// (<see cref="Bf16Copy"/>) that the matmuls read; the optimizer updates the master and rewrites the shadow.
/// </summary>
public sealed class Parameter : Var
{
    public Parameter(Tensor value, string name) : base(value, requiresGrad: true, name)
    {
        Grad = Tensor.Zeros(value.Device, value.Shape, DType.F32, MemoryCategory.Gradients, "grad:" + name);
    }

    protected override MemoryCategory GradCategory => MemoryCategory.Gradients;

    /// <summary>
    /// The bf16 copy of the weights that bf16 matmuls read (category parameters, op "bf16:" + name), or null when the
    /// parameter has none. It equals the master rounded to nearest even once <see cref="RefreshBf16Copy"/> or an
    /// optimizer step has run after the master last changed.
    /// </summary>
    public Tensor? Bf16Copy { get; private set; }

    /// <summary>Allocates the bf16 shadow (once) and fills it from the master weights.</summary>
    public Tensor EnableBf16Copy()
    {
        if (Bf16Copy is null)
        {
            Bf16Copy = Tensor.Empty(Device, Value.Shape, DType.BF16, MemoryCategory.Parameters, "bf16:" + Name);
            RefreshBf16Copy();
        }
        return Bf16Copy;
    }

    /// <summary>Rewrites the shadow from the master (after the master was written other than by the optimizer, e.g. a checkpoint load).</summary>
    public void RefreshBf16Copy()
    {
        if (Bf16Copy is not null) Memopt.Kernels.Convert.ToBf16(Value, Bf16Copy);
    }

    /// <summary>Parameter gradients accumulate across backward passes until <see cref="ZeroGrad"/>.</summary>
    internal override void ReleaseGrad() { }

    public void ZeroGrad() => Grad!.Zero();

    public override void Dispose()
    {
        Grad?.Dispose();
        Bf16Copy?.Dispose();
        base.Dispose();
    }
}
