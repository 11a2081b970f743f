using System.Globalization;
using CommandLine;
using Memopt.Model.Data;

namespace Memopt.Runner.Commands;

/// <summary>Options of the data pipeline; <c>memopt train</c> can inherit them to prepare its data the same way.</summary>
[Verb("prepare", HelpText = "Read or generate the corpus, train/load the tokenizer, tokenize train/val/test into the cache and print their sizes.")]
public class PrepareOptions
{
    [Option("data", HelpText = "A UTF-8 .txt file, a .jsonl file with a \"text\" field per line, or a directory of them. Default: the embedded synthetic corpus.")]
    public string? Data { get; set; }

    [Option("tokenizer", Default = "bpe", HelpText = "bpe (trained on the train split), cl100k or o200k (pretrained OpenAI encodings).")]
    public string Tokenizer { get; set; } = "bpe";

    [Option("vocab-size", Default = 10_000, HelpText = "Vocabulary size of the trained BPE (at least 256).")]
    public int VocabSize { get; set; } = 10_000;

    [Option("seq-len", Default = 256, HelpText = "Sequence length T: sequences are T+1 tokens with stride T.")]
    public int SeqLen { get; set; } = 256;

    [Option("seed", Default = 1L, HelpText = "Seed of the synthetic corpus and of the train/val/test document split.")]
    public long Seed { get; set; } = 1;

    [Option("cache-dir", Default = "./cache", HelpText = "Directory for tokenizers and tokenized splits.")]
    public string CacheDir { get; set; } = "./cache";

    [Option("no-cache", HelpText = "Neither read nor write the cache.")]
    public bool NoCache { get; set; }

    [Option("corpus-words", Default = SyntheticCorpusOptions.DefaultWords, HelpText = "Length of the synthetic corpus in words (words, commas, full stops, paragraph breaks).")]
    public long CorpusWords { get; set; } = SyntheticCorpusOptions.DefaultWords;

    [Option("synthetic-vocab", Default = SyntheticLanguage.DefaultVocabularySize, HelpText = "Number of distinct words of the synthetic language.")]
    public int SyntheticVocab { get; set; } = SyntheticLanguage.DefaultVocabularySize;

    public DataOptions ToDataOptions(Action<string>? log) => new()
    {
        DataPath = Data,
        Tokenizer = ParseTokenizer(Tokenizer),
        VocabSize = VocabSize,
        SeqLen = SeqLen,
        Seed = unchecked((ulong)Seed),
        CacheDir = NoCache ? null : CacheDir,
        CorpusWords = CorpusWords,
        SyntheticVocabulary = SyntheticVocab,
        Log = log,
    };

    public static TokenizerKind ParseTokenizer(string name) => name.ToLowerInvariant() switch
    {
        "bpe" => TokenizerKind.Bpe,
        "cl100k" or "cl100k_base" => TokenizerKind.Cl100k,
        "o200k" or "o200k_base" => TokenizerKind.O200k,
        _ => throw new UserError($"--tokenizer: unknown tokenizer \"{name}\" (expected bpe, cl100k or o200k)"),
    };

    /// <summary>Runs the pipeline, turning bad data into a <see cref="UserError"/>.</summary>
    public PreparedData Prepare(Action<string>? log)
    {
        try { return DataPipeline.Prepare(ToDataOptions(log)); }
        catch (DataException e) { throw new UserError(e.Message, e); }
    }
}

public static class PrepareCommand
{
    public static int Run(PrepareOptions options) => Run(options, Console.Out, Console.Error);

    public static int Run(PrepareOptions options, TextWriter output, TextWriter progress)
    {
        var data = options.Prepare(message => progress.WriteLine($"prepare: {message}"));
        var s = data.Stats;
        var c = CultureInfo.InvariantCulture;
        output.WriteLine($"source      {s.Source}");
        output.WriteLine($"tokenizer   {s.TokenizerName}, vocab {s.VocabSize}" +
                         (s.CacheHit ? " (from cache)" : s.TokenizerTrainingSeconds > 0 ? string.Format(c, " (trained in {0:F1} s)", s.TokenizerTrainingSeconds) : ""));
        output.WriteLine($"{"split",-6}{"documents",12}{"tokens",14}{$"sequences (T={s.SeqLen})",22}");
        foreach (var split in Enum.GetValues<SplitName>())
        {
            var st = s[split];
            output.WriteLine(string.Format(c, "{0,-6}{1,12:N0}{2,14:N0}{3,22:N0}", split.ToString().ToLowerInvariant(), st.Documents, st.Tokens, st.Sequences));
        }
        if (s.BadJsonlLines > 0)
        {
            output.WriteLine($"skipped     {s.BadJsonlLines} malformed .jsonl line(s), e.g.:");
            foreach (var example in s.BadLineExamples) output.WriteLine($"              {example}");
        }
        if (s.EntropyPerWordNats is double h)
        {
            output.WriteLine(string.Format(c, "entropy     {0:F4} nats/word = {1:F4} bits/word (exact rate of the generating Markov chain)", h, s.EntropyPerWordBits));
            output.WriteLine(string.Format(c, "best val    {0:F4} nats/token = perplexity {1:F2} (H x {2:N0} words / {3:N0} tokens); true model on val: {4:F4} nats/token",
                s.Val.OptimalLossPerToken, s.Val.OptimalPerplexity, s.Val.Words, s.Val.Tokens, s.Val.TrueModelLossPerToken));
            if (s.Val.BigramBaselineLossPerToken is double bigram)
                output.WriteLine(string.Format(c, "bigram val  {0:F4} nats/token = perplexity {1:F2}, {2:+0.0;-0.0}% over the best (Kneser-Ney word bigram counted on train: what counting reaches with this much data); {3:F3} tokens/word",
                    bigram, s.Val.BigramBaselinePerplexity, 100 * (s.Val.BigramBaselinePerplexity / s.Val.OptimalPerplexity - 1), s.Val.TokensPerWord));
        }
        output.WriteLine(string.Format(c, "cache       {0} ({1}), {2:F1} s",
            data.CacheDirectory ?? "off", s.CacheHit ? "reused" : "built", s.TotalSeconds));
        return 0;
    }
}
