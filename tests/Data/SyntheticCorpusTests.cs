using Memopt.Model.Data;

namespace Memopt.Tests.Data;

public class SyntheticCorpusTests
{
    private static double BinaryEntropy(double p) => -(p * Math.Log(p) + (1 - p) * Math.Log(1 - p));

    [Fact]
    public void Two_state_chain_matches_the_closed_form()
    {
        // P = [[7/10, 3/10], [1/10, 9/10]]: π = (b, a)/(a+b) = (1/4, 3/4), H = π0·h(0.3) + π1·h(0.1).
        var chain = new MarkovChain([([0, 1], [7L, 3L]), ([0, 1], [1L, 9L])]);
        var pi = chain.StationaryDistribution();
        Assert.Equal(0.25, pi[0], 1e-12);
        Assert.Equal(0.75, pi[1], 1e-12);
        double expected = 0.25 * BinaryEntropy(0.3) + 0.75 * BinaryEntropy(0.1);
        Assert.Equal(expected, chain.EntropyRateNats(pi), 1e-12);
    }

    [Fact]
    public void Periodic_chain_converges_and_has_zero_entropy()
    {
        var chain = new MarkovChain([([1], [1L]), ([0], [1L])]);
        var pi = chain.StationaryDistribution();
        Assert.Equal(0.5, pi[0], 1e-12);
        Assert.Equal(0.0, chain.EntropyRateNats(pi), 1e-15);
    }

    [Fact]
    public void Sampling_follows_the_transition_probabilities()
    {
        var chain = new MarkovChain([([0, 1, 2], [1L, 2L, 5L]), ([0], [1L]), ([0], [1L])]);
        var rng = new DeterministicRandom(5);
        var counts = new int[3];
        const int n = 80_000;
        for (int i = 0; i < n; i++) counts[chain.NextOf(chain.SampleEntry(0, rng))]++;
        // binomial standard deviation ≤ √(n/4) ≈ 141: 5σ ≈ 0.9 % of n
        Assert.InRange(counts[0] / (double)n, 1 / 8.0 - 0.009, 1 / 8.0 + 0.009);
        Assert.InRange(counts[2] / (double)n, 5 / 8.0 - 0.009, 5 / 8.0 + 0.009);
    }

    [Fact]
    public void Entropy_rate_matches_the_true_models_log_loss_on_a_long_sample()
    {
        var language = new SyntheticLanguage(seed: 21, vocabularySize: 2000);
        var corpus = SyntheticCorpus.Sample(language, new SyntheticCorpusOptions(21, 300_000, 2000));
        double empirical = corpus.DocumentNllNats!.Sum() / corpus.DocumentWords!.Sum();
        // per-word log-loss has σ ≈ 2 nats; over 3·10^5 words the mean is within ~0.4 % of H at 1σ: 2 % is ~5σ
        Assert.True(Math.Abs(empirical / language.EntropyPerWordNats - 1) < 0.02,
            $"empirical {empirical:F4} vs entropy rate {language.EntropyPerWordNats:F4} nats/word");
        Assert.InRange(language.EntropyPerWordNats, 1.0, 6.0);
        Assert.Equal(language.EntropyPerWordNats / Math.Log(2), language.EntropyPerWordBits, 1e-12);
    }

    [Fact]
    public void Same_seed_gives_the_same_corpus_and_another_seed_does_not()
    {
        var a = SyntheticCorpus.Generate(new SyntheticCorpusOptions(4, 10_000, 300));
        var b = SyntheticCorpus.Generate(new SyntheticCorpusOptions(4, 10_000, 300));
        var c = SyntheticCorpus.Generate(new SyntheticCorpusOptions(5, 10_000, 300));
        Assert.Equal(a.Corpus.Documents, b.Corpus.Documents);
        Assert.Equal(a.Language.EntropyPerWordNats, b.Language.EntropyPerWordNats);
        Assert.NotEqual(a.Corpus.Documents, c.Corpus.Documents);
        Assert.NotEqual(a.Language.Words, c.Language.Words);
    }

    [Fact]
    public void Corpus_is_pinned_across_machines()
    {
        // Integer-only sampling: these values must never change (if they do, cached corpora and reported bounds change too).
        var (corpus, language) = SyntheticCorpus.Generate(new SyntheticCorpusOptions(1, 2_000, 300));
        Assert.Equal(PinnedFirstDocument, corpus.Documents[0]);
        Assert.Equal(PinnedWords, corpus.DocumentWords!.Sum());
        Assert.Equal(PinnedEntropy, language.EntropyPerWordNats, 1e-9); // only Math.Log may differ, in the last bits
    }

    private const string PinnedFirstDocument =
        "zo cho. chychoł, moł żyr ha cho. che mełkes pes rok moł lichór les cho lasgo cho deharto ża żyr żuwertu. cho łichirhoł " +
        "cho żuwertu lek la sa hanbime cho wudółpu cho, moł pasy war moł tas chy cho. małros żyr cho zó cho cho zuwa dak gaszor " +
        "nił żyr, żyr, mar cho małros cho. żełgok cho cho bozopi les.";
    private const long PinnedWords = 2050;
    private const double PinnedEntropy = 3.6973363690887835;

    [Fact]
    public void Corpus_has_the_requested_length_and_wellformed_paragraphs()
    {
        var corpus = SmallData.Corpus(12_345);
        long words = corpus.DocumentWords!.Sum();
        Assert.InRange(words, 12_345, 12_345 + 4 * 2000); // whole paragraphs: a little over per block
        Assert.All(corpus.Documents, d =>
        {
            Assert.EndsWith(".", d);
            Assert.DoesNotContain("\n", d);
            Assert.False(d.StartsWith(' '));
        });
        Assert.Equal(corpus.Documents.Count, corpus.DocumentWords!.Length);
    }

    [Fact]
    public void Split_is_85_10_5_deterministic_and_disjoint()
    {
        var a = CorpusSplit.Make(1000, 9);
        var b = CorpusSplit.Make(1000, 9);
        var c = CorpusSplit.Make(1000, 10);
        Assert.Equal((850, 100, 50), (a.Train.Length, a.Val.Length, a.Test.Length));
        Assert.Equal(a, b with { }, new SplitComparer());
        Assert.NotEqual(a.Val, c.Val);
        Assert.Equal(Enumerable.Range(0, 1000), a.Train.Concat(a.Val).Concat(a.Test).Order());
        Assert.True(a.Val.SequenceEqual(a.Val.Order()), "split lists documents in corpus order");
    }

    [Fact]
    public void Split_of_too_few_documents_is_reported()
    {
        var s = CorpusSplit.Make(3, 1);
        Assert.Equal((1, 1, 1), (s.Train.Length, s.Val.Length, s.Test.Length));
        var e = Assert.Throws<DataException>(() => CorpusSplit.Make(2, 1));
        Assert.Contains("2 document(s)", e.Message);
    }

    private sealed class SplitComparer : IEqualityComparer<CorpusSplit>
    {
        public bool Equals(CorpusSplit? x, CorpusSplit? y) =>
            x!.Train.SequenceEqual(y!.Train) && x.Val.SequenceEqual(y.Val) && x.Test.SequenceEqual(y.Test);
        public int GetHashCode(CorpusSplit obj) => 0;
    }
}
