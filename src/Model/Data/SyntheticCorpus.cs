using System.Text;

namespace Memopt.Model.Data;

/// <summary>What determines a synthetic corpus: the seed (language and sample) and its length in words (chain symbols).</summary>
public sealed record SyntheticCorpusOptions(ulong Seed, long Words = SyntheticCorpusOptions.DefaultWords, int VocabularySize = SyntheticLanguage.DefaultVocabularySize)
{
    /// <summary>
    /// Default length: 6.5 M words (words, commas, full stops, paragraph breaks; 114 k paragraphs with the default language).
    /// Measured with the default language (6000 words) and BPE (vocab 10000, seed 1): 5,533,780 train, 651,166 val and
    /// 324,191 test tokens (1.001 tokens/word), i.e. above 5 M training tokens for any seed.
    /// </summary>
    public const long DefaultWords = 6_500_000;

    /// <summary>Everything the generated text depends on, as a string that keys the cache.</summary>
    public string Key => $"synthetic-markov-v1;seed={Seed};words={Words};vocabulary={VocabularySize}";
}

/// <summary>
/// The embedded default corpus: paragraphs sampled from <see cref="SyntheticLanguage"/>, one document per paragraph.
/// <para>
/// Best achievable loss. The chain's entropy rate H (<see cref="SyntheticLanguage.EntropyPerWordNats"/>) is the least
/// expected log-loss per WORD. A tokenizer is lossless (decode ∘ encode = identity), so a token stream carries exactly
/// the information of its text; the least expected loss per TOKEN on a split is therefore its total entropy divided by
/// its token count: H · words(split) / tokens(split), with both counts measured on that split after tokenization
/// (<see cref="SplitStats.OptimalLossPerToken"/>). The realised loss of the true model on the split
/// (<see cref="SplitStats.TrueModelNllNats"/> / tokens) fluctuates around it. A model with a finite context pays a
/// little more at the start of each sequence, where it cannot see the previous word.
/// </para>
/// </summary>
public static class SyntheticCorpus
{
    public static (Corpus Corpus, SyntheticLanguage Language) Generate(SyntheticCorpusOptions options)
    {
        if (options.Words < 1) throw new DataException($"synthetic corpus: --corpus-words must be positive (got {options.Words})");
        var language = new SyntheticLanguage(options.Seed, options.VocabularySize);
        return (Sample(language, options), language);
    }

    /// <summary>Words per generation block: blocks are sampled in parallel, each from its own random stream.</summary>
    public const int BlockWords = 1 << 16;

    /// <summary>
    /// Samples whole paragraphs until at least <c>options.Words</c> words were produced. The words are produced in
    /// blocks of <see cref="BlockWords"/> (block b: paragraphs from random stream b until the block's quota is reached),
    /// in parallel; paragraphs are i.i.d., so blocking changes nothing statistically, and the result does not depend on
    /// the number of threads.
    /// </summary>
    public static Corpus Sample(SyntheticLanguage language, SyntheticCorpusOptions options)
    {
        long blocks = (options.Words + BlockWords - 1) / BlockWords;
        var results = new (List<string> Documents, List<int[]> Symbols, List<double> Nll)[blocks];
        Parallel.For(0, blocks, b =>
        {
            long quota = Math.Min(BlockWords, options.Words - b * BlockWords);
            var rng = DeterministicRandom.ForStream(options.Seed, 0x73616D706C650000UL + (ulong)b); // "sample" + block
            results[b] = SampleBlock(language, rng, quota);
        });
        var documents = results.SelectMany(r => r.Documents).ToList();
        var symbols = results.SelectMany(r => r.Symbols).ToArray();
        var words = symbols.Select(s => (long)s.Length).ToArray();
        var nll = results.SelectMany(r => r.Nll).ToArray();
        long total = words.Sum();
        return new Corpus
        {
            Documents = documents,
            DocumentWords = words,
            DocumentNllNats = nll,
            DocumentSymbols = symbols,
            Description = $"synthetic Markov corpus (seed {options.Seed}, {total} words, {language.VocabularySize}-word language, entropy rate {language.EntropyPerWordNats:F4} nats/word)",
        };
    }

    private static (List<string> Documents, List<int[]> Symbols, List<double> Nll) SampleBlock(SyntheticLanguage language, DeterministicRandom rng, long quota)
    {
        var chain = language.Chain;
        var documents = new List<string>();
        var symbols = new List<int[]>();
        var nll = new List<double>();
        var text = new StringBuilder();
        var paragraph = new List<int>();
        long total = 0;
        while (total < quota)
        {
            text.Clear();
            paragraph.Clear();
            int state = language.ParagraphBreak;
            double logLoss = 0;
            while (true)
            {
                int entry = chain.SampleEntry(state, rng);
                int symbol = chain.NextOf(entry);
                logLoss -= chain.LogProbabilityOf(entry);
                paragraph.Add(symbol);
                if (symbol == language.ParagraphBreak) break;
                language.Render(text, state, symbol);
                state = symbol;
            }
            documents.Add(text.ToString());
            symbols.Add([.. paragraph]);
            nll.Add(logLoss);
            total += paragraph.Count;
        }
        return (documents, symbols, nll);
    }
}
