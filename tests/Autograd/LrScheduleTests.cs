using Memopt.Autograd.Optim;

namespace Memopt.Tests.Autograd;

public class LrScheduleTests
{
    // The schedule is float64 math rounded once to float32 (half an ulp, 6e-8 relative), and the expected values are
    // float32 literals (another half ulp): 1e-6 relative is ~8x that.
    private const double RelativeTolerance = 1e-6;

    private static void Near(float expected, float actual) =>
        Assert.True(Math.Abs(actual - expected) <= RelativeTolerance * Math.Abs(expected) + 1e-12, $"{actual} vs {expected}");

    [Fact]
    public void Cosine_with_warmup_hits_its_boundaries()
    {
        var s = LrSchedule.Cosine(peakLr: 1e-3f, warmupSteps: 10, totalSteps: 110, minLrRatio: 0.1f);
        Near(1e-4f, s.At(0));          // step 0: peak/W, not zero
        Near(5e-4f, s.At(4));          // linear ramp
        Assert.Equal(1e-3f, s.At(9));                     // end of warm-up: exactly the peak
        Assert.True(s.At(10) < 1e-3f);                    // decay starts right after
        Near(5.5e-4f, s.At(59));       // half-way through the decay: (peak + min)/2
        Near(1e-4f, s.At(109));        // last step: exactly the minimum
        Near(1e-4f, s.At(500));        // past the end: stays at the minimum
    }

    [Fact]
    public void Cosine_is_monotone_after_warmup_and_within_bounds()
    {
        var s = LrSchedule.Cosine(3e-4f, 7, 50, 0f);
        for (int i = 7; i < 50; i++)
        {
            Assert.True(s.At(i) <= s.At(i - 1), $"step {i}");
            Assert.True(s.At(i) >= 0f && s.At(i) <= 3e-4f);
        }
        Near(0f, s.At(49));
    }

    [Fact]
    public void Cosine_without_warmup_starts_just_below_the_peak_and_ends_at_the_minimum()
    {
        var s = LrSchedule.Cosine(1e-3f, 0, 4, 0.5f);
        // q = (s + 1)/4: lr = 5e-4 + 5e-4·½(1 + cos(πq)).
        Near((float)(5e-4 + 5e-4 * 0.5 * (1 + Math.Cos(Math.PI / 4))), s.At(0));
        Near(5e-4f, s.At(3));
    }

    [Fact]
    public void Warmup_as_long_as_the_run_is_all_ramp()
    {
        var s = LrSchedule.Cosine(1f, 4, 4);
        Assert.Equal(new[] { 0.25f, 0.5f, 0.75f, 1f }, Enumerable.Range(0, 4).Select(i => s.At(i)).ToArray());
        Near(0.1f, s.At(4));
    }

    [Fact]
    public void Constant_with_and_without_warmup()
    {
        var plain = LrSchedule.Constant(2e-4f);
        Assert.Equal(2e-4f, plain.At(0));
        Assert.Equal(2e-4f, plain.At(1_000_000));
        var warm = LrSchedule.Constant(2e-4f, warmupSteps: 4);
        Near(5e-5f, warm.At(0));
        Assert.Equal(2e-4f, warm.At(3));
        Assert.Equal(2e-4f, warm.At(4));
    }

    [Fact]
    public void Bad_arguments_are_rejected()
    {
        Assert.Throws<ArgumentOutOfRangeException>(() => LrSchedule.Cosine(0f, 0, 10));
        Assert.Throws<ArgumentOutOfRangeException>(() => LrSchedule.Cosine(1f, 11, 10));
        Assert.Throws<ArgumentOutOfRangeException>(() => LrSchedule.Cosine(1f, 0, 10, 1.5f));
        Assert.Throws<ArgumentOutOfRangeException>(() => LrSchedule.Constant(1f, -1));
        Assert.Throws<ArgumentOutOfRangeException>(() => LrSchedule.Constant(1f).At(-1));
    }
}
