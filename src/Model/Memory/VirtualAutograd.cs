using Memopt.Tensors;

namespace Memopt.Model.Memory;

/// <summary>
/// A handle on a predicted buffer, as <see cref="Tensor"/> is a handle on a Storage: views and shares retain it,
/// Dispose releases this handle's hold, and the buffer is freed when the last handle lets go.
/// </summary>
internal sealed class VTensor : IDisposable
{
    private bool _disposed;

    public VTensor(VirtualMemory memory, PredictedTensor buffer, Shape shape)
    {
        Memory = memory; Buffer = buffer; Shape = shape;
    }

    public VirtualMemory Memory { get; }
    public PredictedTensor Buffer { get; }
    public Shape Shape { get; }
    public DType DType => Buffer.DType;

    public VTensor View(Shape shape)
    {
        Memory.Retain(Buffer);
        return new VTensor(Memory, Buffer, shape);
    }

    public VTensor Share() => View(Shape);

    public void Dispose()
    {
        if (_disposed) return;
        _disposed = true;
        Memory.Release(Buffer);
    }
}

/// <summary>The stand-in for <see cref="Autograd.Var"/> and Parameter: a value handle, a gradient handle and the same gradient rules.</summary>
internal sealed class VVar : IDisposable
{
    public VVar(VTensor value, bool requiresGrad = false, string name = "", bool isParameter = false)
    {
        Value = value; RequiresGrad = requiresGrad; Name = name; IsParameter = isParameter;
    }

    public VTensor Value { get; }
    public VTensor? Grad { get; set; }
    public bool RequiresGrad { get; set; }
    public string Name { get; }
    public bool IsParameter { get; }
    /// <summary>Parameter.Bf16Copy: the bfloat16 copy the GEMMs read under --bf16 (null without one).</summary>
    public VTensor? Bf16Copy { get; set; }
    public Shape Shape => Value.Shape;
    public VirtualMemory Memory => Value.Memory;

    /// <summary>Var.GradBuffer: zeroed on first use, in the value's dtype (activation gradients follow their activations' storage type).</summary>
    public VTensor GradBuffer(string op)
    {
        if (Grad is null)
        {
            var b = Memory.Allocate(Value.Shape, Value.DType, MemoryCategory.ActivationGradients, "grad:" + op, $"d({Value.Buffer.Name})");
            Grad = new VTensor(Memory, b, Value.Shape);
        }
        return Grad;
    }

    /// <summary>Var.AdoptOrAddGrad: takes the gradient as a view when there is none yet.</summary>
    public void AdoptOrAddGrad(VTensor g, string op)
    {
        if (Grad is null && !IsParameter)
        {
            Grad = g.View(Value.Shape);
            return;
        }
        GradBuffer(op);
    }

    public void ReleaseGrad()
    {
        if (IsParameter) return;
        Grad?.Dispose();
        Grad = null;
    }

    public void Dispose() => Value.Dispose();
}

internal sealed class VNode(string op, VVar output, VVar[] inputs, VTensor[] saved, Action<VTensor, VTensor[]> backward, int layer)
{
    public string Op { get; } = op;
    public VVar Output { get; } = output;
    public VVar[] Inputs { get; } = inputs;
    public VTensor[] Saved { get; private set; } = saved;
    public Action<VTensor, VTensor[]> Backward { get; } = backward;
    public int Layer { get; } = layer;

    public void Release()
    {
        foreach (var t in Saved) t.Dispose();
        Saved = [];
    }
}

/// <summary>
/// The stand-in for <see cref="Autograd.Tape"/>: the same recording rule (only when some input needs a gradient and
/// no no-grad scope is open), the same saved-tensor retagging, and the same backward walk that frees each node's saved
/// tensors and its output's gradient right after the node ran.
/// </summary>
internal sealed class VTape : IDisposable
{
    private readonly List<VNode> _nodes = new();
    private readonly VAutograd _autograd;
    private readonly VTape? _previous;

    public VTape(VAutograd autograd)
    {
        _autograd = autograd;
        _previous = autograd.Current;
        autograd.Current = this;
    }

    public void Backward(VVar output, VTensor? seed = null)
    {
        var memory = output.Memory;
        using var phase = memory.EnterPhase(Phase.Backward);
        output.GradBuffer("seed");
        for (int i = _nodes.Count - 1; i >= 0; i--)
        {
            var node = _nodes[i];
            if (node.Output.Grad is { } g)
            {
                using var layer = memory.InLayer(node.Layer);
                node.Backward(g, node.Saved);
            }
            node.Release();
            node.Output.ReleaseGrad();
        }
        _nodes.Clear();
    }

    internal void Add(VNode node) => _nodes.Add(node);

    public void Dispose()
    {
        foreach (var node in _nodes) node.Release();
        _nodes.Clear();
        if (ReferenceEquals(_autograd.Current, this)) _autograd.Current = _previous;
    }
}

/// <summary>The recording state the real engine keeps in thread-statics: the current tape and the no-grad depth.</summary>
internal sealed class VAutograd(VirtualMemory memory)
{
    private int _noGradDepth;

    public VirtualMemory Memory { get; } = memory;
    public VTape? Current { get; set; }
    public bool IsRecording => Current is not null && _noGradDepth == 0;

    public NoGradScope NoGrad()
    {
        _noGradDepth++;
        return new NoGradScope(this);
    }

    public readonly struct NoGradScope(VAutograd owner) : IDisposable
    {
        public void Dispose() => owner._noGradDepth--;
    }

    /// <summary>Tape.Record: shares the saved tensors (activations and workspace become saved-for-backward) and adds the node.</summary>
    public void Record(string op, VVar output, VVar[] inputs, VTensor[] saved, Action<VTensor, VTensor[]> backward, bool always = false)
    {
        if (!IsRecording || !(always || inputs.Any(v => v.RequiresGrad))) return;
        var handles = new VTensor[saved.Length];
        for (int i = 0; i < saved.Length; i++)
        {
            handles[i] = saved[i].Share();
            if (handles[i].Buffer.Category is MemoryCategory.Activations or MemoryCategory.Workspace)
                Memory.Retag(handles[i].Buffer, MemoryCategory.SavedForBackward);
        }
        output.RequiresGrad = true;
        Current!.Add(new VNode(op, output, inputs, handles, backward, Memory.Layer));
    }
}
