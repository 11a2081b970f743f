using Memopt.Kernels;
using Memopt.Model;
using Memopt.Model.Memory;
using Memopt.Tensors;
using static Memopt.Kernels.TensorCoreGemm;

namespace Memopt.Tests.Memory;

/// <summary>
/// The tensor-core GEMM's split-K workspace: <see cref="TensorCoreGemm.PlanOf"/> (the one decision the kernel's Run and
/// the memory model both call) on the H100's shape for the study's bf16 GEMMs, with the splits derived by hand from
/// the rule, and the memory model's workspace events for a bf16 step on <see cref="WorkspaceShape.H100"/>. The CPU
/// accelerator has one multiprocessor (ComputeDevice opens it so), so the emulated twin never splits by itself there
/// and an event-for-event run with 132 multiprocessors cannot be made on the CPU; the recorded H100 bf16 runs
/// (H100RunsTests) check the byte counts against the real kernel instead.
/// </summary>
public class SplitKWorkspaceTests
{
    private const int H100Sms = 132;

    /// <summary>
    /// The rule, for the default deep tile NarrowK64 (128×128 output tiles, 64-deep K slices) on 132 SMs:
    /// tiles = ⌈M/128⌉·⌈N/128⌉; split only if tiles &lt; 132 and slices = ⌈K/64⌉ ≥ 16; then
    /// splits = clamp(min(⌈264/tiles⌉, ⌊slices/8⌋), 1, 64) (264 = 2 resident narrow groups per SM), and
    /// splits = ⌈slices/⌈slices/splits⌉⌉ (no empty split). Weight gradients dW[out,in] += dyᵀ·x have M = out, N = in,
    /// K = B·T rows; A = dy read transposed (ld = out), B = x (ld = in), all multiples of 8 so both load with cp.async.
    /// </summary>
    [Theory]
    // lab4 (C 128, F 1024, V 12000) at batch 32: K = 32·256 = 8192, 128 slices, at most 16 splits.
    [InlineData(384, 128, 8192, 16)]    // qkv: 3 tiles, ⌈264/3⌉ = 88 → 16; 128/16 = 8 slices each
    [InlineData(128, 128, 8192, 16)]    // attn.proj: 1 tile → 16
    [InlineData(1024, 128, 8192, 16)]   // mlp.fc: 8 tiles, 33 → 16
    [InlineData(128, 1024, 8192, 16)]   // mlp.proj: 8 tiles → 16
    [InlineData(12000, 128, 8192, 3)]   // lm_head (tied wte): 94 tiles, ⌈264/94⌉ = 3; ⌈128/3⌉ = 43 slices each, ⌈128/43⌉ = 3
    // lab4 at batch 128: K = 32768, 512 slices, at most 64 splits.
    [InlineData(384, 128, 32768, 64)]   // qkv: 88 → 64 (the ⌊slices/8⌋ and the clamp)
    [InlineData(12000, 128, 32768, 3)]  // lm_head: 3; ⌈512/3⌉ = 171, ⌈512/171⌉ = 3
    // rtx5090 (C 256, F 1024, V 50257, untied head) at batch 32: K = 8192.
    [InlineData(768, 256, 8192, 16)]    // qkv: 6·2 = 12 tiles, 22 → 16
    [InlineData(256, 256, 8192, 16)]    // attn.proj: 4 tiles, 66 → 16
    [InlineData(1024, 256, 8192, 16)]   // mlp.fc: 16 tiles, ⌈264/16⌉ = 17 → 16
    [InlineData(256, 1024, 8192, 16)]   // mlp.proj: 16 tiles → 16
    [InlineData(50257, 256, 8192, 1)]   // lm_head: ld 50257 is no multiple of 8, so the narrow tile; 393·2 = 786 tiles ≥ 132: no split
    // No empty split: 130 slices over 16 splits is 9 slices each, which needs only ⌈130/9⌉ = 15 splits.
    [InlineData(128, 128, 130 * 64, 15)]
    // Too short a K: 15 slices (< 16) never split, however few the tiles.
    [InlineData(128, 128, 15 * 64, 1)]
    public void Weight_gradient_splits_on_the_H100_are_the_hand_derived_ones(int m, int n, int k, int splits)
    {
        int layout = LayoutOf(aTransposed: true, aVector: m % 8 == 0, bTransposed: false, bVector: n % 8 == 0);
        var plan = PlanOf(m, n, k, batch: 1, sumBatches: false, layout, deepTiles: true, H100Sms);
        Assert.Equal(m % 8 == 0 ? Tile.NarrowK64 : Tile.Narrow, plan.Tile); // dyᵀ is MN-contiguous: scalar loads take the narrow tile
        Assert.Equal(splits, plan.Splits);
        Assert.Equal(splits > 1 ? new Shape(splits, 1, m, n) : null, plan.SplitKWorkspace);
        Assert.True((long)plan.SlicesPerSplit * (plan.Splits - 1) < plan.KTiles, "every split has at least one slice");
    }

    /// <summary>
    /// What changes the tile changes the slices and so the splits: without the deep tiles (or with an MN-contiguous
    /// operand on scalar loads) the narrow tile's 32-deep slices double the slice count; a wide tile targets one
    /// resident group per SM; a summed batch (C batch stride 0) counts the slices of every batch; one SM never splits.
    /// </summary>
    [Fact]
    public void Tile_layout_batch_and_multiprocessors_enter_the_decision()
    {
        int aligned = LayoutOf(true, true, false, true);
        // lm_head dW at lab4 b32 with the narrow tile: 256 slices, ⌈264/94⌉ = 3, ⌈256/3⌉ = 86, ⌈256/86⌉ = 3.
        var narrow = PlanOf(12000, 128, 8192, 1, false, aligned, deepTiles: false, H100Sms);
        Assert.Equal((Tile.Narrow, 256, 3), (narrow.Tile, narrow.KTiles, narrow.Splits));
        // B = x with ld 100 (not a multiple of 8) is an MN-contiguous operand on scalar loads: narrow even with deep tiles.
        var scalar = PlanOf(128, 100, 8192, 1, false, LayoutOf(true, true, false, false), deepTiles: true, H100Sms);
        Assert.Equal((Tile.Narrow, 256, 32), (scalar.Tile, scalar.KTiles, scalar.Splits));
        // Wide tile (forced): 256-wide output tiles, target 132: qkv of lab4 has 3 tiles, ⌈132/3⌉ = 44, ⌊256/8⌋ = 32 → 32.
        var wide = PlanOf(384, 128, 8192, 1, false, aligned, deepTiles: true, H100Sms, requestedTile: Tile.Wide);
        Assert.Equal((1, 32), (wide.TilesN, wide.Splits));
        // A broadcast weight's gradient summed over a batch of 4 (K = 2048 each): 4·32 = 128 slices, one output.
        var summed = PlanOf(128, 128, 2048, 4, sumBatches: true, aligned, deepTiles: true, H100Sms);
        Assert.Equal(new Shape(16, 1, 128, 128), summed.SplitKWorkspace);
        // The CPU accelerator's one multiprocessor: tiles ≥ SMs, never split.
        Assert.Null(PlanOf(128, 128, 8192, 1, false, aligned, deepTiles: false, multiprocessors: 1).SplitKWorkspace);
        // Forced splits (the emulated twin's tests) still drop empty splits: 5 slices cannot make 8 splits.
        Assert.Equal(5, PlanOf(16, 16, 5 * 32, 1, false, aligned, deepTiles: false, 1, splits: 8).Splits);
    }

    [Fact]
    public void A_one_element_bf16_C_gets_a_float32_stand_in()
    {
        Assert.Equal(new Shape(1), StandInFor(DType.BF16, 2));
        Assert.Null(StandInFor(DType.BF16, 4));
        Assert.Null(StandInFor(DType.F32, 4));
    }

    /// <summary>
    /// The model's split-K events for one lab4 bf16 step at batch 32 on the H100, in order. Forward: mlp.proj's GEMM
    /// (M 8192, N 128, K 1024: 64 tiles, 16 slices → min(⌈264/64⌉ = 5, 2) = 2 splits) in each block. Backward: lm_head's
    /// dx (M 8192, N 128, K 12000: 188 slices → 5) and dW (3, above); then per block, last first: mlp.proj dW (16),
    /// mlp.fc dx (K 1024 → 2) and dW (16), attn.proj dW (16), qkv dW (16). The attention GEMMs (B·H = 128 matrices) fill
    /// the GPU and K ≤ 256 elsewhere: no split. fp32 and the CPU accelerator never take the tensor-core path.
    /// </summary>
    [Fact]
    public void A_bf16_step_on_the_H100_rents_the_split_K_partials_of_its_GEMMs()
    {
        var lab4 = ModelConfig.Preset("lab4");
        var settings = new MemoryModelSettings { BatchSize = 32, Device = WorkspaceShape.H100, RecordTimeline = true }.WithBf16();
        var events = MemoryModel.Predict(lab4, settings).Timeline
            .Where(e => e.Op == SplitKOp && e.Kind == MemoryEventKind.Allocate).ToList();
        Assert.All(events, e => Assert.Equal(MemoryCategory.Workspace, e.Category));

        Shape Rows(int splits) => new(splits, 1, 8192, 128);
        var forward = Enumerable.Range(0, 4).Select(_ => (Phase.Forward, Rows(2)));
        var backward = new[] { (Phase.Backward, Rows(5)), (Phase.Backward, new Shape(3, 1, 12000, 128)) }
            .Concat(Enumerable.Range(0, 4).SelectMany(_ => new[]
            {
                (Phase.Backward, new Shape(16, 1, 128, 1024)), (Phase.Backward, Rows(2)), (Phase.Backward, new Shape(16, 1, 1024, 128)),
                (Phase.Backward, new Shape(16, 1, 128, 128)), (Phase.Backward, new Shape(16, 1, 384, 128)),
            }));
        var expected = forward.Concat(backward).Select(x => (x.Item1, x.Item2.Numel * 4)).ToList();
        Assert.Equal(expected, events.Select(e => (e.Phase, e.Bytes)).ToList());
        Assert.Equal(20_971_520, MemoryModel.Predict(lab4, settings with { RecordTimeline = false }).PeakPerCategory[MemoryCategory.Workspace]);

        Assert.DoesNotContain(MemoryModel.Predict(lab4, settings.WithBf16(false)).Timeline, e => e.Op == SplitKOp);
        Assert.DoesNotContain(MemoryModel.Predict(lab4 with { Layers = 1 }, settings with { Device = WorkspaceShape.CpuAccelerator }).Timeline, e => e.Op == SplitKOp);
    }

    /// <summary>
    /// The same for an fp32 step under 3xTF32 (<see cref="Fp32Matmul.Tf32x3"/>): the fp32 GEMMs take the tensor cores'
    /// NarrowDeep tile (<see cref="ChooseTileF32"/>) with K counted in 16-bit words, so a slice holds 16 fp32 and a GEMM
    /// has four times the bf16 default's slices. Forward: mlp.proj (M 8192, N 128, K 1024: 64 tiles, 64 slices →
    /// ⌈264/64⌉ = 5, ⌈64/13⌉ = 5 splits). Backward: lm_head dx (750 slices → 5) and dW (94 tiles, 512 slices → 3); per
    /// block, last first: mlp.proj dW (8 tiles → min(33, 64) = 33, ⌈512/16⌉ = 32), mlp.fc dx (5) and dW (32),
    /// attn.proj dW (1 tile → 64), qkv dx (K 384: 24 slices → min(5, 3) = 3) and dW (3 tiles → 64). IEEE fp32 on the
    /// same device rents the SIMT kernel's partials instead, never these.
    /// </summary>
    [Fact]
    public void An_fp32_step_under_3xtf32_on_the_H100_rents_the_tensor_core_split_K_partials()
    {
        var lab4 = ModelConfig.Preset("lab4");
        var settings = new MemoryModelSettings { BatchSize = 32, Device = WorkspaceShape.H100 with { Fp32Matmul = Fp32Matmul.Tf32x3 }, RecordTimeline = true };
        var timeline = MemoryModel.Predict(lab4, settings).Timeline;
        var events = timeline.Where(e => e.Op == SplitKOp && e.Kind == MemoryEventKind.Allocate).ToList();

        Shape Rows(int splits) => new(splits, 1, 8192, 128);
        var forward = Enumerable.Range(0, 4).Select(_ => (Phase.Forward, Rows(5)));
        var backward = new[] { (Phase.Backward, Rows(5)), (Phase.Backward, new Shape(3, 1, 12000, 128)) }
            .Concat(Enumerable.Range(0, 4).SelectMany(_ => new[]
            {
                (Phase.Backward, new Shape(32, 1, 128, 1024)), (Phase.Backward, Rows(5)), (Phase.Backward, new Shape(32, 1, 1024, 128)),
                (Phase.Backward, new Shape(64, 1, 128, 128)), (Phase.Backward, Rows(3)), (Phase.Backward, new Shape(64, 1, 384, 128)),
            }));
        Assert.Equal(forward.Concat(backward).Select(x => (x.Item1, x.Item2.Numel * 4)).ToList(), events.Select(e => (e.Phase, e.Bytes)).ToList());
        Assert.DoesNotContain(timeline, e => e.Op == MatMul.SplitKOp);

        var ieee = MemoryModel.Predict(lab4, settings with { Device = WorkspaceShape.H100 }).Timeline;
        Assert.DoesNotContain(ieee, e => e.Op == SplitKOp);
        Assert.Contains(ieee, e => e.Op == MatMul.SplitKOp);
        // The training options carry the mode to the model's device shape.
        var fromTraining = MemoryModelSettings.ForTraining(new Memopt.Model.Training.TrainingOptions { Fp32Matmul = Fp32Matmul.Tf32x3 }, WorkspaceShape.H100, 0);
        Assert.Equal(Fp32Matmul.Tf32x3, fromTraining.Device.Fp32Matmul);
    }
}
