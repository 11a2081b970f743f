using Memopt.Autograd;
using Memopt.Kernels;
using Memopt.Tensors;

namespace Memopt.Model.Training;

/// <summary>
/// --detect-anomaly: a tape observer that counts the NaN/Inf values of every op's output right after its forward and
/// of every input gradient right after the op's backward, and throws an <see cref="AnomalyException"/> at the first
/// one. Ops run in order, so the first op reported is the one that turned finite values into non-finite ones
/// (in backward, gradients accumulate: the first node whose backward makes an input's gradient non-finite is named).
/// Each check is one launch and a device read-back per tensor, so this is a diagnostic mode, not for timing.
/// Only recorded ops are seen: inside a gradient-checkpointed block the forward runs unrecorded and is checked when
/// it is recomputed in backward (phase recompute); the checkpoint op's own output is checked in the forward.
/// </summary>
public sealed class AnomalyDetector : ITapeObserver
{
    /// <summary>1-based step and 0-based micro-batch the trainer is in, for the report.</summary>
    public long Step { get; set; }
    public int MicroBatch { get; set; }

    public void AfterForward(Node node)
    {
        var y = node.Output.Value;
        if (!IsFloat(y)) return;
        long bad = NonFinite.Count(y);
        if (bad > 0) throw Report(node, "output", y.Shape, bad);
    }

    public void AfterBackward(Node node)
    {
        for (int i = 0; i < node.Inputs.Length; i++)
        {
            var input = node.Inputs[i];
            if (!input.RequiresGrad || input.Grad is not { } g || !IsFloat(g)) continue;
            long bad = NonFinite.Count(g);
            if (bad > 0)
            {
                string which = input is Parameter p ? $"parameter {p.Name}" : string.IsNullOrEmpty(input.Name) ? $"input {i}" : input.Name;
                throw Report(node, $"gradient for input {i} ({which})", g.Shape, bad);
            }
        }
    }

    private AnomalyException Report(Node node, string tensor, Shape shape, long bad) =>
        new(Step, MicroBatch, node.Op, node.Layer, node.Output.Device.Tracker.Phase, tensor, shape, bad);

    private static bool IsFloat(Tensor t) => !t.IsDisposed && t.DType is DType.F32 or DType.BF16;
}
