using Memopt.Autograd;
using Memopt.Tensors;
using Memopt.Tests.Harness;

namespace Memopt.Tests.Autograd;

public class TapeTests
{
    private static Var Input(ComputeDevice dev, float[] values, bool grad = true) =>
        new(Tensor.FromHost(dev, values, new Shape(values.Length), MemoryCategory.Data, "x"), grad);

    [Fact]
    public void Saved_tensors_are_released_by_backward_and_the_frees_are_visible_in_the_tracker()
    {
        using var dev = ComputeDevice.Create(DeviceKind.Cpu);
        var t = dev.Tracker;
        t.RecordTimeline = true;
        using var x = Input(dev, [0.5f, -1f, 2f]);
        using (var tape = new Tape())
        {
            Var y;
            using (t.EnterPhase(Phase.Forward))
            {
                using var h = Ops.Gelu(x);                // saves x
                y = Ops.Gelu(h);                          // saves h: h's storage outlives the caller's handle
            }
            // h (an activation) became saved-for-backward; x is input data and keeps its category while the tape holds it.
            Assert.Equal(12, t.LiveOf(MemoryCategory.SavedForBackward));
            Assert.Equal(MemoryCategory.Data, x.Value.Category);
            using var seed = Tensor.FromHost(dev, [1f, 1f, 1f], new Shape(3), MemoryCategory.Data, "seed");
            tape.Backward(y, seed);
            y.Dispose();
        }
        Assert.Equal(0, t.LiveOf(MemoryCategory.SavedForBackward));
        Assert.Contains(t.Timeline, e => e.Kind == MemoryEventKind.Free && e.Phase == Phase.Backward && e.Category == MemoryCategory.SavedForBackward);
        // The intermediate gradients (of y and h) are gone; only the leaf x keeps its gradient.
        Assert.Equal(12, t.LiveOf(MemoryCategory.ActivationGradients));
        x.Grad!.Dispose();
        Assert.Equal(0, t.LiveOf(MemoryCategory.ActivationGradients));
    }

    [Fact]
    public void Second_backward_through_a_released_graph_throws()
    {
        var dev = TestDevice.Get();
        using var x = Input(dev, [1f, 2f]);
        using var tape = new Tape();
        using var y = Ops.Scale(x, 3f);
        using var seed = Tensor.FromHost(dev, [1f, 1f], new Shape(2), MemoryCategory.Data, "seed");
        tape.Backward(y, seed);
        var e = Assert.Throws<InvalidOperationException>(() => tape.Backward(y, seed));
        Assert.Contains("released graph", e.Message);
        x.Grad!.Dispose();
    }

    [Fact]
    public void No_grad_scope_records_and_saves_nothing()
    {
        var dev = TestDevice.Get();
        using var x = Input(dev, [1f, 2f]);
        using var tape = new Tape();
        long savedBefore = dev.Tracker.LiveOf(MemoryCategory.SavedForBackward);
        using (Tape.NoGrad())
        {
            using var y = Ops.Gelu(x);
            Assert.False(y.RequiresGrad);
        }
        Assert.Empty(tape.Nodes);
        Assert.Equal(savedBefore, dev.Tracker.LiveOf(MemoryCategory.SavedForBackward));
    }

    [Fact]
    public void Parameter_gradients_accumulate_across_backward_passes_until_zeroed()
    {
        var dev = TestDevice.Get();
        using var w = new Parameter(Tensor.FromHost(dev, [1f, -2f, 3f], new Shape(3), MemoryCategory.Parameters, "w"), "w");
        for (int pass = 0; pass < 2; pass++)
        {
            using var tape = new Tape();
            using var y = Ops.Scale(w, 2f);
            using var seed = Tensor.FromHost(dev, [1f, 10f, 100f], new Shape(3), MemoryCategory.Data, "seed");
            tape.Backward(y, seed);
        }
        Assert.Equal([4f, 40f, 400f], w.Grad!.ToFloatArray());
        Assert.Equal(MemoryCategory.Gradients, w.Grad.Category);
        w.ZeroGrad();
        Assert.Equal([0f, 0f, 0f], w.Grad.ToFloatArray());
    }

    [Fact]
    public void A_value_used_twice_gets_the_sum_of_both_gradients()
    {
        var dev = TestDevice.Get();
        using var x = Input(dev, [1f, 2f]);
        using var tape = new Tape();
        using var a = Ops.Scale(x, 3f);
        using var y = Ops.Add(a, x);                     // y = 3x + x
        using var seed = Tensor.FromHost(dev, [1f, 1f], new Shape(2), MemoryCategory.Data, "seed");
        tape.Backward(y, seed);
        Assert.Equal([4f, 4f], x.Grad!.ToFloatArray());
        x.Grad.Dispose();
    }

    [Fact]
    public void Backward_from_a_non_scalar_without_a_seed_is_an_error()
    {
        var dev = TestDevice.Get();
        using var x = Input(dev, [1f, 2f]);
        using var tape = new Tape();
        using var y = Ops.Scale(x, 1f);
        var e = Assert.Throws<InvalidOperationException>(() => tape.Backward(y));
        Assert.Contains("not a scalar", e.Message);
    }
}
