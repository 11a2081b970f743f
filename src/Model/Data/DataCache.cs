using System.Text.Json;

namespace Memopt.Model.Data;

/// <summary>What the cache remembers about a prepared corpus besides the tokens: the counts that the tokens alone do not give.</summary>
public sealed record CacheManifest(
    int Format, string CorpusKey, string Tokenizer, ulong Fingerprint, int VocabSize, string Source,
    int BadJsonlLines, string[] BadLineExamples, double? EntropyPerWordNats, CachedSplit[] Splits);

/// <param name="BigramBaselineNllNats">Held-out NLL of the <see cref="KneserNeyBigram"/> fitted on the train split's words (synthetic corpus, val and test only).</param>
public sealed record CachedSplit(int Documents, long Tokens, long? Words, double? TrueModelNllNats, double? BigramBaselineNllNats = null);

/// <summary>
/// Layout of one prepared corpus in the cache: <c>CACHE/KEY/</c> where KEY is the first 16 hex digits of the corpus key
/// (SHA-256 of the input files' names and contents or of the generator's parameters, plus the split seed and format), with
/// per tokenizer STEM ("bpe10000", "cl100k_base", "o200k_base"): STEM.{train,val,test}.tok (<see cref="TokenFile"/>),
/// STEM.manifest.json (counts; written last, so its presence means the rest is complete) and, for BPE, STEM.vocab and
/// STEM.merges (<see cref="BpeTokenizer"/>). Every file is written atomically.
/// </summary>
public sealed class DataCache(string directory, string stem)
{
    public const int Format = 2; // 2: manifests carry the bigram baseline

    public string Directory { get; } = directory;
    public string TokenPath(SplitName split) => Path.Combine(Directory, $"{stem}.{split.ToString().ToLowerInvariant()}.tok");
    public string ManifestPath => Path.Combine(Directory, $"{stem}.manifest.json");
    public string VocabPath => Path.Combine(Directory, $"{stem}.vocab");
    public string MergesPath => Path.Combine(Directory, $"{stem}.merges");

    private static readonly JsonSerializerOptions Json = new() { WriteIndented = true };

    public void WriteManifest(CacheManifest manifest) =>
        AtomicFile.WriteAllText(ManifestPath, JsonSerializer.Serialize(manifest, Json));

    /// <summary>The manifest if present and made for this corpus key and tokenizer; a <see cref="DataException"/> naming the file otherwise.</summary>
    public CacheManifest ReadManifest(string corpusKey, ITextTokenizer tokenizer)
    {
        if (!File.Exists(ManifestPath)) throw new DataException($"{ManifestPath}: not found");
        CacheManifest? manifest;
        try { manifest = JsonSerializer.Deserialize<CacheManifest>(File.ReadAllText(ManifestPath), Json); }
        catch (JsonException e) { throw new DataException($"{ManifestPath}: corrupt ({e.Message})", e); }
        if (manifest is null || manifest.Splits is null || manifest.Splits.Length != 3) throw new DataException($"{ManifestPath}: corrupt (incomplete)");
        if (manifest.Format != Format || manifest.CorpusKey != corpusKey)
            throw new DataException($"{ManifestPath}: made for another corpus or format");
        if (manifest.Fingerprint != tokenizer.Fingerprint || manifest.VocabSize != tokenizer.VocabSize)
            throw new DataException($"{ManifestPath}: made by another tokenizer ({manifest.Tokenizer})");
        return manifest;
    }
}
