using Memopt.Autograd;
using Memopt.Model;
using Memopt.Model.Training;
using Memopt.Tensors;
using Memopt.Tests.Harness;

namespace Memopt.Tests.Model;

/// <summary>NaN/Inf in the loss, the gradients or any op: stopped with a report naming the step (and the op), or skipped and counted.</summary>
public class FaultHandlingTests
{
    private static TrainingOptions Options => TinyRun.Options with { GradAccumulation = 1, EvalEvery = 0, EvalBatches = 1, Steps = 6 };

    private static void Poison(Parameter p) => p.Value.CopyFrom(Enumerable.Repeat(float.NaN, (int)p.Value.Numel).ToArray());

    /// <summary>Writes NaN into a parameter's gradient right after the LM head's backward of the chosen steps: a
    /// finite loss with non-finite gradients. Counts steps by the LM head's forwards (one per micro-batch).</summary>
    private sealed class GradientPoisoner(Parameter target, params long[] steps) : ITapeObserver
    {
        private long _step;
        public void AfterForward(Node node) { if (node.Op == "lm_head") _step++; }
        public void AfterBackward(Node node)
        {
            if (node.Op == "lm_head" && steps.Contains(_step))
                target.Grad!.CopyFrom(Enumerable.Repeat(float.NaN, (int)target.Grad.Numel).ToArray());
        }
    }

    [Fact]
    public void Detect_anomaly_names_the_first_op_its_layer_phase_shape_and_the_step()
    {
        using var model = TinyRun.Model(TinyRun.Device);
        var fc = model.Parameters.Single(p => p.Name == "blocks.0.mlp.fc.weight");
        var trainer = new Trainer(model, TinyRun.Data.Value, Options with { DetectAnomaly = true })
        {
            OnStep = s => { if (s.Step == 2) Poison(fc); },   // after step 2's update: step 3's forward meets it first
        };
        var e = Assert.Throws<AnomalyException>(() => trainer.Run("synthetic"));
        Assert.Equal(3, e.Step);
        Assert.Equal("mlp.fc", e.Op);
        Assert.Equal(0, e.Layer);
        Assert.Equal(Phase.Forward, e.Phase);
        Assert.Equal("output", e.Tensor);
        Assert.Equal(new Shape(4, 16, TinyRun.Config.DFF), e.Shape);
        Assert.Contains("anomaly at step 3 (micro-batch 1): op 'mlp.fc' (layer 0, forward)", e.Message);
        Assert.Contains("[4, 16, 64]", e.Message);
    }

    [Fact]
    public void Detect_anomaly_names_a_custom_op_whose_backward_makes_the_gradient_non_finite()
    {
        var dev = TestDevice.Get();
        using var x = new Parameter(Tensor.FromHost(dev, [1f, 2f, 3f], new Shape(3), MemoryCategory.Parameters, "x"), "x");
        var detector = new AnomalyDetector { Step = 7 };
        using var observe = Tape.Observe(detector);
        using var tape = new Tape();
        using var h = Ops.Scale(x, 2f, "double");
        // A custom op: identity forward, a backward that adds NaN into its input's gradient.
        var y = new Var(h.Value.Share());
        using (dev.Tracker.InLayer(4))
            Tape.Record("poison", y, [h], [], (dy, _) => h.GradBuffer("poison").CopyFrom([0f, float.NaN, 0f]));
        using var loss = Ops.Sum(y, "sum");
        y.Dispose();
        var e = Assert.Throws<AnomalyException>(() => tape.Backward(loss));
        Assert.Equal(("poison", 4, Phase.Backward, 7L, 1L), (e.Op, e.Layer, e.Phase, e.Step, e.NonFiniteValues));
        Assert.StartsWith("gradient for input 0", e.Tensor);
    }

    [Fact]
    public void A_non_finite_loss_stops_at_its_step_before_the_update()
    {
        using var model = TinyRun.Model(TinyRun.Device);
        var norm = model.Parameters.Single(p => p.Name == "ln_f.weight");
        var e = Assert.Throws<NonFiniteLossException>(() =>
            new Trainer(model, TinyRun.Data.Value, Options) { OnStep = s => { if (s.Step == 3) Poison(norm); } }.Run("synthetic"));
        Assert.Equal(4, e.Step);
        Assert.True(float.IsNaN(e.Value));
        Assert.Contains("loss is NaN at step 4", e.Message);
        Assert.Contains("--detect-anomaly", e.Message);
    }

    [Theory]
    [InlineData(1.0f)]   // found by the clipping norm
    [InlineData(0f)]     // found by the counting pass
    public void Non_finite_gradients_stop_before_the_update_naming_the_parameter(float clip)
    {
        using var model = TinyRun.Model(TinyRun.Device);
        var target = model.Parameters.Single(p => p.Name == "blocks.0.attn.proj.weight");
        float[]? afterStep1 = null;
        var trainer = new Trainer(model, TinyRun.Data.Value, Options with { GradClip = clip })
        {
            OnStep = s => { if (s.Step == 1) afterStep1 = target.Value.ToFloatArray(); },
        };
        using (Tape.Observe(new GradientPoisoner(target, 2)))
        {
            var e = Assert.Throws<NonFiniteGradientException>(() => trainer.Run("synthetic"));
            Assert.Equal(2, e.Step);
            Assert.Contains("blocks.0.attn.proj.weight", e.Message);
        }
        Assert.Equal(afterStep1, target.Value.ToFloatArray());   // the update of step 2 never ran
    }

    [Fact]
    public void Skip_mode_skips_the_bad_steps_counts_them_and_finishes()
    {
        using var model = TinyRun.Model(TinyRun.Device);
        var target = model.Parameters.Single(p => p.Name == "ln_f.bias");
        var reports = new List<StepReport>();
        var weights = new Dictionary<long, float[]>();
        var trainer = new Trainer(model, TinyRun.Data.Value, Options with { SkipNonFinite = true, GradClip = 0 })
        {
            OnStep = s => { reports.Add(s); weights[s.Step] = target.Value.ToFloatArray(); },
        };
        RunMetrics m;
        using (Tape.Observe(new GradientPoisoner(target, 2, 5)))
            m = trainer.Run("synthetic");
        Assert.False(m.Partial);
        Assert.Equal(6, m.Steps);
        Assert.Equal([2L, 5], m.SkippedSteps);
        Assert.Equal([false, true, false, false, true, false], reports.Select(r => r.Skipped));
        Assert.Equal(weights[1], weights[2]);                     // skipped: no update
        Assert.NotEqual(weights[2], weights[3]);                  // the next good step updates again
        Assert.All(model.Parameters, p => Assert.True(p.Value.ToFloatArray().All(float.IsFinite), p.Name));
        Assert.True(double.IsFinite(m.TrainLoss) && double.IsFinite(m.ValLoss));
    }

    [Fact]
    public void Skip_mode_stops_after_the_limit_of_consecutive_skips()
    {
        using var model = TinyRun.Model(TinyRun.Device);
        var wte = model.Parameters.Single(p => p.Name == "wte.weight");
        var trainer = new Trainer(model, TinyRun.Data.Value, Options with { SkipNonFinite = true, MaxConsecutiveSkips = 3 })
        {
            OnStep = s => { if (s.Step == 1) Poison(wte); },
        };
        var e = Assert.Throws<NonFiniteException>(() => trainer.Run("synthetic"));
        Assert.Equal(4, e.Step);
        Assert.Contains("3 steps in a row", e.Message);
    }
}
