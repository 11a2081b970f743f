namespace Memopt.Model.Data;

/// <summary>
/// A first-order Markov chain on states 0..N−1 with sparse rows of INTEGER weights: P(t|s) = w(s,t) / Σ_t' w(s,t').
/// Integer weights make sampling exact and identical on every machine (an integer draw in [0, row total) and a search
/// in the row's integer cumulative sums; no floating-point library call decides a sample).
/// It computes what makes a synthetic corpus useful as a yardstick: the stationary distribution π and the exact
/// entropy rate H = −Σ_s π(s) Σ_t P(t|s) ln P(t|s), the best average log-loss per symbol any predictor can reach.
/// </summary>
public sealed class MarkovChain
{
    private readonly int[] _rowStart;     // CSR: entries of state s are [_rowStart[s], _rowStart[s+1])
    private readonly int[] _next;         // successor state of each entry
    private readonly long[] _cumulative;  // running sum of weights within the row, ending at the row total
    private readonly double[] _probability;
    private readonly double[] _logProbability;

    public int StateCount { get; }
    public int EntryCount => _next.Length;

    /// <param name="rows">rows[s] = successors of s and their positive integer weights (successors distinct within a row).</param>
    public MarkovChain(IReadOnlyList<(int[] Next, long[] Weights)> rows)
    {
        StateCount = rows.Count;
        if (StateCount == 0) throw new ArgumentException("a Markov chain needs at least one state");
        _rowStart = new int[StateCount + 1];
        for (int s = 0; s < StateCount; s++)
        {
            var (next, weights) = rows[s];
            if (next.Length == 0 || next.Length != weights.Length)
                throw new ArgumentException($"state {s}: needs ≥ 1 successor and one weight per successor (got {next.Length} successors, {weights.Length} weights)");
            _rowStart[s + 1] = _rowStart[s] + next.Length;
        }
        int n = _rowStart[StateCount];
        _next = new int[n];
        _cumulative = new long[n];
        _probability = new double[n];
        _logProbability = new double[n];
        for (int s = 0; s < StateCount; s++)
        {
            var (next, weights) = rows[s];
            long total = 0;
            foreach (long w in weights)
            {
                if (w <= 0) throw new ArgumentException($"state {s}: weights must be positive");
                total = checked(total + w);
            }
            long running = 0;
            var seen = new HashSet<int>();
            for (int j = 0; j < next.Length; j++)
            {
                int e = _rowStart[s] + j;
                if ((uint)next[j] >= (uint)StateCount) throw new ArgumentException($"state {s}: successor {next[j]} out of range");
                if (!seen.Add(next[j])) throw new ArgumentException($"state {s}: successor {next[j]} listed twice");
                running += weights[j];
                _next[e] = next[j];
                _cumulative[e] = running;
                _probability[e] = (double)weights[j] / total;
                _logProbability[e] = Math.Log(_probability[e]);
            }
        }
    }

    /// <summary>Draws the transition taken from <paramref name="state"/>; returns the entry (see <see cref="NextOf"/>, <see cref="LogProbabilityOf"/>).</summary>
    public int SampleEntry(int state, DeterministicRandom rng)
    {
        int lo = _rowStart[state], hi = _rowStart[state + 1] - 1;
        long u = (long)rng.NextBelow((ulong)_cumulative[hi]);
        // first entry whose running sum exceeds u
        while (lo < hi)
        {
            int mid = (lo + hi) >> 1;
            if (_cumulative[mid] > u) hi = mid; else lo = mid + 1;
        }
        return lo;
    }

    public int NextOf(int entry) => _next[entry];
    public double LogProbabilityOf(int entry) => _logProbability[entry];

    /// <summary>P(to | from); 0 when the transition does not exist.</summary>
    public double Probability(int from, int to)
    {
        for (int e = _rowStart[from]; e < _rowStart[from + 1]; e++)
            if (_next[e] == to) return _probability[e];
        return 0;
    }

    /// <summary>
    /// The stationary distribution by power iteration on the lazy chain (π ← ½π + ½πP, same fixed point, converges also
    /// for periodic chains), from the uniform distribution, until the L1 change per step is below <paramref name="tolerance"/>/1000
    /// (the distance to π can be several times the last step when the chain mixes slowly: the margin keeps it below the tolerance).
    /// States that cannot be reached from the chain's closed class end with probability 0. Assumes one closed class
    /// (true for the synthetic language: every state leads to the paragraph break).
    /// </summary>
    public double[] StationaryDistribution(double tolerance = 1e-12, int maxIterations = 1_000_000)
    {
        var pi = new double[StateCount];
        var next = new double[StateCount];
        Array.Fill(pi, 1.0 / StateCount);
        for (int iteration = 0; iteration < maxIterations; iteration++)
        {
            Array.Clear(next);
            for (int s = 0; s < StateCount; s++)
            {
                double mass = pi[s];
                if (mass == 0) continue;
                for (int e = _rowStart[s]; e < _rowStart[s + 1]; e++) next[_next[e]] += mass * _probability[e];
            }
            double change = 0, total = 0;
            for (int s = 0; s < StateCount; s++)
            {
                double v = 0.5 * (pi[s] + next[s]);
                change += Math.Abs(v - pi[s]);
                total += v;
                next[s] = v;
            }
            // renormalise so rounding cannot drift the total away from 1 over many iterations
            for (int s = 0; s < StateCount; s++) next[s] /= total;
            (pi, next) = (next, pi);
            if (change < tolerance * 1e-3) return pi;
        }
        throw new InvalidOperationException($"stationary distribution did not converge to {tolerance:E0} in {maxIterations} iterations");
    }

    /// <summary>Entropy of the next-state distribution of each state, in nats.</summary>
    public double RowEntropyNats(int state)
    {
        double h = 0;
        for (int e = _rowStart[state]; e < _rowStart[state + 1]; e++) h -= _probability[e] * _logProbability[e];
        return h;
    }

    /// <summary>H = Σ_s π(s) · H(P(·|s)) in nats per symbol: the exact entropy rate of the stationary chain.</summary>
    public double EntropyRateNats(double[] stationary)
    {
        double h = 0;
        for (int s = 0; s < StateCount; s++)
            if (stationary[s] > 0) h += stationary[s] * RowEntropyNats(s);
        return h;
    }
}
