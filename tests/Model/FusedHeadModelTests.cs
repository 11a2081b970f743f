using Memopt.Autograd;
using Memopt.Model;
using Memopt.Tensors;
using Memopt.Tests.Harness;
using static Memopt.Tests.Model.TransformerLMTests;

namespace Memopt.Tests.Model;

/// <summary>
/// TransformerLM.Loss with the fused, chunked head (--fused-head) against the same model with materialized logits:
/// same seed, same weights, same batch. The fused head changes where the logits live, not the function.
/// </summary>
public class FusedHeadModelTests(ITestOutputHelper output)
{
    private static ModelConfig Config => Tiny(vocab: 29, t: 8) with { DModel = 16, DFF = 32 };

    private static (float Loss, float[][] Grads) LossAndGradients(TransformerLM model, Tensor ids, Tensor targets, HeadSettings? head, float smoothing)
    {
        foreach (var p in model.Parameters) p.ZeroGrad();
        float value;
        using (var tape = new Tape())
        {
            using var loss = model.Loss(ids, targets, new AttentionSettings(null), ForwardContext.Evaluation, smoothing, head: head);
            value = loss.Value.ToFloatArray()[0];
            tape.Backward(loss);
        }
        return (value, model.Parameters.Select(p => p.Grad!.ToFloatArray()).ToArray());
    }

    private static double RelativeError(float[] got, float[] want) =>
        GradCheck.RelativeError(got.Select(v => (double)v).ToArray(), want.Select(v => (double)v).ToArray());

    /// <summary>
    /// float32: both compute the same sums in a different order (the logits GEMM per chunk, dW summed over chunks),
    /// so loss and gradients agree to a few float32 ulps of their scale: 1e-5 relative.
    /// bf16: both round the logits and G to bf16, but the fused head adds the bias in float32 before rounding once
    /// where the unfused one rounds the product and the sum, and sums dW over chunks: a few bf16 ulps (2^-8) of the
    /// loss and the head's gradients. 1e-2 relative on the loss and 0.05 of each gradient's largest entry (the
    /// tolerances of the bf16 model tests) still catch a dropped chunk, a missed bias or an unscaled gradient (O(1)).
    /// </summary>
    [Theory]
    [InlineData(false, true, 5, 0f)]
    [InlineData(false, false, 24, 0.1f)]
    [InlineData(true, false, 7, 0f)]
    [InlineData(true, true, 1000, 0.1f)]
    public void Fused_head_matches_materialized_logits(bool bf16, bool tied, int chunkRows, float smoothing)
    {
        var dev = TestDevice.Get();
        var config = Config with { TiedHead = tied, HeadBias = !tied };
        using var model = new TransformerLM(dev, config, seed: 3, bf16 ? Precision.Bf16 : Precision.Fp32);
        var (ids, targets) = Batch(dev, 3, config.SeqLen, config.VocabSize, 4);
        using var _ids = ids;
        using var _targets = targets;
        var (plainLoss, plain) = LossAndGradients(model, ids, targets, null, smoothing);
        var (fusedLoss, fused) = LossAndGradients(model, ids, targets, new HeadSettings(chunkRows), smoothing);
        double lossTolerance = bf16 ? 1e-2 : 1e-5, gradTolerance = bf16 ? 0.05 : 1e-5;
        output.WriteLine($"loss materialized {plainLoss:F6}, fused {fusedLoss:F6}");
        Assert.True(Math.Abs(fusedLoss - plainLoss) <= lossTolerance * plainLoss, $"loss: fused {fusedLoss} vs materialized {plainLoss}");
        for (int i = 0; i < plain.Length; i++)
        {
            double error = RelativeError(fused[i], plain[i]);
            output.WriteLine($"{model.Parameters[i].Name}: {error:E2}");
            Assert.True(error <= gradTolerance, $"{model.Parameters[i].Name}: fused gradient off by {error:E3} of its largest entry");
        }
    }

    [Fact]
    public void Evaluation_loss_is_the_same_without_a_tape()
    {
        var dev = TestDevice.Get();
        using var model = new TransformerLM(dev, Config with { TiedHead = false, HeadBias = true }, seed: 4);
        var (ids, targets) = Batch(dev, 2, Config.SeqLen, Config.VocabSize, 9);
        using var _ids = ids;
        using var _targets = targets;
        using var noGrad = Tape.NoGrad();
        using var plain = model.Loss(ids, targets, new AttentionSettings(null), ForwardContext.Evaluation);
        using var fused = model.Loss(ids, targets, new AttentionSettings(null), ForwardContext.Evaluation, head: new HeadSettings(3));
        float a = plain.Value.ToFloatArray()[0], b = fused.Value.ToFloatArray()[0];
        Assert.True(Math.Abs(a - b) <= 1e-5 * a, $"{b} vs {a}");
    }
}
