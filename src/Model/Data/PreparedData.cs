namespace Memopt.Model.Data;

/// <summary>Counts of one split. Words and the true model's loss exist only for the synthetic corpus.</summary>
public sealed record SplitStats(int Documents, long Tokens, int Sequences, long? Words = null, double? TrueModelNllNats = null, double? EntropyPerWordNats = null,
                                double? BigramBaselineNllNats = null)
{
    /// <summary>
    /// Least expected loss per token on this split, in nats: H_word · words / tokens (a lossless tokenizer keeps the
    /// total information, so the total entropy H·words spreads over the tokens). Synthetic corpus only.
    /// </summary>
    public double? OptimalLossPerToken => EntropyPerWordNats is double h && Words is long w && Tokens > 0 ? h * w / Tokens : null;
    /// <summary>exp(<see cref="OptimalLossPerToken"/>): the best achievable perplexity per token.</summary>
    public double? OptimalPerplexity => OptimalLossPerToken is double l ? Math.Exp(l) : null;
    /// <summary>The realised loss per token of the generating model on this split's text, in nats.</summary>
    public double? TrueModelLossPerToken => TrueModelNllNats is double nll && Tokens > 0 ? nll / Tokens : null;
    /// <summary>
    /// Learnability yardstick: the loss per token (total NLL in nats / tokens, like <see cref="OptimalLossPerToken"/>) of a
    /// Kneser–Ney word-bigram model counted on the TRAIN split's words (<see cref="KneserNeyBigram"/>). The generating
    /// chain is a word bigram, so this is what plain counting reaches from this much training data; a model within a
    /// few % of the optimum is only plausible when this is. Synthetic corpus, val and test splits only.
    /// </summary>
    public double? BigramBaselineLossPerToken => BigramBaselineNllNats is double nll && Tokens > 0 ? nll / Tokens : null;
    public double? BigramBaselinePerplexity => BigramBaselineLossPerToken is double l ? Math.Exp(l) : null;
    /// <summary>Tokens per word (chain symbol) of this split; synthetic corpus only.</summary>
    public double? TokensPerWord => Words is long w && w > 0 ? (double)Tokens / w : null;
}

public sealed record DataStats
{
    public required string Source { get; init; }
    public required string TokenizerName { get; init; }
    public required int VocabSize { get; init; }
    public required int SeqLen { get; init; }
    public required SplitStats Train { get; init; }
    public required SplitStats Val { get; init; }
    public required SplitStats Test { get; init; }
    public int BadJsonlLines { get; init; }
    public IReadOnlyList<string> BadLineExamples { get; init; } = [];
    /// <summary>Entropy rate of the synthetic source in nats per word (chain symbol); null for real data.</summary>
    public double? EntropyPerWordNats { get; init; }
    public double? EntropyPerWordBits => EntropyPerWordNats / Math.Log(2);
    /// <summary>True when the tokenized splits were read from the cache (nothing was read, generated, trained or encoded).</summary>
    public bool CacheHit { get; init; }
    public double TokenizerTrainingSeconds { get; init; }
    public double TotalSeconds { get; init; }

    public SplitStats this[SplitName split] => split switch { SplitName.Train => Train, SplitName.Val => Val, _ => Test };
}

/// <summary>The result of <see cref="DataPipeline.Prepare"/>: the tokenizer, each split as one token stream, and the counts.</summary>
public sealed class PreparedData
{
    public required ITextTokenizer Tokenizer { get; init; }
    public required int[] Train { get; init; }
    public required int[] Val { get; init; }
    public required int[] Test { get; init; }
    public required DataStats Stats { get; init; }
    /// <summary>The cache directory of this corpus and split seed (null without a cache).</summary>
    public string? CacheDirectory { get; init; }

    public int[] Tokens(SplitName split) => split switch { SplitName.Train => Train, SplitName.Val => Val, _ => Test };

    /// <summary>Batches of a split; shuffle for training, stream order for evaluation.</summary>
    public BatchIterator Batches(SplitName split, int batchSize, ulong seed, bool shuffle, BatchPosition start = default) =>
        new(Tokens(split), batchSize, Stats.SeqLen, seed, shuffle, split.ToString().ToLowerInvariant(), start);
}
