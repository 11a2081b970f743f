using Memopt.Autograd;
using Memopt.Model;
using Memopt.Model.Training;
using Memopt.Runner.Commands;
using Memopt.Tensors;
using Memopt.Tests.Harness;
using static Memopt.Tests.Model.TransformerLMTests;

namespace Memopt.Tests.Model;

public class CheckpointingTests
{
    /// <summary>
    /// The recompute runs the same kernels on the same inputs, so gradients should agree bit for bit; only the order of
    /// accumulation into a gradient buffer can differ (e.g. x's gradient adopted vs added), which is float rounding:
    /// 1e-5 of the largest gradient entry is ~100 float32 ulps of it.
    /// </summary>
    private const double RelativeTolerance = 1e-5;

    private static float[][] Gradients(TransformerLM model, Tensor ids, Tensor targets, AttentionSettings attention, CheckpointSettings? checkpointing)
    {
        foreach (var p in model.Parameters) p.ZeroGrad();
        using (var tape = new Tape())
        {
            using var loss = model.Loss(ids, targets, attention, new ForwardContext(true, 11, 5), checkpointing: checkpointing);
            tape.Backward(loss);
        }
        return model.Parameters.Select(p => p.Grad!.ToFloatArray()).ToArray();
    }

    [Theory]
    [InlineData(NormPlacement.Pre, CheckpointScope.Block, 1, null)]
    [InlineData(NormPlacement.Pre, CheckpointScope.Block, 2, 3)]
    [InlineData(NormPlacement.Pre, CheckpointScope.Attention, 1, null)]
    [InlineData(NormPlacement.Pre, CheckpointScope.Mlp, 2, null)]
    [InlineData(NormPlacement.Post, CheckpointScope.Block, 2, null)]
    [InlineData(NormPlacement.Post, CheckpointScope.Attention, 2, 3)]
    [InlineData(NormPlacement.Post, CheckpointScope.Mlp, 1, 3)]
    public void Gradients_with_checkpointing_equal_those_without(NormPlacement norm, CheckpointScope scope, int every, int? window)
    {
        var dev = TestDevice.Get();
        // Three layers so K = 2 mixes checkpointed (0, 2) and plain (1) blocks; dropout on so the masks must replay.
        var config = Tiny() with { Norm = norm, Layers = 3, Dropout = 0.2f };
        using var model = new TransformerLM(dev, config, seed: 4);
        var (ids, targets) = Batch(dev, 2, config.SeqLen, config.VocabSize, 8);
        using var _ids = ids;
        using var _targets = targets;
        var attention = new AttentionSettings(window);
        var plain = Gradients(model, ids, targets, attention, null);
        var checkpointed = Gradients(model, ids, targets, attention, new CheckpointSettings(every, scope));
        double max = plain.Max(g => g.Max(v => Math.Abs(v)));
        Assert.True(max > 0, "all gradients are zero");
        for (int i = 0; i < plain.Length; i++)
        {
            double diff = plain[i].Zip(checkpointed[i], (a, b) => Math.Abs(a - b)).Max();
            Assert.True(diff <= RelativeTolerance * max, $"{model.Parameters[i].Name}: max |Δgrad| {diff:E3} vs max |grad| {max:E3}");
        }
    }

    /// <summary>Saved-for-backward plus attention-score peak of one training forward (and backward, to clean up).</summary>
    private static long ForwardSavedPeak(TransformerLM model, Tensor ids, Tensor targets, CheckpointSettings? checkpointing)
    {
        var tracker = model.Device.Tracker;
        tracker.ResetPeaks();
        long baseline = tracker.LiveOf(MemoryCategory.SavedForBackward) + tracker.LiveOf(MemoryCategory.AttentionScores);
        long peak;
        using (var tape = new Tape())
        {
            Var loss;
            using (tracker.EnterPhase(Phase.Forward))
                loss = model.Loss(ids, targets, new AttentionSettings(null), new ForwardContext(true, 3, 1), checkpointing: checkpointing);
            peak = tracker.PeakOf(MemoryCategory.SavedForBackward) + tracker.PeakOf(MemoryCategory.AttentionScores) - baseline;
            using (loss) tape.Backward(loss);
        }
        return peak;
    }

    [Fact]
    public void Checkpointing_more_blocks_saves_less_during_forward()
    {
        // Its own device: the shared test device's tracker also counts other test classes running in parallel.
        using var dev = ComputeDevice.Create(DeviceKind.Cpu);
        var config = Tiny(t: 8) with { Layers = 4, Dropout = 0.1f };
        using var model = new TransformerLM(dev, config, seed: 5);
        var (ids, targets) = Batch(dev, 2, config.SeqLen, config.VocabSize, 9);
        using var _ids = ids;
        using var _targets = targets;
        long plain = ForwardSavedPeak(model, ids, targets, null);
        // K = 4 checkpoints block 0, K = 2 blocks 0 and 2, K = 1 all four.
        var peaks = new[] { 4, 2, 1 }.Select(k => (k, peak: ForwardSavedPeak(model, ids, targets, new CheckpointSettings(k)))).ToArray();
        long previous = plain;
        foreach (var (k, peak) in peaks)
        {
            Assert.True(peak < previous, $"K = {k}: saved + scores peak {peak} B is not below {previous} B (no checkpointing: {plain} B)");
            previous = peak;
        }
    }

    [Theory]
    [InlineData(CheckpointScope.Block)]
    [InlineData(CheckpointScope.Attention)]
    [InlineData(CheckpointScope.Mlp)]
    public void Backward_recomputes_in_the_recompute_phase_and_leaves_only_parameters_and_gradients(CheckpointScope scope)
    {
        using var dev = ComputeDevice.Create(DeviceKind.Cpu);
        var config = Tiny() with { Dropout = 0.2f };
        using var model = new TransformerLM(dev, config, seed: 6);
        var (ids, targets) = Batch(dev, 2, config.SeqLen, config.VocabSize, 10);
        using var _ids = ids;
        using var _targets = targets;
        var tracker = dev.Tracker;
        tracker.ClearTimeline();
        tracker.RecordTimeline = true;
        try
        {
            using (var tape = new Tape())
            {
                Var loss;
                using (tracker.EnterPhase(Phase.Forward))
                    loss = model.Loss(ids, targets, new AttentionSettings(null), new ForwardContext(true, 2, 7), checkpointing: new CheckpointSettings(1, scope));
                Assert.DoesNotContain(tracker.Timeline, e => e.Phase == Phase.Recompute);
                using (loss) tape.Backward(loss);
            }
            var recompute = tracker.Timeline.Where(e => e.Phase == Phase.Recompute && e.Kind == MemoryEventKind.Allocate).ToArray();
            Assert.NotEmpty(recompute);
            // Every block recomputes (its layer shows up), and everything it allocated is freed again.
            Assert.Equal(Enumerable.Range(0, config.Layers), recompute.Select(e => e.Layer).Distinct().Order());
            var freed = tracker.Timeline.Where(e => e.Kind == MemoryEventKind.Free).Select(e => e.AllocationId).ToHashSet();
            Assert.All(recompute, e => Assert.Contains(e.AllocationId, freed));
        }
        finally
        {
            tracker.RecordTimeline = false;
            tracker.ClearTimeline();
        }
        foreach (var c in MemoryCategories.All.Except([MemoryCategory.Parameters, MemoryCategory.Gradients, MemoryCategory.Data]))
            Assert.True(tracker.LiveOf(c) == 0, $"{c.Label()}: {tracker.LiveOf(c)} B still live after backward");
    }

    [Fact]
    public void Without_a_tape_the_checkpoint_is_a_plain_call()
    {
        var dev = TestDevice.Get();
        using var x = new Var(Tensor.FromHost(dev, [1f, 2f, 3f], new Shape(3), MemoryCategory.Activations, "x"), requiresGrad: true);
        using var y = Ops.Checkpoint(v => Ops.Scale(v, 2f), x);
        Assert.Equal([2f, 4f, 6f], y.Value.ToFloatArray());
        Assert.False(y.RequiresGrad);
    }

    [Fact]
    public void Checkpoint_of_a_plain_function_gives_the_input_its_gradient()
    {
        var dev = TestDevice.Get();
        using var x = new Var(Tensor.FromHost(dev, [1f, -2f, 3f], new Shape(3), MemoryCategory.Activations, "x"), requiresGrad: true);
        using (var tape = new Tape())
        {
            using var y = Ops.Checkpoint(v => { using var s = Ops.Scale(v, 3f); return Ops.Sum(s); }, x);
            tape.Backward(y);
        }
        Assert.Equal([3f, 3f, 3f], x.Grad!.ToFloatArray());
        x.Grad.Dispose();
    }

    [Fact]
    public void Bad_checkpoint_settings_are_rejected_with_the_flag_named()
    {
        var e = Assert.Throws<ArgumentException>(() => new TrainingOptions { GradientCheckpointing = true, CheckpointEvery = 0 }.Validate());
        Assert.Contains("--checkpoint-every must be > 0", e.Message);
        e = Assert.Throws<ArgumentException>(() => new TrainOptions { CheckpointScope = "ffn" }.ParsedCheckpointScope());
        Assert.Contains("--checkpoint-scope must be block, attention or mlp, got 'ffn'", e.Message);
        Assert.Equal(CheckpointScope.Mlp, new TrainOptions { CheckpointScope = "MLP" }.ParsedCheckpointScope());
        Assert.Equal(new CheckpointSettings(2, CheckpointScope.Attention),
            new TrainingOptions { GradientCheckpointing = true, CheckpointEvery = 2, CheckpointScope = CheckpointScope.Attention }.Checkpointing);
        Assert.Null(new TrainingOptions { CheckpointEvery = 2 }.Checkpointing);
    }
}
