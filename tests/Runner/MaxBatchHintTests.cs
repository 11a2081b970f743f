using FsCheck;
using FsCheck.Xunit;
using Memopt.Runner.Experiments;

namespace Memopt.Tests.Runner;

/// <summary>
/// MaxBatchSearch started from a hint (the memory model's prediction), against a fake device where exactly the batches
/// ≤ a threshold fit: the answer is the threshold whatever the hint and whatever the matrix already knew, no batch is
/// probed twice or outside 1..cap, and a right hint is confirmed with two probes.
/// </summary>
public class MaxBatchHintTests
{
    private sealed class Device(int threshold)
    {
        public List<int> Probed { get; } = [];

        public ProbeOutcome Probe(int b)
        {
            Probed.Add(b);
            return Outcome(b, threshold);
        }
    }

    private static ProbeOutcome Outcome(int b, int threshold, string source = "probe") =>
        new(b, b <= threshold ? RunStatus.Ok : RunStatus.Oom, null, 0, source);

    /// <summary>Up to three results of the matrix, true to the threshold, at batches up to a little past the cap.</summary>
    private static ProbeOutcome[] Known(int seed, int cap, int threshold)
    {
        var rng = new Random(seed);
        return Enumerable.Range(0, rng.Next(4)).Select(_ => rng.Next(1, cap + 30)).Distinct()
            .Select(b => Outcome(b, threshold, "matrix")).ToArray();
    }

    /// <summary>
    /// Precision 1: the search returns the threshold (cap when it fits, none when batch 1 does not). A hint costs at most
    /// the probes of the search without one plus a few: the gallop from the hint doubles its step, so a hint off by d
    /// takes about 2·log2(d) probes, and d &lt; cap.
    /// </summary>
    [Property(MaxTest = 500)]
    public void Any_hint_and_known_results_give_the_true_threshold(NonNegativeInt thresholdRaw, NonNegativeInt hintRaw, PositiveInt capRaw, int seed)
    {
        int cap = 1 + capRaw.Get % 3000, threshold = thresholdRaw.Get % (cap + 20), hint = hintRaw.Get % (cap + 50);
        var device = new Device(threshold);
        var known = Known(seed, cap, threshold);
        var r = MaxBatchSearch.Run(device.Probe, 1, cap, 1, known, hint);

        string trace = $"threshold {threshold}, hint {hint}, cap {cap}, known [{string.Join(",", known.Select(k => k.BatchSize))}], probed [{string.Join(",", device.Probed)}]";
        Assert.True(device.Probed.Distinct().Count() == device.Probed.Count, "probed twice: " + trace);
        Assert.True(device.Probed.All(b => b >= 1 && b <= cap), "outside 1..cap: " + trace);
        Assert.True(!device.Probed.Intersect(known.Select(k => k.BatchSize)).Any(), "probed a known batch: " + trace);
        Assert.True(device.Probed.Count <= 2 * Math.Log2(cap) + 4, $"{device.Probed.Count} probes: " + trace);
        Assert.True(r.Probes.Where(p => p.Source == "probe").Select(p => p.BatchSize).SequenceEqual(device.Probed), "every probe is recorded as a probe: " + trace);
        if (threshold == 0)
            Assert.True(r.Status == MaxBatchSearch.NoneFits && r.MaxBatch is null && r.FirstOom == 1, $"{r.Status} {r.MaxBatch} {r.FirstOom}: " + trace);
        else if (threshold >= cap)
            Assert.True(r.MaxBatch == cap && (r.Status == MaxBatchSearch.AtCap || (r.Status == MaxBatchSearch.Found && r.FirstOom == cap + 1)),
                $"{r.Status} {r.MaxBatch} {r.FirstOom}: " + trace);
        else
            Assert.True(r.Status == MaxBatchSearch.Found && r.MaxBatch == threshold && r.FirstOom == threshold + 1, $"{r.Status} {r.MaxBatch} {r.FirstOom}: " + trace);
    }

    /// <summary>A coarser precision still brackets the threshold: the largest batch found fits, the first out of memory is ≤ precision above it.</summary>
    [Property(MaxTest = 300)]
    public void With_a_coarser_precision_the_answer_brackets_the_threshold(PositiveInt thresholdRaw, NonNegativeInt hintRaw, PositiveInt precisionRaw, int seed)
    {
        const int cap = 5000;
        int threshold = thresholdRaw.Get % (cap - 1) + 1, hint = hintRaw.Get % (cap + 50), precision = 1 + precisionRaw.Get % 64;
        var device = new Device(threshold);
        var r = MaxBatchSearch.Run(device.Probe, 1, cap, precision, Known(seed, cap, threshold), hint);
        Assert.True(r.Status == MaxBatchSearch.Found && r.MaxBatch <= threshold && r.FirstOom > threshold && r.FirstOom - r.MaxBatch <= precision,
            $"{r.Status} [{r.MaxBatch}, {r.FirstOom}) for threshold {threshold}, hint {hint}, precision {precision}; probed [{string.Join(",", device.Probed)}]");
    }

    /// <summary>A right prediction: the hint fits and hint + precision does not, two probes; at the cap, one.</summary>
    [Property(MaxTest = 200)]
    public void An_exact_hint_is_confirmed_with_two_probes(PositiveInt thresholdRaw, PositiveInt precisionRaw)
    {
        const int cap = 4096;
        int threshold = thresholdRaw.Get % (cap - 1) + 1, precision = 1 + precisionRaw.Get % 16;
        var device = new Device(threshold);
        var r = MaxBatchSearch.Run(device.Probe, 1, cap, precision, hint: threshold);
        Assert.Equal([threshold, Math.Min(threshold + precision, cap)], device.Probed);
        Assert.Equal(threshold, r.MaxBatch);

        var atCap = new Device(cap + 10);
        Assert.Equal(MaxBatchSearch.AtCap, MaxBatchSearch.Run(atCap.Probe, 1, cap, 1, hint: cap).Status);
        Assert.Equal([cap], atCap.Probed);
    }

    [Fact]
    public void A_probe_that_fails_for_another_reason_stops_the_hinted_search_too()
    {
        var r = MaxBatchSearch.Run(b => new ProbeOutcome(b, b < 40 ? RunStatus.Ok : RunStatus.Failed, "data too small", 0), hint: 30);
        Assert.Equal(MaxBatchSearch.Failed, r.Status);
        Assert.Equal(37, r.MaxBatch); // 30, 31, 33, 37 fit; 45 failed
        Assert.Contains("probe at batch 45 failed: data too small", r.Message);
    }
}
