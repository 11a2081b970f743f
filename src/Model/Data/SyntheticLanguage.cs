namespace Memopt.Model.Data;

/// <summary>
/// The stochastic source of the default corpus: a first-order Markov chain over "words", where a word (a chain
/// symbol) is one of the V vocabulary words, a comma, a full stop or a paragraph break. Its structure, fixed by the seed:
/// <list type="bullet">
/// <item>Vocabulary words have Zipfian ranks (see <see cref="SyntheticWords"/>). Each word has a sparse successor set drawn
///   from the global Zipf law (frequent words have wide sets: 6–11 + 2048/(rank+8) successors, at most 256), weighted
///   1/(j+1) by frequency order, plus a comma (0–8 %) and a full stop (4–14 %): sentences average ~11 words.</item>
/// <item>After a comma: 128 Zipf-drawn successors. After a full stop: a paragraph break (20 %) or a sentence opener (256
///   Zipf-drawn words, 1/(j+1)). After a paragraph break: a sentence opener.</item>
/// </list>
/// Text rendering is injective (words are separated by single spaces, punctuation attaches to the word before, the
/// paragraph break renders as the document separator "\n\n"), so the text carries exactly the information of the
/// symbol sequence. The paragraph break is a renewal state: paragraphs are i.i.d., so any subset of paragraphs (a split)
/// is again distributed like a run of the chain, and its expected information is H·(its words).
/// All weights are integers: the language and every sample are bit-identical across machines.
/// </summary>
public sealed class SyntheticLanguage
{
    /// <summary>
    /// 6000 words. Measured with the default corpus (6.5 M words, seed 1) and BPE 10000: optimum 3.5897 nats/token
    /// (perplexity 36.22) on val; the Kneser–Ney word bigram counted on train (<see cref="KneserNeyBigram"/>) reaches
    /// perplexity 36.94 (+2.0 %), so the transition table IS learnable from the training split. At 20000 words the same
    /// baseline was +3.1 % over the optimum; at 500/1000/2000/5000/8000 it was +0.4/0.7/1.1/1.8/2.4 %. Words stay single
    /// BPE-10000 tokens (1.001 tokens/word), and BPE 10000 stays reachable with margin (up to 11660 tokens, seed 1;
    /// with 5000 words only ~10200, too close to the default vocab size).
    /// </summary>
    public const int DefaultVocabularySize = 6_000;

    public int VocabularySize { get; }
    public int Comma => VocabularySize;
    public int FullStop => VocabularySize + 1;
    public int ParagraphBreak => VocabularySize + 2;

    public IReadOnlyList<string> Words { get; }
    public MarkovChain Chain { get; }
    public double[] Stationary { get; }
    /// <summary>Exact entropy rate of the chain in nats per word (chain symbol). See <see cref="SyntheticCorpus"/> for the per-token bound.</summary>
    public double EntropyPerWordNats { get; }
    public double EntropyPerWordBits => EntropyPerWordNats / Math.Log(2);

    public SyntheticLanguage(ulong seed, int vocabularySize = DefaultVocabularySize)
    {
        if (vocabularySize < 2) throw new ArgumentOutOfRangeException(nameof(vocabularySize), "the synthetic language needs at least 2 words");
        VocabularySize = vocabularySize;
        Words = SyntheticWords.Generate(vocabularySize, seed);
        var rng = DeterministicRandom.ForStream(seed, 0x636861696EUL); // "chain"
        var zipf = new long[vocabularySize]; // cumulative Zipf(1) weights over word ranks
        long running = 0;
        for (int r = 0; r < vocabularySize; r++) zipf[r] = running += (1L << 32) / (r + 1);

        var rows = new (int[] Next, long[] Weights)[vocabularySize + 3];
        for (int w = 0; w < vocabularySize; w++)
        {
            int k = Math.Min(256, 6 + rng.NextInt(6) + 2048 / (w + 8));
            var (next, weights) = ZipfSuccessors(rng, zipf, k);
            long stopPermille = 40 + rng.NextInt(101), commaPermille = rng.NextInt(81);
            long wordShare = 1000 - stopPermille - commaPermille;
            long sum = weights.Sum();
            for (int j = 0; j < weights.Length; j++) weights[j] *= wordShare;
            rows[w] = commaPermille > 0
                ? ([.. next, Comma, FullStop], [.. weights, sum * commaPermille, sum * stopPermille])
                : ([.. next, FullStop], [.. weights, sum * stopPermille]);
        }
        rows[Comma] = ZipfSuccessors(rng, zipf, 128);
        var (openers, openerWeights) = ZipfSuccessors(rng, zipf, 256);
        long openerSum = openerWeights.Sum();
        rows[FullStop] = ([.. openers, ParagraphBreak], [.. openerWeights.Select(x => x * 4), openerSum]); // break: 1/5
        rows[ParagraphBreak] = (openers, openerWeights);
        Chain = new MarkovChain(rows);
        Stationary = Chain.StationaryDistribution();
        EntropyPerWordNats = Chain.EntropyRateNats(Stationary);
    }

    /// <summary>k distinct words drawn from the global Zipf law, in frequency order, weighted 2^20/(j+1).</summary>
    private (int[] Next, long[] Weights) ZipfSuccessors(DeterministicRandom rng, long[] zipfCumulative, int k)
    {
        k = Math.Min(k, VocabularySize);
        var chosen = new SortedSet<int>();
        long total = zipfCumulative[^1];
        while (chosen.Count < k)
        {
            long u = (long)rng.NextBelow((ulong)total);
            int r = Array.BinarySearch(zipfCumulative, u + 1);
            chosen.Add(r >= 0 ? r : ~r);
        }
        var next = chosen.ToArray();
        var weights = new long[k];
        for (int j = 0; j < k; j++) weights[j] = (1L << 20) / (j + 1);
        return (next, weights);
    }

    /// <summary>Appends the text of <paramref name="symbol"/> that follows <paramref name="previous"/>; the paragraph break appends nothing (it is the document separator).</summary>
    public void Render(System.Text.StringBuilder text, int previous, int symbol)
    {
        if (symbol < VocabularySize)
        {
            if (previous != ParagraphBreak) text.Append(' ');
            text.Append(Words[symbol]);
        }
        else if (symbol == Comma) text.Append(',');
        else if (symbol == FullStop) text.Append('.');
    }
}
