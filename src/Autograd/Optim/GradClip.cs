using Memopt.Kernels;
using Memopt.Tensors;

namespace Memopt.Autograd.Optim;

/// <summary>Global gradient-norm clipping over parameter gradients (torch.nn.utils.clip_grad_norm_).</summary>
public static class GradClip
{
    /// <summary>The global L2 norm of all parameter gradients (one device read-back).</summary>
    public static float GlobalNorm(IReadOnlyList<Parameter> parameters)
    {
        if (parameters.Count == 0) return 0f;
        using var phase = parameters[0].Device.Tracker.EnterPhase(Phase.Optimizer);
        return GradNorm.Global(Gradients(parameters));
    }

    /// <summary>
    /// Scales all gradients by maxNorm/(norm + 1e-6) when that is below 1 and returns the norm before clipping.
    /// A non-finite norm leaves the gradients untouched (check <c>float.IsFinite</c> on the result to skip the step).
    /// </summary>
    public static float ClipGradNorm(IReadOnlyList<Parameter> parameters, float maxNorm)
    {
        if (parameters.Count == 0) return 0f;
        using var phase = parameters[0].Device.Tracker.EnterPhase(Phase.Optimizer);
        return GradNorm.Clip(Gradients(parameters), maxNorm);
    }

    private static Tensor[] Gradients(IReadOnlyList<Parameter> parameters) =>
        parameters.Select(p => p.Grad ?? throw new InvalidOperationException($"grad_norm: parameter {p.Name} has no gradient buffer")).ToArray();
}
