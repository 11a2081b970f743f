using Memopt.Tensors;

namespace Memopt.Model;

/// <summary>How a model stores what a step creates, chosen when the model is built (<c>--bf16</c>).</summary>
public enum Precision
{
    /// <summary>float32 everything.</summary>
    Fp32,
    /// <summary>
    /// bf16 mixed precision: activations, tensors saved for backward, attention scores and probabilities, logits and
    /// activation gradients stored as bf16; the weights of every matmul (QKV, attention output, MLP up and down, the
    /// LM head — the token embedding when tied) read from bf16 shadow copies. All kernel math and accumulation is
    /// float32; float32 master weights, parameter gradients, Adam moments, LayerNorm statistics and the loss.
    /// </summary>
    Bf16,
}

public static class Precisions
{
    /// <summary>The dtype activations (and their gradients) are stored in.</summary>
    public static DType ActivationDType(this Precision p) => p == Precision.Bf16 ? DType.BF16 : DType.F32;

    public static string Label(this Precision p) => p == Precision.Bf16 ? "bf16" : "fp32";
}
