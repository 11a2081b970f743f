namespace Memopt.Runner.Experiments;

/// <summary>What one probe at one batch size found.</summary>
public sealed record ProbeOutcome(int BatchSize, RunStatus Status, string? Message, double Seconds, string Source = "probe");

/// <summary>The search's answer: the largest batch that fit, the smallest that ran out of memory, and every probe.</summary>
public sealed record MaxBatchResult(string Status, int? MaxBatch, int? FirstOom, string? Message, IReadOnlyList<ProbeOutcome> Probes);

/// <summary>
/// The largest batch size that trains without running out of memory: doubling from a start (or from the largest batch
/// already known to fit) until a batch runs out of memory or the cap is reached, then bisection between the last batch
/// that fit and the first that did not, until they are <c>precision</c> apart. Memory grows with the batch, so a batch
/// that fits says every smaller one fits. A probe that fails for another reason (not out-of-memory) stops the search
/// with that reason: the answer would otherwise be wrong.
/// With a hint (the memory model's prediction) the search starts there instead: it probes the hint (kept inside what
/// the known results leave open and the cap), then gallops away from it in steps of precision, 2·precision, 4·precision …,
/// up while batches fit or down while they run out of memory, and bisects the last step. A
/// right prediction is confirmed with two probes (the hint fits, hint + precision does not); a wrong one costs about
/// two probes per doubling of its error.
/// </summary>
public static class MaxBatchSearch
{
    public const string Found = "ok", AtCap = "cap", NoneFits = "none_fits", Failed = "failed";

    public static MaxBatchResult Run(Func<int, ProbeOutcome> probe, int start = 1, int cap = 65536, int precision = 1,
        IEnumerable<ProbeOutcome>? known = null, int? hint = null)
    {
        if (start < 1) throw new ArgumentException($"the search must start at a batch ≥ 1, got {start}");
        if (cap < start) throw new ArgumentException($"the cap {cap} is below the start {start}");
        if (precision < 1) throw new ArgumentException($"precision must be ≥ 1, got {precision}");
        var probes = new List<ProbeOutcome>();
        int lo = 0; // largest batch known to fit (0: none)
        int? hi = null; // smallest batch known to run out of memory
        foreach (var k in known ?? [])
        {
            if (k.Status == RunStatus.Ok && k.BatchSize <= cap) lo = Math.Max(lo, k.BatchSize);
            // Past cap + 1 an out-of-memory decides nothing the search may probe.
            if (k.Status == RunStatus.Oom && k.BatchSize <= (long)cap + 1) hi = hi is int h ? Math.Min(h, k.BatchSize) : k.BatchSize;
        }
        if (hi is int hk && hk <= lo) (lo, hi) = (0, null); // contradictory (a flaky run): trust only new probes
        else probes.AddRange((known ?? []).Where(k => k.Status != RunStatus.Failed));

        // Probes batch b and moves the bounds: true when it fit, false when it ran out of memory, null when it failed.
        bool? Fits(int b)
        {
            var p = probe(b);
            probes.Add(p);
            if (p.Status == RunStatus.Ok) lo = b;
            else if (p.Status == RunStatus.Oom) hi = b;
            return p.Status == RunStatus.Failed ? null : p.Status == RunStatus.Ok;
        }
        // The bounds are not yet precision apart, or nothing fit yet and batch 1 is untried ("none fits" needs batch 1 itself).
        bool Open() => hi!.Value - lo > precision || (lo == 0 && hi.Value > 1);
        MaxBatchResult Stop()
        {
            var failed = probes[^1];
            return new(Failed, lo > 0 ? lo : null, hi, $"probe at batch {failed.BatchSize} failed: {failed.Message}", probes);
        }

        int undecided = (int)Math.Min(cap, (hi ?? long.MaxValue) - 1); // the largest batch no result has decided yet
        if (hint is int guess && lo < undecided)
        {
            if (Fits(Math.Clamp(guess, lo + 1, undecided)) is not bool hintFits) return Stop();
            long step = precision;
            if (hintFits) // up from the hint, steps doubling, while batches fit
                while (lo < cap && (hi is null || Open()))
                {
                    if (Fits((int)Math.Min(lo + step, Math.Min(cap, (hi ?? long.MaxValue) - 1))) is not bool fit) return Stop();
                    if (!fit) break;
                    step *= 2;
                }
            else // down from it while they run out of memory
                while (Open())
                {
                    if (Fits((int)Math.Max(hi.Value - step, lo + 1)) is not bool fit) return Stop();
                    if (fit) break;
                    step *= 2;
                }
        }
        if (hi is null)
            for (int b = lo > 0 ? (int)Math.Min((long)lo * 2, cap) : start; ; b = (int)Math.Min((long)b * 2, cap))
            {
                if (b <= lo) return new(AtCap, lo, null, $"batch {cap} (the cap) fits", probes);
                if (Fits(b) is not bool fit) return Stop();
                if (!fit) break;
            }
        while (Open())
            if (Fits(lo + (hi!.Value - lo) / 2) is null) return Stop();
        return lo > 0
            ? new(Found, lo, hi, null, probes)
            : new(NoneFits, null, hi, $"batch {hi} runs out of memory", probes);
    }
}
