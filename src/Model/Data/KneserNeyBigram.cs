namespace Memopt.Model.Data;

/// <summary>
/// A count-based word-bigram model with interpolated modified Kneser–Ney smoothing (Chen &amp; Goodman 1998), the
/// strongest classical smoother: the learnability yardstick of the synthetic corpus. Fitted on the TRAIN split's word
/// (chain symbol) sequences and scored on a held-out split, it says how much of the entropy-rate optimum a learner that
/// sees only the training sample can reach with the right (first-order) structure handed to it. When it is far above
/// the optimum, the corpus is too small for its language (too many transitions, each seen too rarely), not the model.
/// <code>
/// P(w|v)  = max(c(v,w) − D(c(v,w)), 0) / c(v) + γ(v) · Pkn(w),   γ(v) = (D1·N1(v) + D2·N2(v) + D3·N3+(v)) / c(v)
/// Pkn(w)  = (N1+(·w) + ½) / (N1+(··) + ½·S)      continuation counts, add-½ so words never seen after anything keep mass
/// D1 = 1 − 2Y·n2/n1, D2 = 2 − 3Y·n3/n2, D3 = 3 − 4Y·n4/n3, Y = n1/(n1 + 2·n2)   (n_k: bigram types seen k times)
/// </code>
/// A context never seen in training predicts with Pkn alone. Every sequence starts in a given state (the paragraph
/// break for the synthetic corpus, as in the true model's document NLL), so held-out NLLs compare term by term.
/// </summary>
public sealed class KneserNeyBigram
{
    private readonly int _stateCount;
    private readonly int[] _rowStart;      // CSR over contexts: bigram types of context v are [_rowStart[v], _rowStart[v+1])
    private readonly int[] _next;          // successor of each bigram type, ascending within a row
    private readonly int[] _count;         // c(v,w)
    private readonly long[] _contextCount; // c(v)
    private readonly double[] _backoffWeight; // γ(v)
    private readonly double[] _continuation;  // Pkn(w)

    public double D1 { get; }
    public double D2 { get; }
    public double D3 { get; }
    /// <summary>Distinct bigrams seen in training.</summary>
    public int BigramTypes => _next.Length;

    private KneserNeyBigram(int stateCount, int[] rowStart, int[] next, int[] count, double d1, double d2, double d3)
    {
        _stateCount = stateCount;
        _rowStart = rowStart;
        _next = next;
        _count = count;
        (D1, D2, D3) = (d1, d2, d3);
        _contextCount = new long[stateCount];
        _backoffWeight = new double[stateCount];
        var typesEndingIn = new long[stateCount];
        for (int v = 0; v < stateCount; v++)
        {
            long total = 0;
            double discounted = 0;
            for (int e = rowStart[v]; e < rowStart[v + 1]; e++)
            {
                total += count[e];
                discounted += Discount(count[e]);
                typesEndingIn[next[e]]++;
            }
            _contextCount[v] = total;
            _backoffWeight[v] = total > 0 ? discounted / total : 0;
        }
        _continuation = new double[stateCount];
        double denominator = next.Length + 0.5 * stateCount;
        for (int w = 0; w < stateCount; w++) _continuation[w] = (typesEndingIn[w] + 0.5) / denominator;
    }

    private double Discount(int c) => c == 1 ? D1 : c == 2 ? D2 : D3;

    /// <summary>Counts the bigrams of <paramref name="sequences"/> (each preceded by <paramref name="start"/>) over states 0..stateCount−1.</summary>
    public static KneserNeyBigram Fit(int stateCount, IEnumerable<int[]> sequences, int start)
    {
        if (stateCount < 1) throw new ArgumentOutOfRangeException(nameof(stateCount));
        // one 64-bit key v·S+w per bigram occurrence, sorted: runs of equal keys are the counts, rows come out in CSR order
        var keys = new List<long>();
        foreach (var sequence in sequences)
        {
            int previous = start;
            foreach (int symbol in sequence)
            {
                if ((uint)symbol >= (uint)stateCount) throw new ArgumentException($"symbol {symbol} outside 0..{stateCount - 1}");
                keys.Add((long)previous * stateCount + symbol);
                previous = symbol;
            }
        }
        var sorted = keys.ToArray();
        keys = null;
        Array.Sort(sorted);
        var next = new List<int>();
        var count = new List<int>();
        var rowStart = new int[stateCount + 1];
        var countOfCounts = new long[5];
        for (int i = 0; i < sorted.Length;)
        {
            int j = i;
            while (j < sorted.Length && sorted[j] == sorted[i]) j++;
            int v = (int)(sorted[i] / stateCount), w = (int)(sorted[i] % stateCount);
            rowStart[v + 1]++;
            next.Add(w);
            count.Add(j - i);
            if (j - i <= 4) countOfCounts[j - i]++;
            i = j;
        }
        for (int v = 0; v < stateCount; v++) rowStart[v + 1] += rowStart[v];
        var (d1, d2, d3) = Discounts(countOfCounts);
        return new KneserNeyBigram(stateCount, rowStart, [.. next], [.. count], d1, d2, d3);
    }

    /// <summary>Chen &amp; Goodman's estimates from the count-of-counts, clamped to a valid range when counts are too few.</summary>
    private static (double, double, double) Discounts(long[] n)
    {
        if (n[1] == 0 || n[2] == 0 || n[3] == 0 || n[4] == 0) return (0.5, 0.75, 0.75); // tiny samples: fixed, valid discounts
        double y = n[1] / (double)(n[1] + 2 * n[2]);
        double d1 = 1 - 2 * y * n[2] / n[1], d2 = 2 - 3 * y * n[3] / n[2], d3 = 3 - 4 * y * n[4] / n[3];
        return (Math.Clamp(d1, 0.05, 0.95), Math.Clamp(d2, 0.05, 1.95), Math.Clamp(d3, 0.05, 2.95));
    }

    /// <summary>P(w | v).</summary>
    public double Probability(int v, int w)
    {
        long total = _contextCount[v];
        if (total == 0) return _continuation[w];
        int at = Array.BinarySearch(_next, _rowStart[v], _rowStart[v + 1] - _rowStart[v], w);
        double seen = at >= 0 ? Math.Max(_count[at] - Discount(_count[at]), 0) / total : 0;
        return seen + _backoffWeight[v] * _continuation[w];
    }

    /// <summary>−Σ ln P(s_i | s_{i−1}) in nats over <paramref name="sequence"/>, with s_{−1} = <paramref name="start"/>.</summary>
    public double NllNats(int[] sequence, int start)
    {
        double nll = 0;
        int previous = start;
        foreach (int symbol in sequence)
        {
            nll -= Math.Log(Probability(previous, symbol));
            previous = symbol;
        }
        return nll;
    }
}
