using Memopt.Tensors;

namespace Memopt.Model.Training;

/// <summary>
/// Training stopped because something became NaN or ±Inf. <see cref="Step"/> is the 1-based number of the step it
/// happened in, as progress lines print it. The weights and optimizer state are still those after the previous step:
/// every check runs before the update.
/// </summary>
public class NonFiniteException(long step, string message) : Exception(message)
{
    public long Step { get; } = step;
}

/// <summary>The loss of a micro-batch was NaN or ±Inf.</summary>
public sealed class NonFiniteLossException(long step, float value)
    : NonFiniteException(step, $"loss is {value} at step {step}: training stopped (lower --lr, check the data, or run with --detect-anomaly to find the first op that produced it)")
{
    public float Value { get; } = value;
}

/// <summary>The loss was finite but a parameter gradient was not (found by the gradient check after backward).</summary>
public sealed class NonFiniteGradientException(long step, string what)
    : NonFiniteException(step, $"non-finite gradient at step {step}: {what}; training stopped (run with --detect-anomaly to find the first op, or --skip-nonfinite to skip such steps)");

/// <summary>
/// --detect-anomaly found the first op whose forward output, or whose backward gradient for one of its inputs, holds
/// NaN/Inf. Names the op, its layer (−1 outside the blocks), the phase (forward, backward, or recompute under gradient
/// checkpointing), the tensor's shape and the step.
/// </summary>
public sealed class AnomalyException(long step, int microBatch, string op, int layer, Phase phase, string tensor, Shape shape, long bad)
    : NonFiniteException(step, $"anomaly at step {step} (micro-batch {microBatch + 1}): op '{op}' (layer {layer}, {phase.ToString().ToLowerInvariant()}) " +
                               $"produced {bad} non-finite value{(bad == 1 ? "" : "s")} of {shape.Numel} in its {tensor} {shape}")
{
    public int MicroBatch { get; } = microBatch;
    public string Op { get; } = op;
    public int Layer { get; } = layer;
    public Phase Phase { get; } = phase;
    /// <summary>"output", or "gradient of input k (…)".</summary>
    public string Tensor { get; } = tensor;
    public Shape Shape { get; } = shape;
    public long NonFiniteValues { get; } = bad;
}
