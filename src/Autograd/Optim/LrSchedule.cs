namespace Memopt.Autograd.Optim;

public enum LrDecay
{
    /// <summary>Peak learning rate after the warm-up, for ever.</summary>
    Constant,
    /// <summary>Half a cosine from the peak down to PeakLr·MinLrRatio at the last step.</summary>
    Cosine,
}

/// <summary>
/// Learning rate per optimizer step (0-based: the step about to be taken), pure host math.
/// Warm-up, steps 0 … W−1: lr = peak·(s+1)/W, so step 0 already moves (peak/W) and step W−1 is exactly the peak.
/// Cosine, steps W … T−1: progress q = (s − W + 1)/(T − W), lr = min + (peak − min)·½(1 + cos πq), so the curve
/// continues from the peak at W−1 and reaches min = peak·MinLrRatio exactly at the last step T−1; later steps stay
/// at min. Constant: the peak after the warm-up.
/// </summary>
public sealed class LrSchedule
{
    private LrSchedule(float peakLr, int warmupSteps, int totalSteps, LrDecay decay, float minLrRatio)
    {
        if (!(peakLr > 0f) || float.IsInfinity(peakLr)) throw new ArgumentOutOfRangeException(nameof(peakLr), peakLr, "lr schedule: peak learning rate must be finite and > 0");
        if (warmupSteps < 0) throw new ArgumentOutOfRangeException(nameof(warmupSteps), warmupSteps, "lr schedule: warm-up steps must be >= 0");
        if (!(minLrRatio >= 0f && minLrRatio <= 1f)) throw new ArgumentOutOfRangeException(nameof(minLrRatio), minLrRatio, "lr schedule: min lr ratio must be in [0, 1]");
        if (decay == LrDecay.Cosine && (totalSteps < 1 || totalSteps < warmupSteps))
            throw new ArgumentOutOfRangeException(nameof(totalSteps), totalSteps, $"lr schedule: total steps must be >= 1 and >= the {warmupSteps} warm-up steps");
        PeakLr = peakLr; WarmupSteps = warmupSteps; TotalSteps = totalSteps; Decay = decay; MinLrRatio = minLrRatio;
    }

    public float PeakLr { get; }
    public int WarmupSteps { get; }
    /// <summary>Steps of the whole run (cosine only).</summary>
    public int TotalSteps { get; }
    public LrDecay Decay { get; }
    public float MinLrRatio { get; }
    public float MinLr => PeakLr * MinLrRatio;

    public static LrSchedule Cosine(float peakLr, int warmupSteps, int totalSteps, float minLrRatio = 0.1f) =>
        new(peakLr, warmupSteps, totalSteps, LrDecay.Cosine, minLrRatio);

    public static LrSchedule Constant(float peakLr, int warmupSteps = 0) =>
        new(peakLr, warmupSteps, 0, LrDecay.Constant, 1f);

    /// <summary>The learning rate for 0-based step <paramref name="step"/>.</summary>
    public float At(long step)
    {
        if (step < 0) throw new ArgumentOutOfRangeException(nameof(step), step, "lr schedule: step must be >= 0");
        double peak = PeakLr;
        if (step < WarmupSteps) return (float)(peak * (step + 1) / WarmupSteps);
        if (Decay == LrDecay.Constant) return PeakLr;
        double min = peak * MinLrRatio;
        int decaySteps = TotalSteps - WarmupSteps;   // 0 when the warm-up is the whole run: then only "after the end" remains
        double progress = decaySteps == 0 ? 1.0 : Math.Min(1.0, (double)(step - WarmupSteps + 1) / decaySteps);
        return (float)(min + (peak - min) * 0.5 * (1 + Math.Cos(Math.PI * progress)));
    }

    public override string ToString() => Decay == LrDecay.Cosine
        ? $"cosine(peak {PeakLr}, warm-up {WarmupSteps}, total {TotalSteps}, min ratio {MinLrRatio})"
        : $"constant(peak {PeakLr}, warm-up {WarmupSteps})";
}
