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
/// </summary>
public static class MaxBatchSearch
{
    public const string Found = "ok", AtCap = "cap", NoneFits = "none_fits", Failed = "failed";

    public static MaxBatchResult Run(Func<int, ProbeOutcome> probe, int start = 1, int cap = 65536, int precision = 1,
        IEnumerable<ProbeOutcome>? known = null)
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
            if (k.Status == RunStatus.Oom) hi = hi is int h ? Math.Min(h, k.BatchSize) : k.BatchSize;
        }
        if (hi is int hk && hk <= lo) (lo, hi) = (0, null); // contradictory (a flaky run): trust only new probes
        else probes.AddRange((known ?? []).Where(k => k.Status != RunStatus.Failed));

        MaxBatchResult Stop(ProbeOutcome failed) =>
            new(Failed, lo > 0 ? lo : null, hi, $"probe at batch {failed.BatchSize} failed: {failed.Message}", probes);

        if (hi is null)
        {
            for (int b = lo > 0 ? (int)Math.Min((long)lo * 2, cap) : start; ; b = (int)Math.Min((long)b * 2, cap))
            {
                if (b <= lo) return new(AtCap, lo, null, $"batch {cap} (the cap) fits", probes);
                var p = probe(b);
                probes.Add(p);
                if (p.Status == RunStatus.Ok) lo = b;
                else if (p.Status == RunStatus.Oom) { hi = b; break; }
                else return Stop(p);
            }
        }
        while (hi!.Value - lo > precision)
        {
            int mid = lo + (hi.Value - lo) / 2;
            var p = probe(mid);
            probes.Add(p);
            if (p.Status == RunStatus.Ok) lo = mid;
            else if (p.Status == RunStatus.Oom) hi = mid;
            else return Stop(p);
        }
        return lo > 0
            ? new(Found, lo, hi, null, probes)
            : new(NoneFits, null, hi, $"batch {hi} runs out of memory", probes);
    }
}
