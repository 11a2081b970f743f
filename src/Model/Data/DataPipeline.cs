using System.Diagnostics;
using System.Security.Cryptography;
using System.Text;

namespace Memopt.Model.Data;

/// <summary>
/// Text in, token streams out: used by <c>memopt prepare</c> and <c>memopt train</c>.
/// <list type="number">
/// <item>Identify the corpus: the --data files (hashed) or the synthetic generator's parameters.</item>
/// <item>If the cache holds this corpus + split seed + tokenizer, read it (tokens, counts, BPE files) and stop.
///   A cache file that is missing, from another tokenizer/corpus, truncated or corrupt is reported through
///   <see cref="DataOptions.Log"/> with its name, and everything is rebuilt.</item>
/// <item>Otherwise read/generate the documents, split them 85/10/5 by seed, train the BPE on the train split (each
///   document followed by the separator "\n\n", as it is encoded), encode every split as one stream of
///   document+separator, and write the cache (manifest last).</item>
/// <item>Check that every split holds at least one sequence of SeqLen+1 tokens.</item>
/// </list>
/// </summary>
public static class DataPipeline
{
    public static PreparedData Prepare(DataOptions options)
    {
        var clock = Stopwatch.StartNew();
        if (options.SeqLen < 1) throw new DataException($"sequence length must be positive (got {options.SeqLen})");
        if (options.Tokenizer == TokenizerKind.Bpe && options.VocabSize < BpeTrainer.MinVocabSize)
            throw new DataException($"BPE vocab size must be at least {BpeTrainer.MinVocabSize} (the byte tokens), got {options.VocabSize}");
        var log = options.Log ?? (_ => { });

        CorpusFiles? files = options.DataPath is null ? null : CorpusFiles.Find(options.DataPath);
        var synthetic = files is null ? new SyntheticCorpusOptions(options.Seed, options.CorpusWords, options.SyntheticVocabulary) : null;
        if (synthetic is { Words: < 1 }) throw new DataException($"synthetic corpus: --corpus-words must be positive (got {synthetic.Words})");
        string corpusHash = files?.ContentHash() ?? Convert.ToHexStringLower(SHA256.HashData(Encoding.UTF8.GetBytes(synthetic!.Key)));
        byte[] corpusKey = SHA256.HashData(Encoding.UTF8.GetBytes(
            $"memopt-data v{DataCache.Format};corpus={corpusHash};split={CorpusSplit.TrainPercent}/{CorpusSplit.ValPercent}/{CorpusSplit.TestPercent};seed={options.Seed};separator={Corpus.DocumentSeparator}"));
        string corpusKeyHex = Convert.ToHexStringLower(corpusKey);
        string stem = options.Tokenizer switch
        {
            TokenizerKind.Bpe => $"bpe{options.VocabSize}",
            TokenizerKind.Cl100k => TiktokenTextTokenizer.Cl100k,
            _ => TiktokenTextTokenizer.O200k,
        };
        var cache = options.CacheDir is null ? null : new DataCache(Path.Combine(Path.GetFullPath(options.CacheDir), corpusKeyHex[..16]), stem);

        ITextTokenizer? tokenizer = options.Tokenizer switch
        {
            TokenizerKind.Cl100k => new TiktokenTextTokenizer(TiktokenTextTokenizer.Cl100k),
            TokenizerKind.O200k => new TiktokenTextTokenizer(TiktokenTextTokenizer.O200k),
            _ => null,
        };
        if (cache is not null)
        {
            if (tokenizer is null && File.Exists(cache.MergesPath))
            {
                try { tokenizer = BpeTokenizer.Load(cache.VocabPath, cache.MergesPath); }
                catch (DataException e) { log($"cache: {e.Message}; retraining the tokenizer"); }
            }
            if (tokenizer is not null && File.Exists(cache.ManifestPath))
            {
                try
                {
                    var manifest = cache.ReadManifest(corpusKeyHex, tokenizer);
                    var tokens = new int[3][];
                    foreach (var split in Enum.GetValues<SplitName>())
                        tokens[(int)split] = TokenFile.Read(cache.TokenPath(split), Key(corpusKey, tokenizer, split));
                    log($"cache: read {cache.Directory}");
                    return Finish(options, tokenizer, tokens, manifest, cache, cacheHit: true, trainingSeconds: 0, clock);
                }
                catch (DataException e) { log($"cache: {e.Message}; rebuilding"); }
            }
        }

        var read = Stopwatch.StartNew();
        Corpus corpus;
        double? entropy = null;
        int chainStates = 0, startState = 0;
        if (files is not null) corpus = CorpusReader.Read(files);
        else
        {
            var (generated, language) = SyntheticCorpus.Generate(synthetic!);
            corpus = generated;
            entropy = language.EntropyPerWordNats;
            (chainStates, startState) = (language.Chain.StateCount, language.ParagraphBreak);
        }
        log($"{corpus.Description}: {corpus.Documents.Count} documents in {read.Elapsed.TotalSeconds:F1} s" +
            (corpus.BadLines > 0 ? $", {corpus.BadLines} malformed .jsonl lines skipped" : ""));
        var corpusSplit = CorpusSplit.Make(corpus.Documents.Count, options.Seed);
        double?[] bigramNll = BigramBaseline(corpus, corpusSplit, chainStates, startState, log);

        double trainingSeconds = 0;
        if (tokenizer is null)
        {
            var training = Stopwatch.StartNew();
            var trainTexts = corpusSplit.Train.Select(d => corpus.Documents[d] + Corpus.DocumentSeparator).ToArray();
            var bpe = BpeTrainer.Train(trainTexts, options.VocabSize);
            trainingSeconds = training.Elapsed.TotalSeconds;
            log($"trained {bpe.Name} on {trainTexts.Length} documents in {trainingSeconds:F1} s");
            if (cache is not null) bpe.Save(cache.VocabPath, cache.MergesPath);
            tokenizer = bpe;
        }

        var encoded = new int[3][];
        var splits = new CachedSplit[3];
        foreach (var split in Enum.GetValues<SplitName>())
        {
            int[] docs = corpusSplit[split];
            encoded[(int)split] = Encode(tokenizer, corpus, docs);
            splits[(int)split] = new CachedSplit(docs.Length, encoded[(int)split].Length,
                corpus.DocumentWords is { } w ? docs.Sum(d => w[d]) : null,
                corpus.DocumentNllNats is { } nll ? docs.Sum(d => nll[d]) : null, bigramNll[(int)split]);
        }
        var built = new CacheManifest(DataCache.Format, corpusKeyHex, tokenizer.Name, tokenizer.Fingerprint, tokenizer.VocabSize,
            corpus.Description, corpus.BadLines, [.. corpus.BadLineExamples], entropy, splits);
        if (cache is not null)
        {
            foreach (var split in Enum.GetValues<SplitName>())
                TokenFile.Write(cache.TokenPath(split), encoded[(int)split], Key(corpusKey, tokenizer, split));
            cache.WriteManifest(built);
            log($"cache: wrote {cache.Directory}");
        }
        return Finish(options, tokenizer, encoded, built, cache, cacheHit: false, trainingSeconds, clock);
    }

    /// <summary>
    /// Held-out NLL (nats) of val and test under a <see cref="KneserNeyBigram"/> counted on the train split's chain
    /// symbols; nulls for real data (no word sequence is known) and for train (in-sample counts say nothing).
    /// </summary>
    private static double?[] BigramBaseline(Corpus corpus, CorpusSplit split, int chainStates, int startState, Action<string> log)
    {
        var result = new double?[3];
        if (corpus.DocumentSymbols is not { } symbols) return result;
        var clock = Stopwatch.StartNew();
        var bigram = KneserNeyBigram.Fit(chainStates, split.Train.Select(d => symbols[d]), startState);
        foreach (var name in new[] { SplitName.Val, SplitName.Test })
        {
            var docs = split[name];
            var parts = new double[docs.Length];
            Parallel.For(0, docs.Length, i => parts[i] = bigram.NllNats(symbols[docs[i]], startState));
            result[(int)name] = parts.Sum();
        }
        log($"bigram baseline: {bigram.BigramTypes} bigram types counted on train, scored on val/test in {clock.Elapsed.TotalSeconds:F1} s");
        return result;
    }

    /// <summary>Tokens of the split's documents, each followed by the separator, in order (documents encoded in parallel).</summary>
    public static int[] Encode(ITextTokenizer tokenizer, Corpus corpus, int[] documents)
    {
        var parts = new int[documents.Length][];
        Parallel.For(0, documents.Length, i => parts[i] = tokenizer.Encode(corpus.Documents[documents[i]] + Corpus.DocumentSeparator));
        var tokens = new int[parts.Sum(p => (long)p.Length)];
        int at = 0;
        foreach (var p in parts) { p.CopyTo(tokens, at); at += p.Length; }
        return tokens;
    }

    private static TokenFileKey Key(byte[] corpusKey, ITextTokenizer tokenizer, SplitName split) =>
        new(corpusKey, tokenizer.Fingerprint, tokenizer.VocabSize, split);

    private static PreparedData Finish(DataOptions options, ITextTokenizer tokenizer, int[][] tokens, CacheManifest manifest,
                                       DataCache? cache, bool cacheHit, double trainingSeconds, Stopwatch clock)
    {
        SplitStats StatsOf(SplitName split)
        {
            var s = manifest.Splits[(int)split];
            return new SplitStats(s.Documents, tokens[(int)split].Length, BatchIterator.CountSequences(tokens[(int)split].Length, options.SeqLen),
                s.Words, s.TrueModelNllNats, manifest.EntropyPerWordNats, s.BigramBaselineNllNats);
        }
        var stats = new DataStats
        {
            Source = manifest.Source,
            TokenizerName = tokenizer.Name,
            VocabSize = tokenizer.VocabSize,
            SeqLen = options.SeqLen,
            Train = StatsOf(SplitName.Train),
            Val = StatsOf(SplitName.Val),
            Test = StatsOf(SplitName.Test),
            BadJsonlLines = manifest.BadJsonlLines,
            BadLineExamples = manifest.BadLineExamples,
            EntropyPerWordNats = manifest.EntropyPerWordNats,
            CacheHit = cacheHit,
            TokenizerTrainingSeconds = trainingSeconds,
            TotalSeconds = clock.Elapsed.TotalSeconds,
        };
        foreach (var split in Enum.GetValues<SplitName>())
            if (stats[split].Sequences == 0)
                throw new DataException($"{split.ToString().ToLowerInvariant()} split is too small: {stats[split].Documents} documents, " +
                                        $"{stats[split].Tokens} tokens, fewer than one sequence of {options.SeqLen}+1 tokens " +
                                        $"(use more data or a smaller --seq-len)");
        return new PreparedData
        {
            Tokenizer = tokenizer,
            Train = tokens[0],
            Val = tokens[1],
            Test = tokens[2],
            Stats = stats,
            CacheDirectory = cache?.Directory,
        };
    }
}
