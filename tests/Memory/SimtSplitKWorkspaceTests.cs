using Memopt.Kernels;
using Memopt.Model;
using Memopt.Model.Memory;
using Memopt.Model.Training;
using Memopt.Tensors;

namespace Memopt.Tests.Memory;

/// <summary><see cref="MeasuredTraining"/> on a CPU accelerator with 256-thread groups (8 warps of 32), where the SIMT GEMM's CUDA tiles and its split-K run.</summary>
public sealed class WideGroupTraining() : MeasuredTraining(ComputeDevice.CreateCpu(threadsPerWarp: 32, warpsPerGroup: 8))
{
    /// <summary>That device's launch facts on the cooperative path (the CUDA kernels), as <see cref="WorkspaceShape.Of"/> reads them under it.</summary>
    public static readonly WorkspaceShape Shape = new(Cooperative: true, IsCuda: false, Multiprocessors: 1, MaxGroupSize: 256);
}

/// <summary>
/// The SIMT GEMM's split-K workspace ("simt_gemm.split_k", <see cref="MatMul.SplitKWorkspace"/>) in the memory model:
/// every GEMM that does not go to the tensor cores (fp32 operands, or any GEMM off CUDA) rents it on the cooperative
/// path when the kernel's plan splits K. On the H100 that is the fp32 weight gradients (M, N ≤ 1024, K = B·T) and
/// whatever else leaves SMs idle; on the suite's CPU accelerator (16-thread groups, the 16×16 tile) never. A 256-thread
/// CPU accelerator runs the CUDA tiles on one multiprocessor, where a one-tile GEMM with K ≥ 128 splits: a tiny
/// training step there is compared with the tracker event for event.
/// </summary>
public class SimtSplitKWorkspaceTests(WideGroupTraining wide) : IClassFixture<WideGroupTraining>
{
    private const int H100Sms = 132, H100Group = 1024;

    /// <summary>One GEMM of a step (no summed batches in the model's ops) and the SIMT workspace the H100 gives it.</summary>
    private readonly record struct Gemm(int M, int N, int K, int Batch = 1)
    {
        public Shape? OnH100() => MatMul.SplitKWorkspace(M, N, K, Batch, sumBatches: false, cooperative: true, H100Sms, H100Group);
    }

    /// <summary>
    /// lab4 in fp32 at batch 32 on the H100 (rows R = 8192, C 128, F 1024, V 12000, T 256, 4 heads of 32): every GEMM of
    /// the step in the order the step runs them, each with the workspace <see cref="MatMul.SplitKWorkspace"/> gives it.
    /// Forward per block: qkv, scores (T×T×hd, B·H = 128 matrices), P·V, proj, fc, fc2; then lm_head. Backward: lm_head's
    /// dx and dW (tied to wte), then per block, last first: fc2, fc, proj (dx, dW each), P·V (dP, dV), scores (dQ, dK), qkv.
    /// </summary>
    [Fact]
    public void An_fp32_step_on_the_H100_rents_the_simt_split_k_partials_of_its_gemms_for_the_call()
    {
        const int R = 32 * 256, C = 128, F = 1024, V = 12000, T = 256, Hd = 32, BH = 32 * 4;
        Gemm[] forward = [new(R, 3 * C, C), new(T, T, Hd, BH), new(T, Hd, T, BH), new(R, C, C), new(R, F, C), new(R, C, F)];
        Gemm[] backward =
        [
            new(R, F, C), new(C, F, R), new(R, C, F), new(F, C, R), new(R, C, C), new(C, C, R),
            new(T, T, Hd, BH), new(T, Hd, T, BH), new(T, Hd, T, BH), new(T, Hd, T, BH), new(R, C, 3 * C), new(3 * C, C, R),
        ];
        var gemms = Enumerable.Repeat(forward, 4).SelectMany(g => g).Append(new(R, V, C)).Select(g => (Phase: Phase.Forward, Gemm: g))
            .Concat(new Gemm[] { new(R, C, V), new(V, C, R) }.Concat(Enumerable.Repeat(backward, 4).SelectMany(g => g)).Select(g => (Phase: Phase.Backward, Gemm: g)));
        var expected = gemms.Select(x => (x.Phase, Workspace: x.Gemm.OnH100())).Where(x => x.Workspace is not null)
            .Select(x => (x.Phase, x.Workspace!.Numel * 4)).ToList();
        // The block weight gradients split (K = 8192 over at most 24 output tiles of 128×128); the logits (4.7 k tiles) do not.
        foreach (var (m, n) in new[] { (C, F), (F, C), (C, C), (3 * C, C) })
            Assert.True(new Gemm(m, n, R).OnH100() is { } w && w[0] > 1 && w[2] == m && w[3] == n, $"dW {m}×{n}");
        Assert.Null(new Gemm(R, V, C).OnH100());

        var timeline = MemoryModel.Predict(ModelConfig.Preset("lab4"), new MemoryModelSettings { BatchSize = 32, Device = WorkspaceShape.H100, RecordTimeline = true }).Timeline;
        var allocations = timeline.Select((e, i) => (e, i)).Where(x => x.e.Op == MatMul.SplitKOp && x.e.Kind == MemoryEventKind.Allocate).ToList();
        Assert.Equal(expected, allocations.Select(x => (x.e.Phase, x.e.Bytes)).ToList());
        foreach (var (e, i) in allocations)
        {
            // float32 workspace, freed before anything else happens: it lives for the GEMM call only.
            Assert.Equal(MemoryCategory.Workspace, e.Category);
            Assert.Equal((MemoryEventKind.Free, e.AllocationId, e.Bytes), (timeline[i + 1].Kind, timeline[i + 1].AllocationId, timeline[i + 1].Bytes));
        }

        // bf16 GEMMs go to the tensor cores on the H100 (their own "tc_gemm.split_k"); the 16-thread CPU groups never split.
        Assert.DoesNotContain(MemoryModel.Predict(ModelConfig.Preset("lab4"), new MemoryModelSettings { BatchSize = 32, Device = WorkspaceShape.H100, RecordTimeline = true }.WithBf16()).Timeline,
            e => e.Op == MatMul.SplitKOp);
        Assert.DoesNotContain(MemoryModel.Predict(ModelConfig.Preset("lab4") with { Layers = 1 },
            new MemoryModelSettings { BatchSize = 4, Device = WorkspaceShape.CpuAccelerator with { Cooperative = true }, RecordTimeline = true }).Timeline, e => e.Op == MatMul.SplitKOp);
    }

    /// <summary>
    /// One fp32 step (one layer, batch 1 of T 16, no clipping: the fewest launches, each a rendezvous of 256 OS threads)
    /// through the cooperative kernels on 256-thread groups: the model's events, peaks and reserved bytes equal the
    /// tracker's, split-K partials included. What splits there is lm_head's dx (M 16 rows, N 16, K = vocabulary 300):
    /// 38 K slices of 8 on one 256×32 tile, which one multiprocessor with 2 resident groups runs fastest as 2 splits
    /// of 19 slices; K elsewhere is at most 16 rows or 32 features (≤ 4 slices), too short to split.
    /// </summary>
    [Fact]
    public void Prediction_equals_the_tracker_event_for_event_with_simt_split_k()
    {
        var config = MeasuredTraining.Small with { Layers = 1 };
        var options = new TrainingOptions { BatchSize = 1, Steps = 1, GradClip = 0 };
        var measured = wide.Train(config, options, KernelPath.Cooperative);
        var predicted = MemoryModel.Predict(config, MemoryModelSettings.ForTraining(options, WideGroupTraining.Shape, contextBytes: 0) with { RecordTimeline = true });
        Assert.Equal(new Shape(2, 1, 16, 16), MatMul.SplitKWorkspace(16, 16, 300, 1, false, WideGroupTraining.Shape.Cooperative, 1, 256));
        Assert.Equal([(MemoryEventKind.Allocate, Phase.Backward, 2L * 16 * 16 * 4), (MemoryEventKind.Free, Phase.Backward, 2L * 16 * 16 * 4)],
            measured.Timeline.Where(e => e.Op == MatMul.SplitKOp).Select(e => (e.Kind, e.Phase, e.Bytes)));
        MemoryModelTests.AssertSame("fp32 on 256-thread groups", measured, predicted);
    }
}
