namespace Memopt.Tensors;

/// <summary>What a device buffer is for. Every allocation carries exactly one; the tracker sums live and peak bytes per category.</summary>
public enum MemoryCategory
{
    Parameters,
    Gradients,
    OptimizerState,
    Activations,
    SavedForBackward,
    AttentionScores,
    /// <summary>Gradients of intermediate activations during backward (not parameter gradients).</summary>
    ActivationGradients,
    Workspace,
    Data,
}

/// <summary>Where in a training step an allocation or free happened.</summary>
public enum Phase
{
    Setup,
    Forward,
    Backward,
    /// <summary>The extra forward that gradient checkpointing runs during backward.</summary>
    Recompute,
    Optimizer,
    Evaluation,
}

public static class MemoryCategories
{
    public static readonly MemoryCategory[] All = Enum.GetValues<MemoryCategory>();
    public static readonly Phase[] Phases = Enum.GetValues<Phase>();

    public static string Label(this MemoryCategory c) => c switch
    {
        MemoryCategory.Parameters => "parameters",
        MemoryCategory.Gradients => "gradients",
        MemoryCategory.OptimizerState => "optimizer_state",
        MemoryCategory.Activations => "activations",
        MemoryCategory.SavedForBackward => "saved_for_backward",
        MemoryCategory.AttentionScores => "attention_scores",
        MemoryCategory.ActivationGradients => "activation_gradients",
        MemoryCategory.Workspace => "workspace",
        MemoryCategory.Data => "data",
        _ => c.ToString(),
    };

    public static string Label(this Phase p) => p.ToString().ToLowerInvariant();
}
