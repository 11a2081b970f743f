using Memopt.Tensors;

namespace Memopt.Autograd;

/// <summary>One recorded op: what it consumed, what it produced, what it kept for backward, and how to go back.</summary>
public sealed class Node
{
    internal Node(string op, Var output, Var[] inputs, Tensor[] saved, Action<Tensor, Tensor[]> backward, int layer)
    {
        Op = op; Output = output; Inputs = inputs; Saved = saved; Backward = backward; Layer = layer;
    }

    public string Op { get; }
    public Var Output { get; }
    public Var[] Inputs { get; }
    public Tensor[] Saved { get; private set; }
    internal Action<Tensor, Tensor[]> Backward { get; }
    public int Layer { get; }
    public bool Released { get; private set; }

    internal void Release()
    {
        if (Released) return;
        Released = true;
        foreach (var t in Saved) t.Dispose();
        Saved = [];
    }
}

/// <summary>
/// Reverse-mode tape. Ops record a node while a tape is active and gradients are enabled; <see cref="Backward"/>
/// walks the nodes in reverse, calls each backward with the gradient of its output, and then releases the tensors
/// the node saved and its output's gradient (visible in the tracker as frees in the backward phase).
/// A tape is used once: after backward its nodes are gone, and a second backward is an error.
/// </summary>
public sealed class Tape : IDisposable
{
    [ThreadStatic] private static Tape? _current;
    [ThreadStatic] private static int _noGradDepth;
    [ThreadStatic] private static ITapeObserver? _observer;

    private readonly List<Node> _nodes = new();
    private readonly Tape? _previous;
    private bool _backwardDone;

    public Tape()
    {
        _previous = _current;
        _current = this;
    }

    public static Tape? Current => _current;

    /// <summary>True when an op should record itself: a tape is active and no no-grad scope is open.</summary>
    public static bool IsRecording => _current is not null && _noGradDepth == 0;

    public IReadOnlyList<Node> Nodes => _nodes;

    /// <summary>Ops inside the scope record nothing and save nothing (evaluation, optimizer updates, recompute bookkeeping).</summary>
    public static NoGradScope NoGrad()
    {
        _noGradDepth++;
        return new NoGradScope();
    }

    public readonly struct NoGradScope : IDisposable
    {
        public void Dispose() => _noGradDepth--;
    }

    /// <summary>
    /// Installs <paramref name="observer"/> on this thread until the returned scope is disposed (the previous one is then
    /// restored): it sees every recorded op right after its forward and every node right after its backward ran.
    /// Anomaly detection uses it; with none installed the tape pays one null check per op.
    /// </summary>
    public static ObserverScope Observe(ITapeObserver? observer)
    {
        var previous = _observer;
        _observer = observer;
        return new ObserverScope(previous);
    }

    public readonly struct ObserverScope(ITapeObserver? previous) : IDisposable
    {
        public void Dispose() => _observer = previous;
    }

    /// <summary>
    /// Records an op if any input needs a gradient. The tape takes its own handle on each saved tensor (retagged
    /// saved-for-backward) so the caller may dispose its copies; those handles go when the node's backward has run.
    /// Backward receives the output gradient and the tape's handles, in the order they were saved: it must read
    /// saved values through them, never through the input Vars, whose values the caller may already have released.
    /// <paramref name="always"/> records even when no listed input needs a gradient: an op whose backward reaches
    /// parameters its inputs do not list (a gradient checkpoint, which re-runs its function in backward).
    /// </summary>
    public static void Record(string op, Var output, Var[] inputs, Tensor[] saved, Action<Tensor, Tensor[]> backward, bool always = false)
    {
        var tracker = output.Device.Tracker;
        tracker.Listener?.OnOpForward(tracker, op);
        if (!IsRecording || !(always || inputs.Any(v => v.RequiresGrad))) return;
        var tape = _current!;
        if (tape._backwardDone) throw new InvalidOperationException($"{op}: the tape already ran backward; start a new tape for a new step");
        var handles = new Tensor[saved.Length];
        for (int i = 0; i < saved.Length; i++)
        {
            handles[i] = saved[i].Share();
            var allocation = handles[i].Storage.Allocation;
            // Attention scores keep their own category while saved: they are what flash attention removes, and the
            // report must show them apart. Inputs, parameters and gradients keep theirs too.
            if (allocation.Category is MemoryCategory.Activations or MemoryCategory.Workspace)
                handles[i].Device.Tracker.Retag(allocation, MemoryCategory.SavedForBackward);
        }
        output.RequiresGrad = true;
        var node = new Node(op, output, inputs, handles, backward, tracker.Layer);
        tape._nodes.Add(node);
        _observer?.AfterForward(node);
    }

    /// <summary>Backpropagates from a scalar loss (seed 1), or from any output with an explicit seed gradient.</summary>
    public void Backward(Var output, Tensor? seed = null)
    {
        if (_backwardDone) throw new InvalidOperationException("backward through a released graph: this tape already ran backward");
        if (!output.RequiresGrad) throw new InvalidOperationException($"backward: {output} does not require a gradient (nothing recorded it)");
        _backwardDone = true;
        var tracker = output.Device.Tracker;
        using var phase = tracker.EnterPhase(Phase.Backward);
        var grad = output.GradBuffer("seed");
        if (seed is null)
        {
            if (output.Value.Numel != 1) throw new InvalidOperationException($"backward: output {output.Shape} is not a scalar; pass a seed gradient");
            grad.CopyFrom([1f]);
        }
        else
        {
            if (!seed.Shape.Equals(output.Shape)) throw new InvalidOperationException($"backward: seed {seed.Shape} does not match output {output.Shape}");
            Memopt.Kernels.Elementwise.AddInto(seed, grad, 1f);
        }
        for (int i = _nodes.Count - 1; i >= 0; i--)
        {
            var node = _nodes[i];
            if (node.Output.Grad is { } g)
            {
                using var layer = tracker.InLayer(node.Layer);
                tracker.Listener?.OnBackwardBegin(tracker, node.Op);
                node.Backward(g, node.Saved);
                tracker.Listener?.OnBackwardEnd(tracker, node.Op);
                _observer?.AfterBackward(node);
            }
            node.Release();
            node.Output.ReleaseGrad();
        }
        _nodes.Clear();
    }

    /// <summary>Releases whatever backward did not (a forward-only pass, or an exception midway).</summary>
    public void Dispose()
    {
        foreach (var node in _nodes) node.Release();
        _nodes.Clear();
        if (ReferenceEquals(_current, this)) _current = _previous;
    }
}

/// <summary>Sees the tape's work as it happens (see <see cref="Tape.Observe"/>); may throw to stop the step.</summary>
public interface ITapeObserver
{
    /// <summary>The op's output is computed (node.Output.Value) and the node recorded; the tracker still has the op's layer and phase.</summary>
    void AfterForward(Node node);
    /// <summary>The node's backward has added into its inputs' gradients (input.Grad for inputs that require one).</summary>
    void AfterBackward(Node node);
}
