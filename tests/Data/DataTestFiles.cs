using System.Text;
using Memopt.Model.Data;

namespace Memopt.Tests.Data;

/// <summary>A temporary directory for one test, deleted afterwards.</summary>
public sealed class TempDirectory : IDisposable
{
    public string Path { get; } = System.IO.Path.Combine(System.IO.Path.GetTempPath(), "memopt-data-" + Guid.NewGuid().ToString("N"));

    public TempDirectory() => Directory.CreateDirectory(Path);

    public string File(string name, string content)
    {
        string path = System.IO.Path.Combine(Path, name);
        Directory.CreateDirectory(System.IO.Path.GetDirectoryName(path)!);
        System.IO.File.WriteAllText(path, content, new UTF8Encoding(false));
        return path;
    }

    public string Sub(string name) => System.IO.Path.Combine(Path, name);

    public void Dispose()
    {
        try { Directory.Delete(Path, recursive: true); } catch (IOException) { }
    }
}

/// <summary>Small shared inputs, so the Data tests stay fast: a 300-word language and a tokenizer trained on it.</summary>
public static class SmallData
{
    public const int LanguageWords = 300;
    public const int BpeVocab = 420;

    public static readonly Lazy<SyntheticLanguage> Language = new(() => new SyntheticLanguage(seed: 7, LanguageWords));

    public static Corpus Corpus(long words = 20_000, ulong seed = 7) =>
        SyntheticCorpus.Sample(Language.Value, new SyntheticCorpusOptions(seed, words, LanguageWords));

    /// <summary>Synthetic paragraphs plus multilingual text, so merges also cover multi-byte characters.</summary>
    public static readonly Lazy<BpeTokenizer> Bpe = new(() =>
    {
        var texts = Corpus().Documents.Select(d => d + Memopt.Model.Data.Corpus.DocumentSeparator).ToList();
        for (int i = 0; i < 20; i++)
        {
            texts.Add("Zażółć gęślą jaźń. Źdźbło trawy — łódź, żółw i ćma.\n\n");
            texts.Add("日本語のテキストと絵文字 😀🎉👍🏽 and ASCII: it's 42, isn't it?\n\n");
        }
        return BpeTrainer.Train(texts, BpeVocab);
    });

    public static DataOptions Options(string cacheDir, List<string>? log = null) => new()
    {
        CacheDir = cacheDir,
        CorpusWords = 30_000,
        SyntheticVocabulary = LanguageWords,
        VocabSize = 380,
        SeqLen = 16,
        Seed = 3,
        Log = log is null ? null : log.Add,
    };
}
