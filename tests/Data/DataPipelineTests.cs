using Memopt.Model.Data;

namespace Memopt.Tests.Data;

public class DataPipelineTests
{
    private static void AssertSame(PreparedData a, PreparedData b)
    {
        Assert.Equal(a.Train, b.Train);
        Assert.Equal(a.Val, b.Val);
        Assert.Equal(a.Test, b.Test);
        Assert.Equal(a.Tokenizer.Fingerprint, b.Tokenizer.Fingerprint);
        Assert.Equal(a.Stats.Val, b.Stats.Val);
    }

    [Fact]
    public void Prepares_synthetic_splits_with_stats_and_bound()
    {
        using var dir = new TempDirectory();
        var data = DataPipeline.Prepare(SmallData.Options(dir.Path));
        var s = data.Stats;
        Assert.Equal(380, data.Tokenizer.VocabSize);
        Assert.False(s.CacheHit);
        Assert.All(Enum.GetValues<SplitName>(), split =>
        {
            Assert.True(s[split].Tokens == data.Tokens(split).Length);
            Assert.Equal((int)((s[split].Tokens - 1) / 16), s[split].Sequences);
            Assert.True(data.Tokens(split).All(t => t >= 0 && t < 380));
        });
        int docs = s.Train.Documents + s.Val.Documents + s.Test.Documents;
        Assert.InRange(s.Val.Documents, docs / 10 - 1, docs / 10 + 1);
        Assert.NotNull(s.EntropyPerWordNats);
        // the bound per token is H·words/tokens, and the realised true-model loss sits close to it
        Assert.Equal(s.EntropyPerWordNats!.Value * s.Val.Words!.Value / s.Val.Tokens, s.Val.OptimalLossPerToken!.Value, 1e-12);
        Assert.InRange(s.Val.TrueModelLossPerToken!.Value / s.Val.OptimalLossPerToken!.Value, 0.9, 1.1);
        // the bigram baseline is a held-out NLL per token like the optimum, for val and test only (it is counted on train)
        Assert.Null(s.Train.BigramBaselineNllNats);
        Assert.Equal(s.Val.BigramBaselineNllNats!.Value / s.Val.Tokens, s.Val.BigramBaselineLossPerToken!.Value, 1e-12);
        Assert.NotNull(s.Test.BigramBaselineLossPerToken);
        Assert.InRange(s.Val.BigramBaselineLossPerToken!.Value / s.Val.OptimalLossPerToken!.Value, 0.97, 1.2);
        Assert.Equal((double)s.Val.Tokens / s.Val.Words!.Value, s.Val.TokensPerWord!.Value, 1e-12);
        // the token stream decodes to the split's paragraphs, each followed by the separator
        string text = data.Tokenizer.Decode(data.Val);
        Assert.EndsWith(".\n\n", text);
        Assert.Equal(s.Val.Documents, text.Split("\n\n", StringSplitOptions.RemoveEmptyEntries).Length);
    }

    [Fact]
    public void Second_prepare_reads_the_cache()
    {
        using var dir = new TempDirectory();
        var first = DataPipeline.Prepare(SmallData.Options(dir.Path));
        var log = new List<string>();
        var second = DataPipeline.Prepare(SmallData.Options(dir.Path, log));
        Assert.True(second.Stats.CacheHit, string.Join("\n", log));
        AssertSame(first, second);
        Assert.NotNull(second.Stats.Val.BigramBaselineLossPerToken); // kept in the manifest: a cached prepare still reports it
        Assert.Equal(first.Stats.Test.BigramBaselineNllNats, second.Stats.Test.BigramBaselineNllNats);
        Assert.Empty(Directory.GetFiles(dir.Path, "*.tmp-*", SearchOption.AllDirectories));
    }

    [Theory]
    [InlineData("flip")]
    [InlineData("truncate")]
    [InlineData("header")]
    public void Damaged_cache_file_is_detected_named_and_rebuilt(string damage)
    {
        using var dir = new TempDirectory();
        var first = DataPipeline.Prepare(SmallData.Options(dir.Path));
        string file = Path.Combine(first.CacheDirectory!, "bpe380.val.tok");
        byte[] bytes = File.ReadAllBytes(file);
        switch (damage)
        {
            case "flip": bytes[^5] ^= 0x40; File.WriteAllBytes(file, bytes); break;
            case "truncate": File.WriteAllBytes(file, bytes[..^7]); break;
            case "header": bytes[64] ^= 1; File.WriteAllBytes(file, bytes); break; // token count
        }
        var log = new List<string>();
        var second = DataPipeline.Prepare(SmallData.Options(dir.Path, log));
        Assert.False(second.Stats.CacheHit);
        Assert.Contains(log, line => line.Contains(file) && line.Contains("rebuilding"));
        AssertSame(first, second);
        Assert.True(DataPipeline.Prepare(SmallData.Options(dir.Path)).Stats.CacheHit, "the rebuilt cache is valid");
    }

    [Fact]
    public void Token_file_reports_each_problem_with_the_file_name()
    {
        using var dir = new TempDirectory();
        string path = dir.Sub("x.tok");
        var key = new TokenFileKey(new byte[32], 0x1234, 500, SplitName.Val);
        int[] tokens = [0, 1, 499, 7, 256];
        TokenFile.Write(path, tokens, key);
        Assert.Equal(tokens, TokenFile.Read(path, key));
        Assert.Equal(TokenFile.HeaderBytes + 2 * tokens.Length, new FileInfo(path).Length);

        string Problem(TokenFileKey k) => Assert.Throws<DataException>(() => TokenFile.Read(path, k)).Message;
        Assert.Equal($"{path}: made by another tokenizer (fingerprint 0000000000001234, vocab 500; expected 0000000000001235, vocab 500)",
            Problem(key with { TokenizerFingerprint = 0x1235 }));
        Assert.Contains("made by another tokenizer", Problem(key with { VocabSize = 501 }));
        Assert.Contains("another corpus", Problem(key with { CorpusKey = [1, .. new byte[31]] }));
        Assert.Contains("holds split Val, expected Test", Problem(key with { Split = SplitName.Test }));

        var wide = key with { VocabSize = 100277 };
        TokenFile.Write(path, [100276, 0, 65536], wide);
        Assert.Equal([100276, 0, 65536], TokenFile.Read(path, wide));
        Assert.Contains("made by another tokenizer", Problem(key));

        File.WriteAllBytes(path, File.ReadAllBytes(path)[..100]);
        Assert.Equal($"{path}: truncated (100 bytes, shorter than the 128-byte header)", Problem(wide));
        File.WriteAllText(path, new string('x', 200));
        Assert.Contains("not a memopt token file", Problem(wide));
        File.Delete(path);
        Assert.Contains("not found", Problem(wide));
    }

    [Fact]
    public void Cache_of_another_tokenizer_is_not_used()
    {
        using var dir = new TempDirectory();
        var bpe = DataPipeline.Prepare(SmallData.Options(dir.Path));
        var other = DataPipeline.Prepare(SmallData.Options(dir.Path) with { VocabSize = 300 });
        Assert.False(other.Stats.CacheHit);
        Assert.Equal(300, other.Tokenizer.VocabSize);
        // a token file of the 300-token BPE put in place of the 380-token one is detected
        File.Copy(Path.Combine(bpe.CacheDirectory!, "bpe300.train.tok"), Path.Combine(bpe.CacheDirectory!, "bpe380.train.tok"), overwrite: true);
        var log = new List<string>();
        var again = DataPipeline.Prepare(SmallData.Options(dir.Path, log));
        Assert.False(again.Stats.CacheHit);
        Assert.Contains(log, line => line.Contains("bpe380.train.tok: made by another tokenizer"));
        AssertSame(bpe, again);
    }

    [Fact]
    public void Pretrained_tokenizer_splits_are_cached_too()
    {
        using var dir = new TempDirectory();
        var options = SmallData.Options(dir.Path) with { Tokenizer = TokenizerKind.Cl100k, CorpusWords = 8000 };
        var first = DataPipeline.Prepare(options);
        Assert.Equal(100277, first.Tokenizer.VocabSize);
        var second = DataPipeline.Prepare(options);
        Assert.True(second.Stats.CacheHit);
        AssertSame(first, second);
        Assert.Equal(first.Tokenizer.Decode(first.Val), second.Tokenizer.Decode(second.Val));
    }

    [Fact]
    public void Split_and_tokens_do_not_depend_on_the_cache()
    {
        using var dir = new TempDirectory();
        var cached = DataPipeline.Prepare(SmallData.Options(dir.Path));
        var uncached = DataPipeline.Prepare(SmallData.Options(dir.Path) with { CacheDir = null });
        AssertSame(cached, uncached);
        var otherSeed = DataPipeline.Prepare(SmallData.Options(dir.Path) with { CacheDir = null, Seed = 4 });
        Assert.NotEqual(cached.Val, otherSeed.Val);
    }

    [Fact]
    public void Real_files_are_prepared_and_cache_keyed_by_content()
    {
        using var dir = new TempDirectory();
        var docs = SmallData.Corpus(6000, seed: 8).Documents;
        string data = dir.File("in/corpus.jsonl", string.Join("\n", docs.Select(d => $"{{\"text\": \"{d}\"}}")) + "\n{broken\n");
        var options = SmallData.Options(dir.Sub("cache")) with { DataPath = data, VocabSize = 300, SeqLen = 8 };
        var first = DataPipeline.Prepare(options);
        Assert.Equal(1, first.Stats.BadJsonlLines);
        Assert.Null(first.Stats.EntropyPerWordNats);
        Assert.Null(first.Stats.Val.OptimalLossPerToken);
        Assert.Null(first.Stats.Val.BigramBaselineLossPerToken);
        Assert.Equal(docs.Count, first.Stats.Train.Documents + first.Stats.Val.Documents + first.Stats.Test.Documents);
        var second = DataPipeline.Prepare(options);
        Assert.True(second.Stats.CacheHit);
        Assert.Equal(1, second.Stats.BadJsonlLines);
        File.AppendAllText(data, "{\"text\": \"one more document.\"}\n");
        Assert.False(DataPipeline.Prepare(options).Stats.CacheHit);
    }

    [Fact]
    public void Too_small_corpus_is_reported_with_the_numbers()
    {
        using var dir = new TempDirectory();
        string data = dir.File("tiny.txt", "one.\n\ntwo.\n\nthree.\n\nfour.");
        var e = Assert.Throws<DataException>(() => DataPipeline.Prepare(SmallData.Options(dir.Path) with { DataPath = data, VocabSize = 256, SeqLen = 64 }));
        Assert.Matches(@"split is too small: \d+ documents, \d+ tokens, fewer than one sequence of 64\+1 tokens", e.Message);
    }

    [Fact]
    public void Bad_options_are_reported()
    {
        Assert.Contains("at least 256", Assert.Throws<DataException>(() => DataPipeline.Prepare(new DataOptions { VocabSize = 100, CacheDir = null })).Message);
        Assert.Contains("must be positive", Assert.Throws<DataException>(() => DataPipeline.Prepare(new DataOptions { SeqLen = 0, CacheDir = null })).Message);
        Assert.Contains("--corpus-words", Assert.Throws<DataException>(() => DataPipeline.Prepare(new DataOptions { CorpusWords = 0, CacheDir = null })).Message);
    }
}
