using FsCheck;
using FsCheck.Xunit;
using Memopt.Model;
using Memopt.Model.Memory;
using Memopt.Tensors;

namespace Memopt.Tests.Memory;

/// <summary>
/// The closed forms of docs/memory-model.md against the simulation, over random shapes and techniques (bf16 and flash
/// included: there the simulation is the specification of those techniques, and the formulas must agree with
/// it). No device: the model alone.
/// </summary>
public class MemoryFormulaTests
{
    private static (ModelConfig Config, MemoryModelSettings Settings) Random(int seed)
    {
        var rng = new Random(seed);
        int heads = rng.Next(1, 5), hd = rng.Next(1, 9), t = rng.Next(1, 40);
        var config = new ModelConfig
        {
            VocabSize = rng.Next(1, 400), DModel = heads * hd, Heads = heads, Layers = rng.Next(1, 5), DFF = rng.Next(1, 70), SeqLen = t,
            TiedHead = rng.Next(2) == 0, HeadBias = rng.Next(2) == 0, Norm = rng.Next(2) == 0 ? NormPlacement.Pre : NormPlacement.Post,
            Positions = rng.Next(2) == 0 ? PositionEncoding.Sinusoidal : PositionEncoding.Learned, Dropout = rng.Next(3) == 0 ? 0.1f : 0f,
        };
        var scopes = new CheckpointScope?[] { null, CheckpointScope.Block, CheckpointScope.Attention, CheckpointScope.Mlp };
        var scope = scopes[rng.Next(scopes.Length)];
        var settings = new MemoryModelSettings
        {
            BatchSize = rng.Next(1, 9), FlashAttention = rng.Next(2) == 0, WindowSize = rng.Next(2) == 0 ? null : rng.Next(1, t + 1),
            Checkpointing = scope is { } s ? new CheckpointSettings(rng.Next(1, 4), s) : null,
            Device = rng.Next(2) == 0 ? WorkspaceShape.H100 : WorkspaceShape.CpuAccelerator, GradClip = rng.Next(2) == 0,
        }.WithBf16(rng.Next(2) == 0);
        return (config, settings);
    }

    [Property(MaxTest = 200)]
    public void Closed_forms_equal_the_simulation(int seed)
    {
        var (c, s) = Random(seed);
        var p = MemoryModel.Predict(c, s);
        string what = $"{c}; {Memopt.Runner.Memory.MemoryReportText.Technique(s)}, batch {s.BatchSize}";
        Assert.True(MemoryFormulas.ParameterBytes(c, s) == p.AtPeak[MemoryCategory.Parameters], what);
        Assert.True(MemoryFormulas.GradientBytes(c) == p.AtPeak[MemoryCategory.Gradients], what);
        Assert.True(MemoryFormulas.OptimizerBytes(c) == p.AtPeak[MemoryCategory.OptimizerState], what);
        Assert.True(MemoryFormulas.DataBytes(c, s) == p.AtPeak[MemoryCategory.Data], what);
        for (int l = 0; l < c.Layers; l++)
        {
            long simulated = p.SavedInLayer(l).Sum(x => x.Bytes), formula = MemoryFormulas.SavedPerBlock(c, s, s.Checkpointing?.For(l));
            Assert.True(simulated == formula, $"{what}: block {l} keeps {simulated} B, the closed form says {formula} B");
        }
        long outside = p.SavedOutsideBlocks.Sum(x => x.Bytes);
        Assert.True(outside == MemoryFormulas.SavedOutsideBlocks(c, s), $"{what}: outside the blocks {outside} B vs {MemoryFormulas.SavedOutsideBlocks(c, s)} B");
        // The cross-entropy backward is one moment of the step: the peak is at least that, and exactly that when it is the peak.
        long ce = MemoryFormulas.PeakAtCrossEntropyBackward(c, s);
        if (p.Moment.Op == "grad:cross_entropy") Assert.True(p.PeakBytes == ce, $"{what}: peak {p.PeakBytes} B, closed form {ce} B");
        else Assert.True(p.PeakBytes > ce, $"{what}: peak {p.PeakBytes} B at {p.Moment} is below the cross-entropy moment's {ce} B");
    }

    [Property(MaxTest = 50)]
    public void Memory_is_affine_in_the_batch_when_the_peak_moment_stays(PositiveInt b, int seed)
    {
        // Every activation term is proportional to B and the persistent terms do not depend on it, so three batches
        // whose peak is at the same op give collinear peaks: the model extrapolates exactly with the batch.
        var (c, s) = Random(seed);
        int b1 = b.Get % 16 + 1;
        var p = new[] { b1, b1 + 1, b1 + 3 }.Select(x => MemoryModel.Predict(c, s with { BatchSize = x })).ToArray();
        if (p.Select(x => (x.Moment.Op, x.Moment.Layer, x.Moment.Phase)).Distinct().Count() != 1) return;
        Assert.True(3 * (p[1].PeakBytes - p[0].PeakBytes) == p[2].PeakBytes - p[0].PeakBytes,
            $"peaks {p[0].PeakBytes}, {p[1].PeakBytes}, {p[2].PeakBytes} at batches {b1}, {b1 + 1}, {b1 + 3}");
    }

    [Fact]
    public void Bf16_halves_the_activations_and_flash_removes_the_scores()
    {
        var c = ModelConfig.Preset("lab4");
        var fp32 = MemoryModel.Predict(c, new MemoryModelSettings { BatchSize = 8 });
        var bf16 = MemoryModel.Predict(c, new MemoryModelSettings { BatchSize = 8 }.WithBf16());
        var flash = MemoryModel.Predict(c, new MemoryModelSettings { BatchSize = 8, FlashAttention = true });
        // Activations, saved tensors, scores and activation gradients: 2 bytes instead of 4 except the float32
        // LayerNorm statistics and log-sum-exps (8 rows of 4 bytes each... a few KiB).
        foreach (var cat in new[] { MemoryCategory.AttentionScores, MemoryCategory.ActivationGradients })
            Assert.Equal(fp32.AtPeak[cat] / 2, bf16.AtPeak[cat], tolerance: 4);
        Assert.True(bf16.AtPeak[MemoryCategory.SavedForBackward] < 0.51 * fp32.AtPeak[MemoryCategory.SavedForBackward]);
        // Master weights, their gradients and Adam stay float32; the bf16 weight copies add 2 bytes per GEMM weight.
        Assert.Equal(fp32.AtPeak[MemoryCategory.Gradients], bf16.AtPeak[MemoryCategory.Gradients]);
        Assert.Equal(fp32.AtPeak[MemoryCategory.OptimizerState], bf16.AtPeak[MemoryCategory.OptimizerState]);
        Assert.Equal(fp32.AtPeak[MemoryCategory.Parameters] + 2L * (4 * (4 * 128 * 128 + 2 * 128 * 1024) + 12000 * 128), bf16.AtPeak[MemoryCategory.Parameters]);
        Assert.Equal(0, flash.PeakPerCategory[MemoryCategory.AttentionScores]);
        Assert.True(flash.PeakBytes < fp32.PeakBytes);
    }
}
