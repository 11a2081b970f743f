using Memopt.Tensors;

namespace Memopt.Autograd;

public static partial class Ops
{
    /// <summary>
    /// Gradient checkpointing (activation recompute): y = f(x), keeping only x for backward. The forward runs f with
    /// gradients off, so none of f's intermediates are saved; backward re-runs f on x's saved value under a nested tape
    /// (tracker phase recompute), backpropagates dy through that fresh graph (parameter gradients accumulate into their
    /// persistent buffers directly), hands x its gradient and frees everything the recompute made.
    /// f must be deterministic given its input: dropout inside it replays because its masks come from the
    /// counter RNG at the same (seed, offset). f must return a new Var (not x itself) and must not dispose x.
    /// <paramref name="record"/> records the node even when x needs no gradient, for an f whose parameters do.
    /// </summary>
    public static Var Checkpoint(Func<Var, Var> f, Var x, string op = "checkpoint", bool record = false)
    {
        // Nothing to save (no tape, or nothing upstream or inside needs a gradient): plain call.
        if (!Tape.IsRecording || !(x.RequiresGrad || record)) return f(x);
        Var y;
        using (Tape.NoGrad()) y = f(x);
        if (ReferenceEquals(y, x)) throw new InvalidOperationException($"{op}: the checkpointed function returned its input; it must return a new value");
        Tape.Record(op, y, [x], [x.Value], (dy, saved) =>
        {
            var tracker = dy.Device.Tracker;
            using var tape = new Tape();
            using var input = new Var(saved[0].Share(), requiresGrad: true, name: op + ".input");
            Var recomputed;
            using (tracker.EnterPhase(Phase.Recompute)) recomputed = f(input);
            using (recomputed)
            {
                if (!recomputed.Shape.Equals(dy.Shape))
                    throw new InvalidOperationException($"{op}: the recompute gave {recomputed.Shape}, the forward {dy.Shape}; f is not deterministic");
                if (recomputed.RequiresGrad) tape.Backward(recomputed, dy);
            }
            if (input.Grad is { } g)
            {
                if (x.RequiresGrad) x.AdoptOrAddGrad(g, op);
                input.ReleaseGrad();
            }
        }, always: true);
        return y;
    }
}
