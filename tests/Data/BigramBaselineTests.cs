using FsCheck;
using FsCheck.Xunit;
using Memopt.Model.Data;

namespace Memopt.Tests.Data;

public class BigramBaselineTests
{
    /// <summary>Sums of a few dozen probabilities in float64: anything beyond 1e-12 is a normalisation bug, not rounding.</summary>
    private const double SumTolerance = 1e-12;

    [Property(MaxTest = 30)]
    public void Every_context_predicts_a_distribution(PositiveInt states, PositiveInt length, int seed)
    {
        int s = 1 + states.Get % 23, n = 1 + length.Get % 400;
        var rng = new DeterministicRandom((ulong)seed);
        // skewed draws, so counts of 1, 2, 3 and more all occur, and some states are never seen (unseen contexts and words)
        var sequence = new int[n];
        for (int i = 0; i < n; i++) sequence[i] = Math.Min(rng.NextInt(s), rng.NextInt(s));
        var bigram = KneserNeyBigram.Fit(s + 2, [sequence], start: 0);
        for (int v = 0; v < s + 2; v++)
        {
            double sum = 0;
            for (int w = 0; w < s + 2; w++)
            {
                double p = bigram.Probability(v, w);
                Assert.True(p > 0, $"P({w}|{v}) = {p}: smoothing must leave mass on every word");
                sum += p;
            }
            Assert.True(Math.Abs(sum - 1) < SumTolerance, $"context {v}: probabilities sum to {sum:R}");
        }
        Assert.InRange(bigram.D1, 0.05, 0.95);
        Assert.InRange(bigram.D3, 0.05, 2.95);
    }

    [Fact]
    public void Frequent_bigrams_get_their_relative_frequency()
    {
        // 0→1 seen 900 times, 0→2 100 times: discounts of < 3 per type barely move frequencies of hundreds
        var sequences = Enumerable.Range(0, 1000).Select(i => new[] { i % 10 == 0 ? 2 : 1 }).ToList();
        var bigram = KneserNeyBigram.Fit(3, sequences, start: 0);
        Assert.InRange(bigram.Probability(0, 1), 0.895, 0.9);
        Assert.InRange(bigram.Probability(0, 2), 0.095, 0.1);
        Assert.Equal(-Math.Log(bigram.Probability(0, 1)) - Math.Log(bigram.Probability(1, 2)), bigram.NllNats([1, 2], start: 0), 1e-12);
        Assert.Throws<ArgumentException>(() => KneserNeyBigram.Fit(3, [[3]], start: 0));
    }

    /// <summary>
    /// The baseline's held-out NLL on the given split and the two sides of the bound: H·words (the optimum) and the
    /// 5σ noise of the realised loss around it. Paragraphs are i.i.d. (the paragraph break is a renewal state), so
    /// Σ_d (nll_d − H·words_d) has mean 0 and its standard deviation is estimated from the documents themselves.
    /// </summary>
    private static (double Baseline, double Optimum, double FiveSigma, long Words) Measure(SyntheticLanguage language, Corpus corpus, ulong seed)
    {
        var split = CorpusSplit.Make(corpus.Documents.Count, seed);
        var symbols = corpus.DocumentSymbols!;
        var bigram = KneserNeyBigram.Fit(language.Chain.StateCount, split.Train.Select(d => symbols[d]), language.ParagraphBreak);
        double h = language.EntropyPerWordNats, baseline = 0, variance = 0;
        long words = 0;
        foreach (int d in split.Val)
        {
            baseline += bigram.NllNats(symbols[d], language.ParagraphBreak);
            words += symbols[d].Length;
            double excess = corpus.DocumentNllNats![d] - h * symbols[d].Length;
            variance += excess * excess;
        }
        return (baseline, h * words, 5 * Math.Sqrt(variance), words);
    }

    [Fact]
    public void Baseline_does_not_beat_the_entropy_rate_on_held_out_paragraphs()
    {
        // No predictor has expected log-loss below the entropy rate (Gibbs), and the baseline is fitted on train only,
        // independent of val: it can undercut H·words only through the sampling noise of the val text, bounded at 5σ.
        var (corpus, language) = SyntheticCorpus.Generate(new SyntheticCorpusOptions(11, 200_000, 300));
        var (baseline, optimum, fiveSigma, words) = Measure(language, corpus, 11);
        Assert.True(baseline >= optimum - fiveSigma, $"baseline {baseline / words:F4} < optimum {optimum / words:F4} − 5σ {fiveSigma / words:F4} nats/word");
        Assert.True(baseline <= 1.05 * optimum, $"baseline {baseline / words:F4} vs optimum {optimum / words:F4} nats/word: 170 k training words of a 300-word language should be learnable");
        Assert.Equal(corpus.DocumentWords, corpus.DocumentSymbols!.Select(s => (long)s.Length));
        Assert.All(corpus.DocumentSymbols!, s => Assert.Equal(language.ParagraphBreak, s[^1]));
    }

    /// <summary>The default language must be learnable from the default training split: a counting model within 3 % in perplexity.</summary>
    private const double DefaultPerplexityMargin = 0.03;

    [Fact]
    public void Default_corpus_is_learnable_by_counting()
    {
        // The full default corpus (6.5 M words, ~4 s): the per-token ratio equals the per-word one here, since both
        // losses are divided by the same token count; per word the gap is a little wider (≥ 1 token per word).
        var (corpus, language) = SyntheticCorpus.Generate(new SyntheticCorpusOptions(1));
        var (baseline, optimum, fiveSigma, words) = Measure(language, corpus, 1);
        Assert.True(baseline >= optimum - fiveSigma, $"baseline {baseline / words:F4} < optimum {optimum / words:F4} − 5σ {fiveSigma / words:F4} nats/word");
        double perplexityGap = Math.Exp((baseline - optimum) / words) - 1;
        Assert.True(perplexityGap <= DefaultPerplexityMargin,
            $"bigram baseline {baseline / words:F4} vs optimum {optimum / words:F4} nats/word: perplexity gap {100 * perplexityGap:F2} % > {100 * DefaultPerplexityMargin} %");
        Assert.True(Math.Exp(language.EntropyPerWordNats) >= 20, $"the default language is near-trivial: perplexity {Math.Exp(language.EntropyPerWordNats):F1} per word");
    }
}
